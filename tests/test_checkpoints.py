"""Checkpoint references and identities: built-in, local folders, the hub cache, file hashes."""

import shutil
from pathlib import Path

import pytest

from reprogrid.scheduler.checkpoint_refs import (
    BUILTIN_DIR,
    CheckpointNotFound,
    builtin_names,
    resolve_checkpoint,
)
from reprogrid.worker.checkpoints import checkpoint_identity, load_checkpoint


def test_the_builtin_checkpoints_ship_with_the_package():
    assert builtin_names() == ["shapes", "tiny", "tiny-ddpm"]
    assert resolve_checkpoint("builtin:tiny-ddpm").unconditional


def fake_hub_cache(home: Path, repo: str, revision: str) -> None:
    """The layout huggingface_hub writes: models--owner--name/{refs,snapshots}."""
    folder = home / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(BUILTIN_DIR / "tiny", folder / "snapshots" / revision)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision, encoding="utf-8")


def use_hub_cache(monkeypatch, folder: Path) -> None:
    """Point huggingface_hub at ``folder`` (it reads HF_HUB_CACHE once, at import)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder))


def test_a_hub_id_resolves_to_its_snapshot_in_the_local_cache(tmp_path, monkeypatch):
    use_hub_cache(monkeypatch, tmp_path / "hub")
    fake_hub_cache(tmp_path, "someone/tiny-sd", "0123abcd")
    ref = resolve_checkpoint("someone/tiny-sd")
    assert ref.path == tmp_path / "hub/models--someone--tiny-sd/snapshots/0123abcd"
    assert ref.pipeline_class == "StableDiffusionPipeline"


def test_a_hub_id_missing_from_the_cache_is_reported_without_network(tmp_path, monkeypatch):
    use_hub_cache(monkeypatch, tmp_path / "hub")
    with pytest.raises(CheckpointNotFound, match="local Hugging Face cache"):
        resolve_checkpoint("someone/not-downloaded")


def test_the_identity_hashes_weights_and_configs(tmp_path, monkeypatch):
    monkeypatch.setenv("REPROGRID_HASH_CACHE", str(tmp_path / "hashes.json"))
    identity = checkpoint_identity(resolve_checkpoint("builtin:tiny"))
    assert "unet/diffusion_pytorch_model.safetensors" in identity.files
    assert "scheduler/scheduler_config.json" in identity.files
    assert len(identity.sha256) == 64


def test_a_changed_file_changes_the_identity_and_only_it_is_hashed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("REPROGRID_HASH_CACHE", str(tmp_path / "hashes.json"))
    shutil.copytree(BUILTIN_DIR / "tiny", tmp_path / "ckpt")
    ref = resolve_checkpoint(str(tmp_path / "ckpt"))
    before = checkpoint_identity(ref)
    cached = (tmp_path / "hashes.json").read_text()
    assert checkpoint_identity(ref) == before
    assert (tmp_path / "hashes.json").read_text() == cached
    with (tmp_path / "ckpt" / "vae" / "config.json").open("a") as config:
        config.write("\n")
    after = checkpoint_identity(ref)
    assert after.sha256 != before.sha256
    changed = {k for k in after.files if after.files[k] != before.files[k]}
    assert changed == {"vae/config.json"}


def test_a_checkpoint_is_loaded_once_per_process():
    first = load_checkpoint("builtin:tiny", None, "float32", "cpu")
    assert load_checkpoint("builtin:tiny", None, "float32", "cpu") is first


def test_a_sampler_prepared_ahead_is_a_fresh_instance_taken_by_one_batch_only():
    loaded = load_checkpoint("builtin:tiny", None, "float32", "cpu")
    recipe = {"sampler": "DDIMScheduler"}
    loaded.set_fresh_sampler("DDIMScheduler", recipe)
    made_at_the_call = loaded.pipeline.scheduler
    loaded.prepare_sampler("DDIMScheduler", recipe)  # another thread does it, in a worker
    loaded.set_fresh_sampler("DDIMScheduler", recipe)
    prepared = loaded.pipeline.scheduler
    loaded.set_fresh_sampler("DDIMScheduler", recipe)  # nothing prepared: made now
    assert len({id(made_at_the_call), id(prepared), id(loaded.pipeline.scheduler)}) == 3
    assert prepared.config == made_at_the_call.config
    assert prepared.num_inference_steps is None  # never used: no timesteps set
