"""Every pipeline family, run the way a user would, on tiny random checkpoints built here.

Checkpoints come from tests/tiny_families.py (session fixture ``tiny_checkpoint``):
SD 1.x (epsilon), SD 2.x (v-prediction), SDXL, SD3, Flux with and without a
guidance embedding, PixArt-alpha and -sigma, each 32x32 by default; jobs run
2 steps with one CPU thread.
"""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import Cli

from reprogrid import families
from reprogrid.adapters import file_sha256
from reprogrid.scheduler.grid import expand
from reprogrid.scheduler.spec import SpecError, validate_spec
from reprogrid.worker.checkpoints import load_checkpoint
from reprogrid.worker.generate import generate_batch
from reprogrid.worker.pipeline_call import NOT_PIXEL_ARGUMENTS
from reprogrid.worker.store import pixel_sha256

# (checkpoint, family key, default size, a second sampler that fits it, if one does)
FAMILY_CASES = [
    ("sd", "sd", 32, "DPMSolverMultistepScheduler"),
    ("sd2-v", "sd", 32, "DDIMScheduler"),
    ("sdxl", "sdxl", 32, "EulerDiscreteScheduler"),
    ("sd3", "sd3", 32, "UniPCMultistepScheduler"),
    ("flux", "flux", 256, "UniPCMultistepScheduler"),
    ("flux-schnell", "flux", 256, "UniPCMultistepScheduler"),
    ("pixart", "pixart", 32, "EulerDiscreteScheduler"),
    ("pixart-sigma", "pixart", 32, "DDIMScheduler"),
    ("sd35", "sd3", 32, "DPMSolverMultistepScheduler"),
    ("qwen-image", "qwen-image", 128, "UniPCMultistepScheduler"),
    ("flux2", "flux2", 128, "DPMSolverMultistepScheduler"),
    ("flux2-klein", "flux2-klein", 128, "UniPCMultistepScheduler"),
    ("z-image", "z-image", 1024, None),  # only FlowMatch* samplers take its list of sigmas
    ("chroma", "chroma", 128, "UniPCMultistepScheduler"),
    ("auraflow", "auraflow", 1024, "FlowMatchHeunDiscreteScheduler"),
    ("sana", "sana", 1024, "UniPCMultistepScheduler"),
    ("hunyuan-dit", "hunyuan-dit", 32, "DDIMScheduler"),
    ("cogview4", "cogview4", 32, None),  # only FlowMatch* samplers take its timesteps
    ("lumina2", "lumina2", 32, "UniPCMultistepScheduler"),
]
# (checkpoint, a sampler that cannot run correctly on it)
MISFITS = [
    ("sd", "FlowMatchEulerDiscreteScheduler"),
    ("sdxl", "FlowMatchHeunDiscreteScheduler"),
    ("sd3", "EulerDiscreteScheduler"),
    ("flux", "DDIMScheduler"),
    ("flux", "FlowMatchHeunDiscreteScheduler"),  # takes neither Flux's sigmas nor its mu
    ("flux-schnell", "DPMSolverMultistepScheduler"),  # refuses Flux's mu without dynamic shift
    ("pixart", "FlowMatchEulerDiscreteScheduler"),
    ("flux", "FlowMatchLCMScheduler"),  # its step noise would be unseeded in Flux's pipeline
    ("chroma", "DPMSolverMultistepScheduler"),  # takes no custom sigmas, which Chroma passes
    ("chroma", "FlowMatchHeunDiscreteScheduler"),
    ("chroma", "FlowMatchLCMScheduler"),  # unseeded step noise
    ("qwen-image", "DPMSolverMultistepScheduler"),
    ("z-image", "FlowMatchHeunDiscreteScheduler"),
    ("z-image", "UniPCMultistepScheduler"),
    ("flux2", "FlowMatchHeunDiscreteScheduler"),
    ("auraflow", "EulerDiscreteScheduler"),
    ("sana", "DDIMScheduler"),  # a flow-matching checkpoint
    ("cogview4", "DPMSolverMultistepScheduler"),
    ("cogview4", "UniPCMultistepScheduler"),  # takes no custom timesteps
    ("lumina2", "FlowMatchHeunDiscreteScheduler"),
    ("hunyuan-dit", "FlowMatchEulerDiscreteScheduler"),
]


def spec(model, **fields):
    return validate_spec({"model": str(model), "prompts": ["a fox"]} | fields, max_cells=100)


def first_recipe(job) -> dict:
    return json.loads(next(expand(job)).recipe)


def run_and_verify(cli: Cli, *flags: str) -> list[dict]:
    """Run a job, verify it identical in a fresh process, and return each image's whole
    record (``show``)."""
    result = cli("run", "--prompt", "a red fox", "--seeds", "0", "--steps", "2", *flags)
    assert result.exit_code == 0, result.output
    argv = [sys.executable, "-m", "reprogrid", "--db", cli.db_url, "--store", str(cli.store)]
    verified = subprocess.run(
        [*argv, "verify", "1", "--format", "json"],
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    rows = json.loads(verified.stdout)
    assert rows and {row["verdict"] for row in rows} == {"identical"}
    rows = json.loads(cli("query", "--format", "json").output)
    return [json.loads(cli("show", r["pixel_sha256"], "--format", "json").output) for r in rows]


# Torch-free knowledge of diffusers, checked against the installed diffusers.


def test_the_flow_match_samplers_take_sigmas_and_mu_as_listed():
    import diffusers

    for name, (sigmas, mu) in families.FLOW_MATCH_SAMPLERS.items():
        taken = inspect.signature(getattr(diffusers, name).set_timesteps).parameters
        assert ("sigmas" in taken, "mu" in taken) == (sigmas, mu), name


def test_the_samplers_listed_as_taking_custom_timesteps_take_them():
    import diffusers

    for name in [*families.FLOW_MATCH_SAMPLERS, *families.FLOW_CONFIGURABLE_SAMPLERS]:
        taken = inspect.signature(getattr(diffusers, name).set_timesteps).parameters
        assert ("timesteps" in taken) == (name in families.TAKES_TIMESTEPS), name


def test_the_flow_configurable_samplers_have_flow_sigmas_and_take_mu():
    import diffusers

    for name in families.FLOW_CONFIGURABLE_SAMPLERS:
        cls = getattr(diffusers, name)
        init = inspect.signature(cls.__init__).parameters
        assert {"use_flow_sigmas", "flow_shift", "use_dynamic_shifting"} <= set(init), name
        taken = inspect.signature(cls.set_timesteps).parameters
        assert "mu" in taken, name
        assert ("sigmas" in taken) == families.FLOW_CONFIGURABLE_SAMPLERS[name][0], name


@pytest.mark.parametrize("option", ["schedule_type", "timestep_spacing", "solver_order"])
def test_the_samplers_listed_with_an_option_are_those_whose_config_has_it(option):
    import diffusers

    config_name = {
        "schedule_type": "use_karras_sigmas",
        "timestep_spacing": "timestep_spacing",
        "solver_order": "solver_order",
    }[option]
    for name in families.ALL_SAMPLERS:
        init = inspect.signature(getattr(diffusers, name).__init__).parameters
        assert families.sampler_option_support(name, option, False) == (config_name in init), name


# Validation: defaults, fits and refusals.


@pytest.mark.parametrize(("name", "family", "size", "_sampler"), FAMILY_CASES)
def test_the_default_size_and_family_come_from_the_checkpoint_configs(
    tiny_checkpoint, name, family, size, _sampler
):
    job = spec(tiny_checkpoint(name))
    assert (job.width, job.height, job.family) == (size, size, family)
    assert first_recipe(job)["family"] == family


@pytest.mark.parametrize(("name", "sampler"), MISFITS)
def test_a_sampler_that_does_not_fit_the_family_is_refused_naming_sampler_and_family(
    tiny_checkpoint, cli, name, sampler
):
    model = tiny_checkpoint(name)
    result = cli("run", "--model", str(model), "--prompt", "a fox", "--sampler", sampler)
    assert result.exit_code == 2
    assert result.output.startswith("Error: sampler: ") and result.output.count("\n") == 1
    assert "family" in result.output
    assert not (cli.cwd / "reprogrid.db").exists() and not cli.store.exists()


def test_a_sampler_axis_with_a_misfit_names_the_axis(tiny_checkpoint):
    model = tiny_checkpoint("sd3")
    with pytest.raises(SpecError) as caught:
        spec(model, axes={"sampler": ["UniPCMultistepScheduler", "EulerDiscreteScheduler"]})
    assert caught.value.field == "axes.sampler"


def test_flux_records_true_cfg_and_its_distilled_guidance_with_the_pipelines_defaults(
    tiny_checkpoint,
):
    recipe = first_recipe(spec(tiny_checkpoint("flux"), width=32, height=32))
    assert recipe["guidance_scale"] == 1.0
    assert recipe["distilled_guidance_scale"] == 3.5
    assert recipe["max_sequence_length"] == 512


def test_a_flux_checkpoint_without_guidance_embedding_takes_no_distilled_guidance(
    tiny_checkpoint,
):
    model = tiny_checkpoint("flux-schnell")
    assert first_recipe(spec(model))["distilled_guidance_scale"] is None
    with pytest.raises(SpecError) as caught:
        spec(model, distilled_guidance_scale=3.5)
    assert caught.value.field == "distilled_guidance_scale"


def test_a_negative_prompt_that_would_have_no_effect_is_refused(tiny_checkpoint):
    with pytest.raises(SpecError) as caught:
        spec(tiny_checkpoint("flux"), negative_prompt="blurry")
    assert caught.value.field == "negative_prompt" and "guidance_scale 1" in str(caught.value)
    with pytest.raises(SpecError) as caught:
        spec(tiny_checkpoint("sd"), negative_prompt="blurry", axes={"guidance_scale": [0.5, 1.0]})
    assert caught.value.field == "negative_prompt"


def test_a_guidance_axis_through_1_keeps_a_negative_prompt_the_other_cells_use(tiny_checkpoint):
    job = spec(tiny_checkpoint("sd"), negative_prompt="blurry", axes={"guidance_scale": [1, 5]})
    assert [json.loads(c.recipe)["negative_prompt"] for c in expand(job)] == ["blurry"] * 2


def test_pixart_binning_and_caption_cleaning_are_off_and_recorded(tiny_checkpoint):
    recipe = first_recipe(spec(tiny_checkpoint("pixart")))
    assert (recipe["resolution_binning"], recipe["clean_caption"]) == (False, False)
    assert recipe["max_sequence_length"] == 120
    assert first_recipe(spec(tiny_checkpoint("pixart-sigma")))["max_sequence_length"] == 300


def test_a_family_field_is_refused_on_a_family_without_it(tiny_checkpoint):
    with pytest.raises(SpecError) as caught:
        spec(tiny_checkpoint("sd"), resolution_binning=True)
    assert caught.value.field == "resolution_binning"


def test_a_sampler_option_the_sampler_lacks_is_refused(tiny_checkpoint):
    model = tiny_checkpoint("sd")
    with pytest.raises(SpecError) as caught:
        spec(model, sampler="EulerAncestralDiscreteScheduler", solver_order=2)
    assert caught.value.field == "solver_order"
    with pytest.raises(SpecError) as caught:  # flow sigmas ignore a sigma schedule
        spec(tiny_checkpoint("sd3"), sampler="UniPCMultistepScheduler", schedule_type="karras")
    assert caught.value.field == "schedule_type"


def test_sampler_options_are_recorded_and_sweepable(tiny_checkpoint):
    job = spec(
        tiny_checkpoint("sd"),
        sampler="DPMSolverMultistepScheduler",
        algorithm_type="dpmsolver++",
        axes={"schedule_type": ["karras", "exponential"], "solver_order": [1, 2]},
    )
    recipes = [json.loads(c.recipe) for c in expand(job)]
    assert [(r["schedule_type"], r["solver_order"]) for r in recipes] == [
        ("karras", 1), ("karras", 2), ("exponential", 1), ("exponential", 2),
    ]  # fmt: skip
    assert {r["algorithm_type"] for r in recipes} == {"dpmsolver++"}


# Generation: the sampler a recipe names, configured for the family.


def test_a_multistep_sampler_on_a_flow_checkpoint_runs_with_flow_sigmas_and_its_shift(
    tiny_checkpoint,
):
    loaded = load_checkpoint(str(tiny_checkpoint("sd3")), None, "float32", "cpu")
    job = spec(tiny_checkpoint("sd3"), sampler="UniPCMultistepScheduler", steps=2)
    generate_batch(loaded, [first_recipe(job)], "cpu")
    config = loaded.pipeline.scheduler.config
    assert (config.use_flow_sigmas, config.prediction_type) == (True, "flow_prediction")
    assert config.flow_shift == 3.0


def test_a_sampler_option_changes_the_pixels(tiny_checkpoint):
    model = tiny_checkpoint("sd")
    loaded = load_checkpoint(str(model), None, "float32", "cpu")
    base = {"sampler": "DPMSolverMultistepScheduler", "steps": 2}
    plain = generate_batch(loaded, [first_recipe(spec(model, **base))], "cpu")
    karras = spec(model, **base, schedule_type="karras")
    assert not np.array_equal(plain, generate_batch(loaded, [first_recipe(karras)], "cpu"))


@pytest.mark.parametrize(("name", "family", "size", "sampler"), FAMILY_CASES)
def test_every_family_runs_a_sampler_and_guidance_grid_that_verifies_and_records_its_call(
    tiny_checkpoint, cli, name, family, size, sampler
):
    import diffusers
    from tiny_families import plain_diffusers_call

    model = tiny_checkpoint(name)
    own = json.loads((model / "scheduler" / "scheduler_config.json").read_text())["_class_name"]
    samplers = [own] if sampler is None else [own, sampler]
    flags = ["--model", str(model), "--axis", f"sampler={','.join(samplers)}"]
    flags += ["--axis", "guidance_scale=2,6"]
    if families.FAMILIES_BY_KEY[family].negative_prompt:
        flags += ["--negative-prompt", "blurry"]
    if size != 32:
        flags += ["--width", "32", "--height", "32"]
    rows = run_and_verify(cli, *flags)
    recipes = [r["recipe"] for r in rows]
    assert [(r["sampler"], r["guidance_scale"]) for r in recipes] == [
        (s, g) for s in samplers for g in (2.0, 6.0)
    ]
    assert {(r["family"], r["width"], r["height"]) for r in recipes} == {(family, 32, 32)}
    assert {(r["width"], r["height"]) for r in rows} == {(32, 32)}
    for low, high in zip(rows[::2], rows[1::2], strict=True):  # guidance changed the pixels
        assert low["pixel_sha256"] != high["pixel_sha256"] or not (  # or never ran
            low["call"]["classifier_free_guidance"] or high["call"]["classifier_free_guidance"]
        )
    assert len({r["pixel_sha256"] for r in rows[::2]}) == len(samplers)
    # Every pixel-affecting __call__ argument, by diffusers' name, with the value used.
    pipeline_class = getattr(diffusers, rows[0]["call"]["pipeline_class"])
    taken = inspect.signature(pipeline_class.__call__).parameters
    pixel_arguments = {
        n
        for n, p in taken.items()
        if n != "self" and n not in NOT_PIXEL_ARGUMENTS and p.kind != p.VAR_KEYWORD
    }
    for row in rows:
        assert set(row["call"]["arguments"]) == pixel_arguments
        assert row["call"]["arguments"]["prompt"] == "a red fox"
        assert row["call"]["sampler"]["class"] == row["recipe"]["sampler"]
    # A plain diffusers call with exactly the recorded arguments makes the recorded pixels.
    threads = rows[-1]["environment"]["threads"]
    direct = plain_diffusers_call(model, rows[-1]["call"], threads)
    assert pixel_sha256(direct) == rows[-1]["pixel_sha256"]


def test_the_distilled_guidance_changes_flux_pixels(tiny_checkpoint):
    model = tiny_checkpoint("flux")
    loaded = load_checkpoint(str(model), None, "float32", "cpu")
    size = {"width": 32, "height": 32, "steps": 2}
    low = generate_batch(loaded, [first_recipe(spec(model, **size))], "cpu")
    high = spec(model, **size, distilled_guidance_scale=7.0)
    assert not np.array_equal(low, generate_batch(loaded, [first_recipe(high)], "cpu"))


def test_a_model_axis_runs_each_checkpoint_in_its_own_batches_and_shows_them_side_by_side(
    tiny_checkpoint, cli
):
    from reprogrid.models import open_database
    from reprogrid.review.layout import job_sheets

    models = [str(tiny_checkpoint("sd", 0)), str(tiny_checkpoint("sd", 1))]
    rows = run_and_verify(cli, "--seeds", "0-1", "--axis", f"model={','.join(models)}")
    assert [r["recipe"]["model"] for r in rows] == [models[0]] * 2 + [models[1]] * 2
    assert rows[0]["pixel_sha256"] != rows[2]["pixel_sha256"]
    assert all(len({r["recipe"]["model"] for r in rows if r["batch"]["batch_id"] == b}) == 1
               for b in {r["batch"]["batch_id"] for r in rows})  # fmt: skip
    second = json.loads(cli("query", "--model", models[1], "--format", "json").output)
    assert [r["pixel_sha256"] for r in second] == [r["pixel_sha256"] for r in rows[2:]]
    db = open_database(cli.db_url)
    with db.sessions() as session:
        (sheet,) = job_sheets(session, 1, cli.store, rows="model", cols="seed")
    assert sheet.row_labels == [f"model={m}" for m in models]
    db.dispose()


def test_a_model_axis_over_two_families_is_refused(tiny_checkpoint):
    models = [str(tiny_checkpoint("sd")), str(tiny_checkpoint("sd3"))]
    with pytest.raises(SpecError) as caught:
        validate_spec({"prompts": ["a fox"], "axes": {"model": models}}, max_cells=10)
    assert caught.value.field == "axes.model"


@pytest.fixture(scope="module")
def lora(tiny_checkpoint, tmp_path_factory):
    """A random LoRA for the tiny SD checkpoint's UNet."""
    import tiny_families

    folder = tmp_path_factory.mktemp("lora")
    return tiny_families.tiny_lora(folder, tiny_checkpoint("sd"))


def lora_spec(tmp_path, model, lora_path, extra: str = "") -> str:
    path = tmp_path / "lora.toml"
    path.write_text(
        f'model = "{model}"\nprompts = ["a red fox"]\nsteps = 2\n{extra}'
        f'adapters = [{{path = "{lora_path}", scale = 1.0}}]\n'
        "[axes]\nadapter_scale = [0.0, 0.5, 1.0]\n",
        encoding="utf-8",
    )
    return str(path)


def test_a_lora_scale_axis_gives_three_images_and_scale_0_is_the_base_checkpoint(
    tiny_checkpoint, lora, cli, tmp_path
):
    model = tiny_checkpoint("sd", 2)  # loaded here first: no adapter was ever in its pipeline
    loaded = load_checkpoint(str(model), None, "float32", "cpu")
    plain = first_recipe(spec(model, steps=2, prompts=["a red fox"]))
    base = generate_batch(loaded, [plain], "cpu")
    rows = run_and_verify(cli, lora_spec(tmp_path, model, lora))
    assert [[a["scale"] for a in r["recipe"]["adapters"]] for r in rows] == [[0.0], [0.5], [1.0]]
    assert rows[0]["recipe"]["adapters"][0]["sha256"] == file_sha256(lora)
    assert len({r["pixel_sha256"] for r in rows}) == 3
    assert pixel_sha256(base[0]) == rows[0]["pixel_sha256"]
    # The cached pipeline now holds the adapter: a batch without it still gets the base pixels.
    again = load_checkpoint(str(model), None, "float32", "cpu")
    assert again is loaded and np.array_equal(base, generate_batch(again, [plain], "cpu"))


def test_a_lora_jobs_png_names_the_lora_and_its_hash_as_a1111_writes_them(
    tiny_checkpoint, lora, cli, tmp_path
):
    import hashlib
    import re

    from PIL import Image

    rows = run_and_verify(cli, lora_spec(tmp_path, tiny_checkpoint("sd"), lora))
    data = lora.read_bytes()
    after_header = data[8 + int.from_bytes(data[:8], "little") :]
    short_hash = hashlib.sha256(after_header).hexdigest()[:12]  # A1111's addnet hash
    prompt, settings = Image.open(rows[1]["path"]).text["parameters"].split("\n")
    assert prompt == f"a red fox <lora:{lora.stem}:0.5>"
    # A1111's own reading of the settings line (modules/infotext_utils.py re_param).
    param = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
    fields = {k: json.loads(v) if v.startswith('"') else v for k, v in param.findall(settings)}
    assert fields["Lora hashes"] == f"{lora.stem}: {short_hash}"


def test_verify_names_an_adapter_file_that_changed(tiny_checkpoint, lora, cli, tmp_path):
    copy = tmp_path / "copy.safetensors"
    shutil.copy(lora, copy)
    run_and_verify(cli, lora_spec(tmp_path, tiny_checkpoint("sd"), copy))
    copy.write_bytes(copy.read_bytes()[:-1] + b" ")
    result = cli("verify", "1", "--format", "json")
    assert result.exit_code == 1
    errors = {row["details"]["error"] for row in json.loads(result.output)}
    assert errors == {f"adapters: changed since the record: {copy}"}


def test_adapters_are_refused_on_a_family_without_lora(tiny_checkpoint, lora):
    with pytest.raises(SpecError) as caught:
        spec(tiny_checkpoint("pixart"), adapters=[str(lora)])
    assert caught.value.field == "adapters"


def test_a_recipe_from_before_families_generates_as_it_did(tiny_checkpoint):
    model = tiny_checkpoint("sd")
    loaded = load_checkpoint(str(model), None, "float32", "cpu")
    recipe = first_recipe(spec(model, steps=2))
    old = {
        k: v
        for k, v in recipe.items()
        if k not in (*families.SAMPLER_OPTIONS, "family", "adapters")
    }
    assert np.array_equal(
        generate_batch(loaded, [recipe], "cpu"), generate_batch(loaded, [old], "cpu")
    )


def test_resolution_binning_is_refused_where_the_pipeline_has_no_bins(tiny_checkpoint):
    with pytest.raises(SpecError) as caught:  # the tiny transformer's sample_size is 16
        spec(tiny_checkpoint("pixart"), resolution_binning=True)
    assert caught.value.field == "resolution_binning" and "sample_size of 16" in str(caught.value)


def test_a_max_sequence_length_beyond_the_pipelines_limit_is_refused(tiny_checkpoint):
    with pytest.raises(SpecError) as caught:
        spec(tiny_checkpoint("flux"), width=32, height=32, max_sequence_length=513)
    assert caught.value.field == "max_sequence_length"
