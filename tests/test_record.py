"""What the record holds beyond the recipe, and how commands and verdicts use it.

Hub snapshot commits, every installed package, token counts of prompts, the
safety checker's flags, the warnings a batch raised, torch's numeric switches.
Jobs here are a few images of builtin:tiny (or a copy of it) at 64x64 with 1-2
steps, run with one CPU thread.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Cli

from reprogrid.scheduler.checkpoint_refs import BUILTIN_DIR
from reprogrid.worker.store import read_png

OLD_COMMIT = "a" * 40
NEW_COMMIT = "b" * 40
REPO = "someone/tiny-sd"
SMALL_GRID = ["--prompt", "a red fox", "--seeds", "0-1", "--steps", "2"]
SMALL_GRID += ["--width", "64", "--height", "64", "--batch-size", "2"]


def hub_repo(cache: Path) -> Path:
    return cache / f"models--{REPO.replace('/', '--')}"


def add_snapshot(cache: Path, commit: str) -> Path:
    """A snapshot of builtin:tiny under ``commit``, and refs/main pointing at it."""
    repo = hub_repo(cache)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(BUILTIN_DIR / "tiny", snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache that huggingface_hub reads (it reads HF_HUB_CACHE at import)."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # for fresh processes
    monkeypatch.setenv("REPROGRID_HASH_CACHE", str(tmp_path / "hashes.json"))
    return cache


def fresh_process(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:
    """``reprogrid`` in a new Python process (no pipeline loaded yet), same database and store."""
    argv = [sys.executable, "-m", "reprogrid", "--db", cli.db_url, "--store", str(cli.store)]
    return subprocess.run(
        [*argv, *args], cwd=cli.cwd, capture_output=True, text=True, timeout=300, check=False
    )


def move_main_to_a_changed_snapshot(cache: Path) -> None:
    """What ``hf download`` does when the repo got a new commit: a new snapshot, refs/main moved."""
    snapshot = add_snapshot(cache, NEW_COMMIT)
    config_path = snapshot / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["beta_end"] = config["beta_end"] * 2
    config_path.write_text(json.dumps(config))


def test_a_hub_checkpoint_records_its_snapshot_commit(cli: Cli, hub_cache: Path):
    add_snapshot(hub_cache, OLD_COMMIT)
    assert cli("run", *SMALL_GRID, "--model", REPO).exit_code == 0
    shown = json.loads(cli("show", "1", "--format", "json").output)
    assert shown["recipe"]["revision"] == OLD_COMMIT


def test_verify_after_refs_main_moved_replays_the_recorded_snapshot(cli: Cli, hub_cache: Path):
    add_snapshot(hub_cache, OLD_COMMIT)
    assert cli("run", *SMALL_GRID, "--model", REPO).exit_code == 0
    move_main_to_a_changed_snapshot(hub_cache)
    result = fresh_process(cli, "verify", "1", "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)
    assert [row["verdict"] for row in rows] == ["identical", "identical"]
    assert {row["details"]["revision"] for row in rows} == {OLD_COMMIT}
    assert all(row["details"]["checkpoint_changes"] == {} for row in rows)
    said = cli("regenerate", "1").output
    assert f"checkpoint: revision {OLD_COMMIT} as recorded, loaded offline" in said


def test_verify_is_an_error_naming_the_commit_once_its_snapshot_is_deleted(
    cli: Cli, hub_cache: Path
):
    add_snapshot(hub_cache, OLD_COMMIT)
    assert cli("run", *SMALL_GRID, "--model", REPO).exit_code == 0
    move_main_to_a_changed_snapshot(hub_cache)
    shutil.rmtree(hub_repo(hub_cache) / "snapshots" / OLD_COMMIT)
    result = cli("verify", "1", "--format", "json")
    assert result.exit_code == 1
    rows = json.loads(result.output)
    assert [row["verdict"] for row in rows] == ["error", "error"]
    assert all(OLD_COMMIT in row["details"]["error"] for row in rows)


def test_differences_name_each_changed_package_with_both_versions():
    from reprogrid.worker.environment import differences

    before = {"threads": 1, "packages": {"ftfy": "6.1.1", "numpy": "2.1.0", "torch": "2.13.0"}}
    after = {
        "threads": 1,
        "packages": {"beautifulsoup4": "4.12", "numpy": "2.1.0", "torch": "2.14"},
    }
    assert differences(before, after) == {
        "packages.beautifulsoup4": [None, "4.12"],
        "packages.ftfy": ["6.1.1", None],
        "packages.torch": ["2.13.0", "2.14"],
    }


def dummy_distribution(folder: Path, name: str, version: str) -> Path:
    """An installed distribution with no code: what ``pip install`` leaves in site-packages."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


def test_differences_rank_the_numeric_stack_before_unrelated_packages():
    from reprogrid.worker.environment import ranked

    found = {
        "hostname": ["a", "b"],
        "torch": ["2.12.0", "2.13.0"],
        "packages.jupyter": [None, "1.1"],
        "packages.diffusers": ["0.41.0", "0.42.1"],
        "packages.nvidia-cudnn-cu12": ["9.1", "9.5"],
        "switches": [{"tf32": False}, {"tf32": True}],
    }
    found["packages.ftfy"] = ["6.1", "6.3"]
    first, imported, rest = ranked(found, imported=frozenset({"ftfy", "torch"}))
    assert set(first) == {"torch", "packages.diffusers", "packages.nvidia-cudnn-cu12", "switches"}
    assert set(imported) == {"packages.ftfy"}
    assert set(rest) == {"hostname", "packages.jupyter"}


def test_the_imported_packages_are_those_whose_modules_are_loaded():
    from reprogrid.worker.environment import imported_packages

    found = imported_packages()
    assert {"sqlalchemy", "pytest"} <= found and "jupyter" not in found


def test_a_package_installed_since_the_run_is_named_in_the_verdict(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    assert cli("run", *SMALL_GRID).exit_code == 0
    extra = dummy_distribution(tmp_path / "site", "Caption_Cleaner", "1.0")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(extra), os.environ.get("PYTHONPATH", "")])
    )
    result = fresh_process(cli, "regenerate", "1")
    assert result.returncode == 0, result.stderr
    # Nothing imported it: counted, not listed, so a real cause would stand out.
    assert "environment: differs from the original run in only 1 other package" in result.stdout
    result = fresh_process(cli, "regenerate", "1", "--all")
    assert (
        "environment: differs from the original run in packages.caption-cleaner (absent -> 1.0)"
        in result.stdout
    )


def test_an_environment_prints_as_a_requirements_file_pinning_every_package(cli: Cli):
    from importlib.metadata import version

    from packaging.requirements import Requirement

    assert cli("run", *SMALL_GRID).exit_code == 0
    result = cli("environment", "1", "--requirements")
    assert result.exit_code == 0, result.output
    lines = [line.split("  #")[0] for line in result.output.splitlines()]
    requirements = [Requirement(line) for line in lines if not line.startswith(("#", "--"))]
    pinned = {r.name: str(r.specifier) for r in requirements}
    assert pinned["diffusers"] == f"=={version('diffusers')}"
    assert pinned["tokenizers"] == f"=={version('tokenizers')}"
    assert len(pinned) > 20
    # reprogrid itself is installed from its folder (pip install -e .), not from an index
    (itself,) = [r for r in requirements if r.name == "reprogrid"]
    assert itself.url.startswith("file://")


LONG_PROMPT = "a red fox sitting in the snow at dawn, oil painting"  # over builtin:tiny's 32


def test_run_warns_of_cut_prompts_and_query_finds_their_cells(cli: Cli):
    args = ["--prompt", "a fox", "--prompt", LONG_PROMPT, "--seeds", "0-1", "--steps", "1"]
    result = cli("run", *args, "--width", "64", "--height", "64", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: 1 prompt will be cut by the text encoder: prompt")
    assert "> 32 in tokenizer/" in warnings[0]
    cut = json.loads(cli("query", "--truncated", "--format", "json").output)
    assert [(row["prompt"], row["seed"]) for row in cut] == [(LONG_PROMPT, 0), (LONG_PROMPT, 1)]
    whole = json.loads(cli("query", "--not-truncated", "--format", "json").output)
    assert {row["prompt"] for row in whole} == {"a fox"}
    shown = json.loads(cli("show", str(cut[0]["image_id"]), "--format", "json").output)
    assert shown["truncated"] is True
    assert shown["tokens"]["prompt"]["tokens"]["tokenizer"] > 32
    assert shown["tokens"]["prompt"]["limits"] == {"tokenizer": 32}


def test_a_model_axis_counts_every_checkpoints_tokenizer(cli: Cli, tmp_path: Path):
    shorter = tmp_path / "tiny-short-tokenizer"
    shutil.copytree(BUILTIN_DIR / "tiny", shorter)
    config_path = shorter / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config_path.write_text(json.dumps(dict(config, model_max_length=16)), encoding="utf-8")
    medium = "a red fox in the snow at dawn"  # over 16 tokens, within 32
    spec = tmp_path / "axis.toml"
    spec.write_text(
        f'prompts = ["{medium}"]\nwidth = 64\nheight = 64\n'
        f'[axes]\nmodel = ["builtin:tiny", "{shorter}"]\n',
        encoding="utf-8",
    )
    result = cli("submit", str(spec))
    assert result.exit_code == 0, result.output
    assert "> 16 in tokenizer/" in result.output
    cut = json.loads(cli("query", "--truncated", "--format", "json").output)
    assert len(cut) == 2  # the cell of each checkpoint: no cut is missed


def test_each_distinct_prompt_is_tokenized_once():
    from reprogrid.scheduler.tokenization import tokenize_texts

    texts = [("prompt", "a fox")] * 1000 + [("prompt", LONG_PROMPT), ("negative_prompt", "a fox")]
    report = tokenize_texts(BUILTIN_DIR / "tiny", texts)
    assert [(c.role, c.text, c.truncated) for c in report.counts] == [
        ("prompt", "a fox", False),
        ("prompt", LONG_PROMPT, True),
        ("negative_prompt", "a fox", False),
    ]


def test_tokenizing_does_not_import_torch():
    code = (
        "import sys; from reprogrid.scheduler.tokenization import tokenize_texts;"
        "from reprogrid.scheduler.checkpoint_refs import BUILTIN_DIR;"
        "tokenize_texts(BUILTIN_DIR / 'tiny', [('prompt', 'a fox')]);"
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_submit_warns_of_cut_negative_prompts_in_one_line(cli: Cli):
    result = cli("submit", "--prompt", "a fox", "--negative-prompt", LONG_PROMPT)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: 1 negative prompt will be cut by the text encoder")


@pytest.fixture(scope="session")
def flagging_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """builtin:tiny with a random-weight safety checker whose thresholds flag every image.

    Built as diffusers' own tests build one: StableDiffusionSafetyChecker from a
    tiny CLIPConfig, a CLIPImageProcessor, both saved with save_pretrained.
    """
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    folder = tmp_path_factory.mktemp("flagging") / "tiny-checked"
    shutil.copytree(BUILTIN_DIR / "tiny", folder)
    tiny = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4}
    tiny["num_hidden_layers"] = 1
    config = CLIPConfig(
        text_config=tiny,
        vision_config={**tiny, "image_size": 32, "patch_size": 4},
        projection_dim=32,
    )
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():  # a cosine distance is above -1: every concept scores above its threshold
        checker.concept_embeds_weights.fill_(-2.0)
    checker.save_pretrained(folder / "safety_checker")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32).save_pretrained(
        folder / "feature_extractor"
    )
    index = json.loads((folder / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    index["requires_safety_checker"] = True
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def test_images_the_safety_checker_flags_are_recorded_as_flagged(
    cli: Cli, flagging_checkpoint: Path
):
    assert cli("run", *SMALL_GRID, "--model", str(flagging_checkpoint)).exit_code == 0
    flagged = json.loads(cli("query", "--nsfw", "--format", "json").output)
    assert [row["image_id"] for row in flagged] == [1, 2]
    shown = json.loads(cli("show", "1", "--format", "json").output)
    assert shown["nsfw"] is True
    assert shown["recipe"]["safety_checker"] is True
    assert "nsfw: True" in cli("show", "1").output
    pixels, _ = read_png(Path(shown["path"]))
    assert pixels.max() == 0  # what diffusers returns for a flagged image: black


def test_a_spec_can_turn_the_safety_checker_off_and_the_recipe_says_so(
    cli: Cli, flagging_checkpoint: Path
):
    run = cli("run", *SMALL_GRID, "--model", str(flagging_checkpoint), "--no-safety-checker")
    assert run.exit_code == 0, run.output
    shown = json.loads(cli("show", "1", "--format", "json").output)
    assert (shown["nsfw"], shown["recipe"]["safety_checker"]) == (None, False)
    assert json.loads(cli("query", "--nsfw", "--format", "json").output) == []


def test_the_report_and_the_contact_sheet_show_flagged_images(
    cli: Cli, flagging_checkpoint: Path, tmp_path: Path
):
    from PIL import Image as PILImage

    assert cli("run", *SMALL_GRID, "--model", str(flagging_checkpoint)).exit_code == 0
    assert cli("report", "1", "--output", str(tmp_path / "report")).exit_code == 0
    index = (tmp_path / "report" / "index.html").read_text()
    tiles = (tmp_path / "report" / "data" / "tiles-000.js").read_text()
    assert tiles.count('"nsfw":true') == 2  # the page marks these tiles nsfw
    assert "<th>flagged by the safety checker</th><td>2 images (blacked out)</td>" in index
    exported = cli("export", "1", "--format", "jsonl").output.splitlines()
    assert [json.loads(row)["nsfw"] for row in exported] == [True, True]
    sheet = cli("grid", "1", "--output", str(tmp_path / "sheet.png"))
    assert sheet.exit_code == 0, sheet.output
    with PILImage.open(tmp_path / "sheet.png") as drawn:
        assert (200, 40, 40) in {color for _, color in drawn.convert("RGB").getcolors(1 << 16)}


def test_warnings_raised_while_a_batch_computes_are_kept_and_shown(cli: Cli, tmp_path: Path):
    # diffusers' StableDiffusionPipeline logs a warning for every prompt it truncates
    args = ["--prompt", LONG_PROMPT, "--seeds", "0", "--steps", "1", "--width", "64"]
    assert cli("run", *args, "--height", "64").exit_code == 0
    shown = json.loads(cli("show", "1", "--format", "json").output)
    diffusers = [w for w in shown["batch_warnings"] if w["source"] == "diffusers"]
    assert [w["category"] for w in diffusers] == ["WARNING"]
    assert "truncated because CLIP can only handle sequences up to 32" in diffusers[0]["message"]
    assert "- source: diffusers" in cli("show", "1").output
    assert cli("report", "1", "--output", str(tmp_path / "report")).exit_code == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "truncated because CLIP can only handle" in page
    assert f'<h2 id="warnings">Warnings ({len(shown["batch_warnings"])})</h2>' in page


def test_numeric_switches_and_variables_are_part_of_the_environment(monkeypatch):
    from reprogrid.worker.determinism import configured
    from reprogrid.worker.environment import describe_environment, differences

    with configured(1, False) as determinism:
        before = describe_environment("cpu", "float32", determinism)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    with configured(1, True) as determinism:
        after = describe_environment("cpu", "float32", determinism)
    changed = differences(before, after)
    assert changed["variables"][1] == {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    assert changed["switches"][1]["deterministic_algorithms"] is True
    assert before["cpu_capability"]


def test_a_tokenizer_class_that_transformers_lacks_is_a_one_line_error_naming_the_model(
    cli: Cli, tmp_path: Path
):
    model = tmp_path / "broken-tokenizer"
    shutil.copytree(BUILTIN_DIR / "tiny", model)
    (model / "tokenizer" / "tokenizer.json").unlink()  # read through transformers' class
    config_path = model / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "NoSuchTokenizer"
    config_path.write_text(json.dumps(config))
    result = cli("run", "--model", str(model), "--prompt", "a fox")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: model: tokenizer/: transformers has no tokenizer class 'NoSuchTokenizer'"
    ]


def test_a_damaged_tokenizer_json_is_a_one_line_error_naming_the_model(cli: Cli, tmp_path: Path):
    model = tmp_path / "half-downloaded"
    shutil.copytree(BUILTIN_DIR / "tiny", model)
    tokenizer_json = model / "tokenizer" / "tokenizer.json"
    tokenizer_json.write_bytes(tokenizer_json.read_bytes()[:500])
    result = cli("run", "--model", str(model), "--prompt", "a fox")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: model: tokenizer/: tokenizer.json cannot load ("), line


def test_a_max_sequence_length_below_the_tokenizers_own_limit_is_the_limit():
    from reprogrid.scheduler.tokenization import tokenize_texts

    report = tokenize_texts(BUILTIN_DIR / "tiny", [("prompt", "a red fox")], max_sequence_length=4)
    assert report.limits == {"tokenizer": 4}
    assert report.counts[0].cut_by == ("tokenizer",)
    roomy = tokenize_texts(BUILTIN_DIR / "tiny", [("prompt", "a red fox")], max_sequence_length=300)
    assert roomy.limits == {"tokenizer": 32}
