"""Spec validation: defaults from the checkpoint, and one named error per bad field."""

import inspect
import json
import shutil
import time
from pathlib import Path

import pytest

from reprogrid.families import DIFFUSION_SAMPLERS as SAMPLERS
from reprogrid.scheduler.checkpoint_refs import BUILTIN_DIR
from reprogrid.scheduler.spec import (
    STEP_LIMITED_SAMPLERS,
    SpecError,
    SpecLimits,
    read_spec_file,
    validate_spec,
)

GOOD = {"prompts": ["a fox"], "seeds": "0-3", "width": 64, "height": 64}


def validate(**fields):
    return validate_spec({**GOOD, **fields}, max_cells=1000)


def error_field(raw, max_cells=1000, base_dir=None) -> str:
    with pytest.raises(SpecError) as caught:
        validate_spec(raw, max_cells=max_cells, base_dir=base_dir)
    assert "\n" not in str(caught.value)
    return caught.value.field


def test_defaults_come_from_the_checkpoint_configs():
    job = validate_spec({"prompts": ["a fox"]}, max_cells=10)
    assert (job.width, job.height) == (64, 64)
    assert job.sampler == "PNDMScheduler"
    assert (list(job.seeds), job.steps, job.batch_size, job.dtype) == ([0], 20, 4, "float32")


def test_every_listed_sampler_is_a_diffusers_scheduler_class():
    import diffusers

    for name in SAMPLERS:
        cls = getattr(diffusers, name)
        assert inspect.isclass(cls) and issubclass(cls, diffusers.SchedulerMixin), name


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 notices inside diffusers
def test_the_step_limited_samplers_are_those_diffusers_limits_to_the_training_timesteps():
    import diffusers

    config = json.loads(
        (BUILTIN_DIR / "tiny" / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8")
    )
    refusing = set()
    for name in SAMPLERS:
        sampler = getattr(diffusers, name).from_config(config)
        try:
            sampler.set_timesteps(config["num_train_timesteps"] + 1)
        except ValueError:
            refusing.add(name)
    assert refusing == STEP_LIMITED_SAMPLERS


def test_more_steps_than_a_limited_sampler_takes_are_refused_at_validation():
    with pytest.raises(SpecError) as caught:
        validate_spec(
            {"model": "builtin:tiny-ddpm", "steps": 1500},
            max_cells=10,
            limits=SpecLimits(max_steps=10**6),
        )
    assert str(caught.value) == (
        "steps: at most 1000 with DDIMScheduler"
        " (builtin:tiny-ddpm's sampler was trained on 1000 timesteps), got 1500"
    )


def test_a_swept_sampler_that_cannot_take_the_steps_names_the_steps_axis():
    raw = {
        **GOOD,
        "axes": {"sampler": ["EulerDiscreteScheduler", "DDIMScheduler"], "steps": [20, 1001]},
    }
    assert error_field(raw) == "axes.steps"


def test_samplers_without_the_limit_take_more_steps_than_the_training_timesteps():
    assert validate(sampler="EulerDiscreteScheduler", steps=1500).steps == 1500


def test_prompts_file_is_read_relative_to_the_spec_folder(tmp_path: Path):
    (tmp_path / "p.txt").write_text("a fox\n\n  a bird  \n", encoding="utf-8")
    job = validate_spec({"prompts_file": "p.txt", "width": 64, "height": 64}, 10, tmp_path)
    assert job.prompts == ("a fox", "a bird")


def test_a_local_checkpoint_directory_is_accepted(tmp_path: Path):

    shutil.copytree(BUILTIN_DIR / "tiny", tmp_path / "ckpt")
    assert validate(model=str(tmp_path / "ckpt")).model == str(tmp_path / "ckpt")


def test_spec_survives_a_round_trip_through_its_stored_json():
    from reprogrid.scheduler.spec import JobSpec

    job = validate(axes={"steps": [2, 3]}, seeds="0-9,20")
    assert JobSpec.from_json(job.to_json()) == job


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"prompts": []}, "prompts"),
        ({"prompts": ["a fox", "  "]}, "prompts"),
        ({"seeds": "0-x"}, "seeds"),
        ({"seeds": [2**64]}, "seeds"),
        ({"seeds": "-1"}, "seeds"),
        ({"width": 65}, "width"),
        ({"height": 100}, "height"),
        ({"steps": 0}, "steps"),
        ({"steps": "ten"}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"sampler": "MagicScheduler"}, "sampler"),
        ({"dtype": "float64"}, "dtype"),
        ({"model": "./no/such/folder"}, "model"),
        ({"model": "builtin:huge"}, "model"),
        ({"guidance_scale": "high"}, "guidance_scale"),
        ({"batch_invariant": "yes"}, "batch_invariant"),
        ({"axes": {"colour": [1]}}, "axes.colour"),
        ({"axes": {"steps": []}}, "axes.steps"),
        ({"axes": {"width": [64, 66]}}, "axes.width"),
        ({"prompts_file": "missing.txt"}, "prompts_file"),
    ],
)
def test_bad_fields_are_refused_with_the_field_named(fields, field):
    raw = {**GOOD, **fields}
    if "prompts_file" in fields:
        raw.pop("prompts")
    assert error_field(raw) == field


def test_no_prompts_at_all_is_refused():
    assert error_field({"seeds": "0"}) == "prompts"


def test_a_grid_larger_than_the_limit_is_refused():
    assert error_field({**GOOD, "seeds": "0-99"}, max_cells=50) == "seeds"


def test_unconditional_checkpoints_take_no_prompts():
    assert error_field({"model": "builtin:tiny-ddpm", "prompts": ["a fox"]}) == "prompts"


def test_unconditional_checkpoints_make_their_own_size_only():
    assert error_field({"model": "builtin:tiny-ddpm", "width": 64}) == "width"


def test_a_toml_syntax_error_names_the_spec(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text('prompts = ["a fox"\n', encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        read_spec_file(path)
    assert caught.value.field == "spec" and "TOML" in str(caught.value)


def test_a_billion_seeds_are_refused_by_the_cell_limit_at_once():
    started = time.perf_counter()
    assert error_field({**GOOD, "seeds": "0-999999999"}) == "seeds"
    assert time.perf_counter() - started < 1.0


def test_the_whole_64_bit_seed_range_is_refused_in_one_line():
    with pytest.raises(SpecError, match=r"^seeds: the grid has 18446744073709551616 cells"):
        validate(seeds=f"0-{2**64 - 1}")


def test_the_cell_limit_names_a_huge_prompts_file(tmp_path):
    (tmp_path / "prompts.txt").write_text("".join(f"prompt {i}\n" for i in range(200)))
    raw = {"prompts_file": "prompts.txt", "seeds": "0-9"}
    assert error_field(raw, max_cells=1000, base_dir=tmp_path) == "prompts_file"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"steps": 10**9}, "steps"),
        ({"width": 65536}, "width"),
        ({"height": 65536}, "height"),
        ({"batch_size": 100000}, "batch_size"),
        ({"axes": {"steps": [2, 10**6]}}, "axes.steps"),
        ({"axes": {"width": [64, 8192]}}, "axes.width"),
    ],
)
def test_values_above_the_upper_bounds_are_refused_naming_the_field(fields, field):
    assert error_field({**GOOD, **fields}) == field


def test_upper_bounds_are_configurable():
    limits = SpecLimits(max_steps=5, max_image_side=4096, max_batch_size=64)
    with pytest.raises(SpecError, match=r"steps: at most 5 \(raise it with REPROGRID_MAX_STEPS\)"):
        validate_spec({**GOOD, "steps": 6}, max_cells=1000, limits=limits)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompts": ["a fox\x00"]}, "prompts"),
        ({"prompts": ["a fox\nNegative prompt: x\nSteps: 99"]}, "prompts"),
        ({"prompts": ["a fox\r"]}, "prompts"),
        ({"prompts": ["a fox\u2028"]}, "prompts"),
        ({"negative_prompt": "blurry\x0b"}, "negative_prompt"),
        ({"axes": {"negative_prompt": ["", "x\x00"]}}, "axes.negative_prompt"),
    ],
)
def test_prompts_with_nul_control_characters_or_a_negative_prompt_line_are_refused(fields, field):
    assert error_field({**GOOD, **fields}) == field


def test_a_prompt_of_several_lines_is_kept_as_a1111_allows():
    job = validate(prompts=["a fox\nat night"], negative_prompt="blurry\nSteps: 1")
    assert job.prompts == ("a fox\nat night",)
    assert job.negative_prompt == "blurry\nSteps: 1"


def test_a_tab_in_a_prompt_is_kept():
    assert validate(prompts=["a\tfox"]).prompts == ("a\tfox",)


def test_a_prompts_file_with_a_control_character_is_refused(tmp_path):
    (tmp_path / "prompts.txt").write_text("a fox\nan owl\x0b at night\n")
    assert error_field({"prompts_file": "prompts.txt"}, base_dir=tmp_path) == "prompts_file"


def test_a_prompts_file_loses_its_utf8_byte_order_mark(tmp_path):
    (tmp_path / "prompts.txt").write_bytes("\ufeffa fox\r\nan owl\r\n".encode())
    job = validate_spec({"prompts_file": "prompts.txt"}, max_cells=10, base_dir=tmp_path)
    assert job.prompts == ("a fox", "an owl")


def test_an_a1111_sampler_name_in_an_axis_that_also_sets_options_is_refused_naming_them():
    raw = {"prompts": ["a fox"], "axes": {"sampler": ["Euler a", "DPM++ 2M Karras"]}}
    with pytest.raises(SpecError) as caught:
        validate_spec(raw, max_cells=10)
    assert caught.value.field == "axes.sampler" and "schedule_type karras" in str(caught.value)


def test_an_a1111_sampler_name_contradicting_a_sampler_option_is_refused():
    raw = {"prompts": ["a fox"], "sampler": "DPM++ 2M Karras", "schedule_type": "exponential"}
    with pytest.raises(SpecError) as caught:
        validate_spec(raw, max_cells=10)
    assert caught.value.field == "schedule_type"
