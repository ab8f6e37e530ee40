"""A checkpoint folder with a missing, cut-short or damaged file: resuming falls back to the
previous complete checkpoint (with a warning naming the file), or says which file is wrong."""

import json
import logging
import shutil
from types import SimpleNamespace

import pytest
from test_training_stages import _fail_after_steps, pairs, tiny, train  # noqa: F401 - fixtures
from training_data import training_recipe

from clo_recipes.errors import CloError
from clo_recipes.training.checkpoint import CheckpointStore


def test_a_cut_checkpoint_file_falls_back_to_the_previous_one(tiny, pairs, tmp_path, monkeypatch, caplog):
    recipe = training_recipe(tiny, "sft", max_steps=4, save_steps=1)
    _fail_after_steps(monkeypatch, 3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(recipe, tmp_path, pairs, arm="sft")
    monkeypatch.undo()
    folder = tmp_path / "work" / "train-sft" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["sft-step-000002", "sft-step-000003"]
    kept = shutil.copytree(folder, tmp_path / "kept")  # for the cases below

    weights = folder / "sft-step-000003" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short, as by a full disk
    with caplog.at_level(logging.WARNING, logger="clo_recipes"):
        _, outputs = train(recipe, tmp_path, pairs, arm="sft")
    assert outputs["resumed_from"] == "sft-step-000002" and outputs["steps"] == 4
    assert f"{weights} is cut short (1000 of " in caplog.text

    identity = json.loads((kept / "sft-step-000003" / "state.json").read_text())["identity"]
    store = CheckpointStore(kept, identity, ("sft",))
    assert store.latest().step == 3
    # The same file damaged in place (its size unchanged): loading names it.
    optimizer = kept / "sft-step-000003" / "optimizer.pt"
    optimizer.write_bytes(b"\0" * optimizer.stat().st_size)
    accelerator = SimpleNamespace(distributed_type=SimpleNamespace(name="NO"), process_index=0)
    with pytest.raises(CloError, match=f"checkpoint file {optimizer} does not load"):
        CheckpointStore.load_training_state(store.latest(), accelerator, None, None)
    # Files missing from every checkpoint: no complete one is left, and the message says which file.
    optimizer.unlink()
    (kept / "sft-step-000002" / "scheduler.pt").unlink()
    with pytest.raises(CloError) as error:
        store.latest()
    assert str(error.value).startswith(f"checkpoint file {optimizer} is missing, and no earlier complete checkpoint")
    assert f"delete {optimizer.parent}" in str(error.value)
