"""The ``parameters`` PNG chunk as AUTOMATIC1111 writes it, read back by a third-party reader."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

import reprogrid
from reprogrid.a1111 import a1111_sampler, parse_a1111_sampler
from reprogrid.worker.infotext import quote

BUILTIN_TINY = Path(reprogrid.__file__).parent / "builtin" / "tiny"
PROMPT = 'a fox, "sly": at night'
NEGATIVE = "blurry, text: watermark"
# A1111's own reading of the settings line (modules/infotext_utils.py re_param and unquote).
A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def a1111_fields(line: str) -> dict[str, str]:
    fields = {}
    for key, value in A1111_PARAM.findall(line):
        fields[key] = json.loads(value) if value.startswith('"') else value
    return fields


@pytest.mark.parametrize(
    ("sampler", "options", "expected"),
    [
        ("EulerAncestralDiscreteScheduler", {}, ("Euler a", None)),
        ("EulerDiscreteScheduler", {"use_karras_sigmas": True}, ("Euler", "Karras")),
        ("DPMSolverMultistepScheduler", {}, ("DPM++ 2M", None)),
        (
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
            ("DPM++ 2M SDE", "Karras"),
        ),
        (
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
            ("DPM++ 3M SDE", None),
        ),
        (
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver"},
            ("DPMSolverMultistepScheduler", None),
        ),
        ("PNDMScheduler", {}, ("PLMS", None)),
        ("UniPCMultistepScheduler", {"use_exponential_sigmas": True}, ("UniPC", "Exponential")),
        ("TCDScheduler", {}, ("TCDScheduler", None)),
    ],
)
def test_samplers_get_their_a1111_names_and_schedule_types(sampler, options, expected):
    assert a1111_sampler(sampler, options) == expected


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("builtin:tiny", '"builtin:tiny"'),
        ("a, b", '"a, b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("plain value", "plain value"),
        ("héron", "héron"),
    ],
)
def test_values_that_would_break_the_line_are_quoted_as_json(value, written):
    assert quote(value) == written


@pytest.fixture(scope="module")
def karras_job(tmp_path_factory) -> tuple[reprogrid.Reprogrid, list[dict]]:
    """A job on a copy of the tiny checkpoint whose sampler config asks for Karras sigmas."""
    root = tmp_path_factory.mktemp("infotext")
    model = root / "tiny karras"
    shutil.copytree(BUILTIN_TINY, model)
    config_file = model / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text()) | {"use_karras_sigmas": True}
    config_file.write_text(json.dumps(config))
    grid = reprogrid.connect(db=root / "r.db", store=root / "store", threads=1)
    spec = {
        "model": str(model),
        "sampler": "EulerDiscreteScheduler",
        "prompts": [PROMPT, "a plain owl"],
        "negative_prompt": NEGATIVE,
        "seeds": "0,18446744073709551615",
        "steps": 2,
        "guidance_scale": 6.5,
        "width": 64,
        "height": 64,
    }
    job = grid.run(spec)
    assert job.status == "done"
    yield grid, list(grid.images(job.job_id))
    grid.close()


def test_sd_parsers_reads_every_field_of_every_png_as_recorded(karras_job):
    from sd_parsers import ParserManager

    _, rows = karras_job
    parser = ParserManager()
    for row in rows:
        info = parser.parse(row["path"])
        (sampler,) = info.samplers
        assert sampler.name == "Euler"
        assert sampler.parameters == {
            "scheduler": "Karras", "cfg_scale": "6.5", "seed": str(row["seed"]), "steps": "2",
        }  # fmt: skip
        assert sampler.model.name == row["model"]
        assert sampler.model.hash == row["checkpoint_sha256"][:10]
        assert [p.value for p in sampler.prompts] == [row["prompt"]]
        assert [p.value for p in sampler.negative_prompts] == [NEGATIVE]
        assert info.metadata["Size"] == "64x64"
        assert info.metadata["Version"] == f"reprogrid {reprogrid.__version__}"


def test_the_json_chunk_holds_the_call_with_the_sampler_as_built(karras_job):
    grid, rows = karras_job
    metadata = json.loads(Image.open(rows[0]["path"]).text["reprogrid"])
    sampler = metadata["call"]["sampler"]
    assert sampler["class"] == "EulerDiscreteScheduler"
    assert sampler["config"]["use_karras_sigmas"] is True
    assert metadata["call"]["arguments"]["guidance_scale"] == 6.5
    recorded = grid.record(rows[0]["image_id"])["call"]
    assert recorded["sampler"] == sampler  # one source: the record and the PNG agree


def test_a1111_and_sd_parsers_read_back_a_builtin_checkpoint_by_its_name(tmp_path):
    from sd_parsers import ParserManager

    grid = reprogrid.connect(db=tmp_path / "r.db", store=tmp_path / "store", threads=1)
    spec = {"prompts": ["an owl"], "seeds": "3", "steps": 2, "width": 64, "height": 64}
    (row,) = grid.images(grid.run(spec).job_id)
    prompt, settings = Image.open(row["path"]).text["parameters"].split("\n")
    assert prompt == "an owl"  # no "Negative prompt:" line when there is none, as A1111 writes
    fields = a1111_fields(settings)
    assert fields["Model"] == "tiny" and fields["Sampler"] == "PLMS"
    assert (fields["Seed"], fields["Steps"], fields["CFG scale"]) == ("3", "2", "7.5")
    assert ParserManager().parse(row["path"]).samplers[0].model.name == "tiny"
    grid.close()


DPM = "DPMSolverMultistepScheduler"
DPM_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Euler a", ("EulerAncestralDiscreteScheduler", {})),
        ("DPM++ 2M", (DPM, DPM_2M)),
        ("DPM++ 2M Karras", (DPM, DPM_2M | {"schedule_type": "karras"})),
        (
            "DPM++ 3M SDE Exponential",
            (DPM, {"algorithm_type": "sde-dpmsolver++", "solver_order": 3,
                   "schedule_type": "exponential"}),
        ),
        ("PLMS", ("PNDMScheduler", {})),
        ("EulerDiscreteScheduler", None),
    ],
)  # fmt: skip
def test_a1111_sampler_names_read_back_as_the_diffusers_sampler_and_options(name, expected):
    assert parse_a1111_sampler(name) == expected


def test_an_a1111_sampler_name_runs_what_a1111_means_and_is_written_back_the_same(tmp_path):
    grid = reprogrid.connect(db=tmp_path / "r.db", store=tmp_path / "store", threads=1)
    spec = {"prompts": ["an owl"], "steps": 2, "width": 64, "height": 64}
    (row,) = grid.images(grid.run(spec | {"sampler": "DPM++ 2M Karras"}).job_id)
    recipe = grid.record(row["image_id"])["recipe"]
    assert recipe["sampler"] == "DPMSolverMultistepScheduler"
    assert recipe["schedule_type"] == "karras"
    fields = a1111_fields(Image.open(row["path"]).text["parameters"].split("\n")[-1])
    assert (fields["Sampler"], fields["Schedule type"]) == ("DPM++ 2M", "Karras")
    grid.close()


def a1111_prompts(infotext: str) -> tuple[str, str]:
    """Prompt and negative prompt as A1111 reads them (parse_generation_parameters)."""
    *lines, last = infotext.strip().split("\n")
    if len(A1111_PARAM.findall(last)) < 3:
        lines.append(last)
    prompt, negative, negative_started = "", "", False
    for line in (line.strip() for line in lines):
        if line.startswith("Negative prompt:"):
            negative_started, line = True, line[16:].strip()
        if negative_started:
            negative += ("\n" if negative else "") + line
        else:
            prompt += ("\n" if prompt else "") + line
    return prompt, negative


def test_a_prompt_of_several_lines_is_written_as_a1111_writes_it_and_reads_back(tmp_path):
    grid = reprogrid.connect(db=tmp_path / "r.db", store=tmp_path / "store", threads=1)
    spec = {"prompts": ["an owl\nat night"], "negative_prompt": "blurry\nSteps: 1", "steps": 2}
    (row,) = grid.images(grid.run(spec | {"width": 64, "height": 64}).job_id)
    infotext = Image.open(row["path"]).text["parameters"]
    assert a1111_prompts(infotext) == ("an owl\nat night", "blurry\nSteps: 1")
    assert a1111_fields(infotext.split("\n")[-1])["Steps"] == "2"
    grid.close()
