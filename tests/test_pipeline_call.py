"""The record is the call: what the pipeline received, read from the objects that ran.

Jobs run on builtin:tiny and on tiny random SD checkpoints (tests/tiny_families.py),
2 steps, one CPU thread. tests/test_families.py runs the same checks on every family.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import Cli
from sqlalchemy import select
from tiny_families import plain_diffusers_call

from reprogrid.models import Batch, Database, PipelineCall, open_database
from reprogrid.models.calls import PER_IMAGE_ARGUMENTS, call_json, differences
from reprogrid.scheduler.checkpoint_refs import BUILTIN_DIR
from reprogrid.scheduler.spec import SpecError, validate_spec
from reprogrid.worker.pipeline_call import NOT_PIXEL_ARGUMENTS
from reprogrid.worker.store import pixel_sha256


def run(cli: Cli, *flags: str) -> list[dict]:
    """Run a job; every image's whole record (``show --format json``), in grid order."""
    result = cli("run", "--prompt", "a red fox", "--seeds", "0-1", "--steps", "2", *flags)
    assert result.exit_code == 0, result.output
    rows = json.loads(cli("query", "--format", "json").output)
    return [json.loads(cli("show", str(r["image_id"]), "--format", "json").output) for r in rows]


def test_show_lists_every_pixel_affecting_call_argument_by_its_diffusers_name(cli: Cli):
    from diffusers import StableDiffusionPipeline

    record = run(cli, "--width", "64", "--height", "64")[0]
    call = record["call"]
    taken = inspect.signature(StableDiffusionPipeline.__call__).parameters
    expected = {n for n in taken if n != "self" and n not in NOT_PIXEL_ARGUMENTS} - {"kwargs"}
    assert set(call["arguments"]) == expected
    assert call["pipeline_class"] == "StableDiffusionPipeline"
    assert call["arguments"]["guidance_scale"] == 7.5
    assert call["arguments"]["prompt"] == "a red fox"
    assert call["arguments"]["generator"] == {"device": "cpu", "seed": 0}
    assert call["arguments"]["eta"] == 0.0 and "eta" in call["defaults"]
    assert call["sampler"]["class"] == "PNDMScheduler"
    assert call["classifier_free_guidance"] is True


def test_a_direct_diffusers_call_with_the_recorded_arguments_gives_the_recorded_pixels(cli: Cli):
    flags = ["--width", "64", "--height", "64", "--sampler", "EulerDiscreteScheduler"]
    for record in run(cli, *flags, "--batch-size", "1"):  # a batch of one image per call
        pixels = plain_diffusers_call(
            BUILTIN_DIR / "tiny", record["call"], record["environment"]["threads"]
        )
        assert pixel_sha256(pixels) == record["pixel_sha256"]


def test_one_call_row_serves_every_batch_that_made_the_same_call(cli: Cli):
    run(cli, "--prompt", "a blue bird", "--batch-size", "1", "--width", "64", "--height", "64")
    db = open_database(cli.db_url)
    with db.sessions() as session:
        assert session.query(PipelineCall).count() == 1
    db.dispose()


def test_a_guidance_sweep_through_1_with_a_negative_prompt_runs_and_records_where_cfg_ran(
    cli: Cli,
):
    records = run(
        cli, "--negative-prompt", "blurry", "--axis", "guidance_scale=1,3", "--width", "64",
        "--height", "64",
    )  # fmt: skip
    ran = {(r["recipe"]["guidance_scale"], r["call"]["classifier_free_guidance"]) for r in records}
    assert ran == {(1.0, False), (3.0, True)}
    assert {r["call"]["arguments"]["negative_prompt"] for r in records} == {"blurry"}


def test_a_negative_prompt_no_cell_can_use_is_refused(tmp_path: Path):
    spec = {"prompts": ["a fox"], "negative_prompt": "blurry", "axes": {"guidance_scale": [0, 1]}}
    with pytest.raises(SpecError) as caught:
        validate_spec(spec, max_cells=10, base_dir=tmp_path)
    assert caught.value.field == "negative_prompt" and "above 1" in str(caught.value)


def test_a_model_axis_runs_each_checkpoint_with_its_own_default_sampler(cli: Cli, tmp_path: Path):
    euler = tmp_path / "tiny-euler"
    shutil.copytree(BUILTIN_DIR / "tiny", euler)
    config_path = euler / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "_class_name": "EulerDiscreteScheduler"}))
    models = f"builtin:tiny,{euler}"
    records = run(
        cli, "--seeds", "0", "--axis", f"model={models}", "--width", "64", "--height", "64"
    )
    assert [r["recipe"]["sampler"] for r in records] == ["PNDMScheduler", "EulerDiscreteScheduler"]
    assert [r["call"]["sampler"]["class"] for r in records] == [
        "PNDMScheduler", "EulerDiscreteScheduler",
    ]  # fmt: skip
    assert cli("verify", "1").exit_code == 0


def test_an_image_to_image_pipeline_is_refused_at_submit_naming_model_and_class(
    cli: Cli, tmp_path: Path
):
    model = tmp_path / "img2img"
    shutil.copytree(BUILTIN_DIR / "tiny", model)
    index = json.loads((model / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionImg2ImgPipeline"
    (model / "model_index.json").write_text(json.dumps(index))
    result = cli("submit", "--model", str(model), "--prompt", "a fox")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("Error: model: ") and "StableDiffusionImg2ImgPipeline" in (
        result.output
    )
    assert not (cli.cwd / "reprogrid.db").exists()


def test_verify_names_a_call_argument_whose_pipeline_default_changed(cli: Cli):
    run(cli, "--width", "64", "--height", "64")
    db = open_database(cli.db_url)
    with db.sessions() as session:
        row = session.query(PipelineCall).one()
        call = json.loads(row.call)
        call["arguments"]["eta"] = 0.5  # as if an older diffusers had defaulted eta to 0.5
        row.call = call_json(call)
        session.commit()
    db.dispose()
    result = cli("regenerate", "1")
    assert result.exit_code == 0, result.output  # PNDM ignores eta: the pixels are identical
    assert "pipeline call: eta 0.5 -> 0.0: pipeline default changed" in result.output


def test_call_differences_name_the_sampler_config_and_new_arguments():
    recorded = {
        "pipeline_class": "P",
        "arguments": {"a": 1},
        "defaults": ["a"],
        "per_image": dict(PER_IMAGE_ARGUMENTS),
        "sampler": {"class": "S", "config": {"shift": 3.0}},
    }
    replayed = {
        **recorded,
        "arguments": {"a": 1, "b": True},
        "sampler": {"class": "S", "config": {"shift": 1.0}},
    }
    assert differences(recorded, replayed) == [
        "b absent -> True: pipeline takes a new argument",
        "sampler shift 3.0 -> 1.0: sampler config changed (checkpoint config or diffusers default)",
    ]


def test_weights_swapped_with_the_same_size_and_modification_time_are_named_by_verify(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("REPROGRID_HASH_CACHE", str(tmp_path / "hashes.json"))
    model = tmp_path / "tiny"
    shutil.copytree(BUILTIN_DIR / "tiny", model)
    run(cli, "--model", str(model), "--seeds", "0", "--width", "64", "--height", "64")
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    before = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-64:] = bytes(64)  # other weights, the same size
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # as cp -p or touch -r
    assert weights.stat().st_size == before.st_size
    result = cli("verify", "1", "--format", "json")
    (row,) = json.loads(result.output)
    assert row["details"]["checkpoint_changes"] == {
        "changed": ["unet/diffusion_pytorch_model.safetensors"]
    }


def test_a_hub_cache_blob_is_identified_by_its_name_without_reading_it(tmp_path: Path):
    from reprogrid.worker.checkpoints import cached_file_sha256

    blob = tmp_path / "blobs" / ("ab" * 32)
    blob.parent.mkdir()
    blob.write_bytes(b"not what the name says")
    assert cached_file_sha256(blob, {}) == "ab" * 32


# The generic path: pipeline classes without a family of their own.


@pytest.fixture
def generic_pixart(tiny_checkpoint, tmp_path: Path) -> Path:
    """PixArt-sigma's tiny checkpoint as PixArtSigmaPAGPipeline, a class reprogrid runs
    generically (its resolution binning on by default)."""
    model = tmp_path / "pixart-pag"
    shutil.copytree(tiny_checkpoint("pixart-sigma"), model)
    index = json.loads((model / "model_index.json").read_text())
    index |= {"_class_name": "PixArtSigmaPAGPipeline", "pag_applied_layers": ["blocks.0"]}
    (model / "model_index.json").write_text(json.dumps(index))
    return model


def test_a_generic_pipeline_runs_with_resolution_binning_off_and_records_it(
    cli: Cli, generic_pixart: Path
):
    (record,) = run(cli, "--model", str(generic_pixart), "--seeds", "0")
    assert record["recipe"]["family"] == "generic"
    assert record["call"]["pipeline_class"] == "PixArtSigmaPAGPipeline"
    assert record["call"]["arguments"]["use_resolution_binning"] is False
    assert (record["width"], record["height"]) == (32, 32)
    assert cli("verify", "1").exit_code == 0


def test_a_stochastic_sampler_on_a_generic_pipeline_is_refused_before_anything_is_written(
    cli: Cli, generic_pixart: Path
):
    flags = ["--model", str(generic_pixart), "--sampler", "EulerAncestralDiscreteScheduler"]
    result = cli("submit", "--prompt", "a fox", *flags)
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "PixArtSigmaPAGPipeline runs generically" in result.output
    assert not (cli.cwd / "reprogrid.db").exists()


def test_a_recipe_argument_the_pipeline_does_not_take_is_refused_not_dropped():
    from reprogrid import families
    from reprogrid.worker.generate import CallRefused, _call_arguments

    class NoNegativePrompt:
        def __call__(self, prompt, num_inference_steps, guidance_scale, width, height,
                     generator=None, output_type="pil"):  # fmt: skip
            raise AssertionError("never called")

    recipe = {"pipeline": "text-to-image", "prompt": "a fox", "negative_prompt": "blurry",
              "steps": 2, "guidance_scale": 5.0, "width": 32, "height": 32}  # fmt: skip
    with pytest.raises(CallRefused, match="NoNegativePrompt takes no argument negative_prompt"):
        _call_arguments(NoNegativePrompt(), families.GENERIC, [recipe], [None])
    plain = _call_arguments(
        NoNegativePrompt(), families.GENERIC, [recipe | {"negative_prompt": ""}], [None]
    )
    assert "negative_prompt" not in plain


def test_a_call_the_pipeline_refuses_fails_the_job_once_not_batch_by_batch(
    cli: Cli, db: Database, tmp_path: Path
):
    # Attend-and-Excite is text to image but needs token_indices, which no recipe gives:
    # only its signature, read when the first batch runs, can say so.
    model = tmp_path / "attend-and-excite"
    shutil.copytree(BUILTIN_DIR / "tiny", model)
    index = json.loads((model / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionAttendAndExcitePipeline"
    (model / "model_index.json").write_text(json.dumps(index))
    result = cli(
        "run", "--model", str(model), "--prompt", "a fox", "--seeds", "0-7",
        "--batch-size", "2", "--steps", "2", "--width", "32", "--height", "32",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "job 1 failed: 0 of 8 images" in result.output
    with db.sessions() as session:
        batches = session.scalars(select(Batch).order_by(Batch.id)).all()
    refused = "CallRefused: StableDiffusionAttendAndExcitePipeline needs token_indices"
    ran = [b for b in batches if b.attempts]
    assert ran and all(b.error.startswith(refused) for b in ran)
    assert len(ran) <= 2  # the first, and the next one already computing beside it
    assert all(
        b.status == "failed" and b.error.startswith("not run: the pipeline refused the same")
        for b in batches
        if not b.attempts
    )


def test_images_of_another_size_than_the_recipe_fail_the_batch_instead_of_being_recorded():
    from types import SimpleNamespace

    from reprogrid.worker.generate import CallRefused, _pixels

    output = SimpleNamespace(images=np.zeros((1, 64, 64, 3), dtype=np.float32))
    with pytest.raises(CallRefused, match="returned 64x64 images for a 32x32 recipe"):
        _pixels(output, "HunyuanDiTPipeline", [{"width": 32, "height": 32}])


def test_the_report_lists_each_distinct_call_and_tiles_name_theirs(cli: Cli, tmp_path: Path):
    run(cli, "--axis", "guidance_scale=2,6", "--width", "64", "--height", "64")
    result = cli("report", "1", "-o", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    index = (tmp_path / "report" / "index.html").read_text()
    assert "Pipeline calls (2)" in index and "StableDiffusionPipeline" in index
    tiles = "".join(p.read_text() for p in (tmp_path / "report" / "data").glob("tiles-*.js"))
    assert '"call_id":1,' in tiles and '"call_id":2,' in tiles
