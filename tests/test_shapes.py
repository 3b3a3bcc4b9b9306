"""builtin:shapes draws what its prompt says, measured (reprogrid.review.shapes), not looked at.

The images are made the way a job makes them (validated spec, expanded
recipes, the worker's generate_batch on the checkpoint loaded through
from_pretrained), at 64x64 with 10 Euler steps, two seeds per subject.
"""

import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Cli
from PIL import Image

from reprogrid.review.shapes import (
    BACKGROUND_COLOURS,
    REFINE_APPEND,
    REFINE_SUBJECTS,
    SHAPE_COLOURS,
    SHAPES,
    Measured,
    caption,
    centre_distance,
    measure,
)
from reprogrid.scheduler.grid import expand
from reprogrid.scheduler.spec import validate_spec
from reprogrid.worker.checkpoints import load_checkpoint
from reprogrid.worker.generate import generate_batch

ROOT = Path(__file__).resolve().parent.parent
SEEDS = "0-1"
SUBJECTS = [(colour, shape) for colour in SHAPE_COLOURS for shape in SHAPES]


@pytest.fixture(scope="module")
def shapes():
    torch.set_num_threads(1)
    return load_checkpoint("builtin:shapes", None, "float32", "cpu")


def draw(loaded, prompts: list[str], seeds: str, guidance: float) -> list[Image.Image]:
    raw = {
        "model": "builtin:shapes", "prompts": prompts, "seeds": seeds, "steps": 10,
        "guidance_scale": guidance, "batch_size": 8,
    }  # fmt: skip
    recipes = [json.loads(cell.recipe) for cell in expand(validate_spec(raw, max_cells=1000))]
    pixels = np.concatenate(
        [generate_batch(loaded, recipes[i : i + 8], "cpu") for i in range(0, len(recipes), 8)]
    )
    return [Image.fromarray(p) for p in pixels]


def measured_subjects(loaded, guidance: float) -> list[tuple[tuple[str, str], Measured]]:
    """(asked colour and shape, measured) for every colour x shape, two seeds each."""
    prompts = [caption(colour, shape) for colour, shape in SUBJECTS]
    images = draw(loaded, prompts, SEEDS, guidance)
    asked = [subject for subject in SUBJECTS for _ in range(2)]
    return list(zip(asked, map(measure, images), strict=True))


@pytest.fixture(scope="module")
def guided(shapes):
    return measured_subjects(shapes, 4.0)


@pytest.fixture(scope="module")
def unguided(shapes):
    return measured_subjects(shapes, 1.0)


def right_colours(results, colour: str) -> float:
    found = [m.colour == colour for (c, _), m in results if c == colour]
    return sum(found) / len(found)


def right_shapes(results, shape: str) -> float:
    found = [m.shape == shape for (_, s), m in results if s == shape]
    return sum(found) / len(found)


def adherence(results) -> float:
    return float(np.mean([m.colour == c and m.shape == s for (c, s), m in results]))


# Measured with the shipped weights (guidance 4.0, 2 seeds x 4 shapes per colour or 6 colours per
# shape): every colour word is followed; squares mostly come out with round corners, which the
# measure calls circles (3 of 12 right). Strict, so a better checkpoint that passes makes the test
# fail until the mark goes.
UNDERTRAINED_COLOURS: set[str] = set()
UNDERTRAINED_SHAPES = {"square"}
# Trained with a last phase of offset noise, the checkpoint follows every background word.
UNFOLLOWED_BACKGROUNDS: set[str] = set()


def known_weak(word: str, weak: set[str], reason: str):
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if word in weak else []
    return pytest.param(word, marks=marks)


@pytest.mark.parametrize(
    "colour",
    [known_weak(c, UNDERTRAINED_COLOURS, "measured: under 6 of 8 right") for c in SHAPE_COLOURS],
)
def test_each_colour_word_gives_shapes_of_that_colour(guided, colour):
    assert right_colours(guided, colour) >= 0.75


def test_most_images_have_the_prompts_colour(guided):
    assert np.mean([m.colour == c for (c, _), m in guided]) >= 0.65


@pytest.mark.parametrize(
    "shape", [known_weak(s, UNDERTRAINED_SHAPES, "measured: 3 of 12 right") for s in SHAPES]
)
def test_each_shape_word_gives_that_shape_for_most_seeds(guided, shape):
    assert right_shapes(guided, shape) > 0.5


def test_higher_guidance_follows_the_prompt_better(guided, unguided):
    assert adherence(guided) > adherence(unguided) + 0.05


def moved_or_recoloured(a: Measured, b: Measured) -> bool:
    """The shape is elsewhere (over 3 pixels away) or the background changed."""
    assert a.centre is not None and b.centre is not None
    return centre_distance(a, b) > 3 or a.background != b.background


def test_two_seeds_give_two_different_pictures_of_the_same_subject(guided):
    pairs = [(guided[i], guided[i + 1]) for i in range(0, len(guided), 2)]
    both_right = [
        (a, b) for (subject, a), (_, b) in pairs
        if (a.colour, a.shape) == (b.colour, b.shape) == subject
    ]  # fmt: skip
    assert len(both_right) >= len(pairs) / 3
    assert np.mean([moved_or_recoloured(a, b) for a, b in both_right]) >= 0.75


def background_subjects(background: str) -> list[tuple[str, str]]:
    """Four subjects to draw on ``background``: each shape, in colours other than it."""
    colours = [colour for colour in SHAPE_COLOURS if colour != background]
    start = len(background)  # so that each background gets other colours
    return [(colours[(start + i) % len(colours)], s) for i, s in enumerate(SHAPES)]


@pytest.fixture(scope="module")
def on_backgrounds(shapes) -> dict[str, list[Measured]]:
    """Each background word: its four subjects on it, two seeds each, measured."""
    prompts = [caption(c, s, b) for b in BACKGROUND_COLOURS for c, s in background_subjects(b)]
    found = list(map(measure, draw(shapes, prompts, SEEDS, 4.0)))
    per_word = 2 * len(SHAPES)
    return {b: found[i * per_word : (i + 1) * per_word] for i, b in enumerate(BACKGROUND_COLOURS)}


@pytest.mark.parametrize(
    "background",
    [known_weak(b, UNFOLLOWED_BACKGROUNDS, "measured: under 6 of 8") for b in BACKGROUND_COLOURS],
)
def test_each_background_word_gives_that_background(on_backgrounds, background):
    assert np.mean([m.background == background for m in on_backgrounds[background]]) >= 0.75


def test_each_vocabulary_word_is_one_token(shapes):
    tokenizer = shapes.pipeline.tokenizer
    for word in [*SHAPE_COLOURS, *SHAPES, "background", "gray", "white", "black"]:
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word


def test_the_readme_first_command_runs_its_example_on_builtin_shapes(cli, tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    spec = re.search(r"reprogrid run (examples/\S+\.toml)", first)
    assert spec is not None and "reprogrid grid 1 -o sheet.png" in first
    assert tomllib.loads((ROOT / spec[1]).read_text(encoding="utf-8"))["model"] == "builtin:shapes"
    result = cli("run", str(ROOT / spec[1]), "--seeds", "0", "--json")
    assert json.loads(result.stdout)["done"] == 8
    sheets = cli("grid", "1", "-o", str(tmp_path / "sheet.png")).output.split()
    assert [Path(s).name for s in sheets] == [
        "sheet-guidance_scale=1.0.png", "sheet-guidance_scale=4.0.png",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def refined(tmp_path_factory) -> list[tuple[Measured, Measured]]:
    """The README's refine example on 4 subjects x 4 seeds: (image, refined child), measured.

    Module-scoped, so both refine tests read one run of the 32 images.
    """
    folder = tmp_path_factory.mktemp("refine")
    cli = Cli(f"sqlite:///{folder / 'reprogrid.db'}", folder / "store", folder)
    prompts = [flag for subject in REFINE_SUBJECTS for flag in ("--prompt", subject)]
    cli("run", "--model", "builtin:shapes", *prompts, "--seeds", "0-3", "--steps", "12",
        "--guidance-scale", "4.0")  # fmt: skip
    parents = json.loads(cli("query", "--format", "json").stdout)
    for row in parents:
        cli("refine", str(row["image_id"]), "--append", REFINE_APPEND, "--run")
    rows = json.loads(cli("query", "--format", "json").stdout)
    children = {(r["prompt"], r["seed"]): r["path"] for r in rows}
    return [
        (
            measure(Image.open(row["path"])),
            measure(Image.open(children[row["prompt"] + REFINE_APPEND, row["seed"]])),
        )
        for row in parents
    ]


def test_refining_to_a_green_background_repaints_it_and_keeps_most_shapes_kind(refined):
    assert [child.background for _, child in refined] == ["green"] * len(refined)
    assert np.mean([parent.shape == child.shape for parent, child in refined]) >= 0.75


def test_refining_to_a_green_background_keeps_most_shapes_within_4_pixels(refined):
    assert np.mean([centre_distance(a, b) <= 4 for a, b in refined]) > 0.5
