"""Streamed log-probs under real DDP (two CPU processes through `accelerate launch`, gloo).

The streamed path swaps the output head's forward inside the wrapped model's call, so DDP's
hooks must still all-reduce every gradient, the head's included. A tiny Llama with a 32768-token
vocabulary (its tokenizer uses 512 of them, as real models pad theirs) takes the streamed path
on its own; training every weight (`adapter.trainable: all`) makes the tied embedding/head
train through the checkpointed chunks. Two processes streamed must give the weights of one
process on the full-logits path (forced there by raising the vocabulary threshold), within the
fp64 bound of test_multiprocess.py (1e-9; a missing all-reduce moves weights by ~lr = 3e-3).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_multiprocess import MODEL_STAGES, TWO, WEIGHT_TOLERANCE, cli, make_project, max_difference, outputs, plan, \
    stage_dir, weights

from clo_recipes.engine.run import execute
from clo_recipes.hardware import logps_plan

VOCAB = 32768
ALL = ["adapter.trainable=all"]


@pytest.fixture(scope="module")
def padded_vocab_tiny(tmp_path_factory) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clo_recipes.testing.tiny import build_tiny_llama

    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.resize_token_embeddings(VOCAB, mean_resizing=False)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)
    assert logps_plan.streams(VOCAB)
    return folder


def reference_rows(path: Path) -> dict[str, dict]:
    text = (stage_dir(path, "reference-clo", ALL) / "reference.jsonl").read_text(encoding="utf-8")
    return {row["id"]: row["logps"] for row in map(json.loads, text.splitlines())}


def test_two_process_streamed_training_equals_one_process_full_logits(padded_vocab_tiny, tmp_path, monkeypatch):
    full = make_project(tmp_path / "full", padded_vocab_tiny)
    with monkeypatch.context() as patch:
        patch.setattr(logps_plan, "STREAM_MIN_VOCAB", 10**9)
        assert execute(plan(full, ALL), only=MODEL_STAGES).ok
    assert outputs(full, "train-clo", ALL)["log_probs"].startswith("full logits")

    streamed = make_project(tmp_path / "streamed", padded_vocab_tiny)
    completed = cli(streamed, TWO + ALL)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    trained = outputs(streamed, "train-clo", TWO + ALL)
    assert trained["processes"] == 2 and trained["distributed"] == "MULTI_CPU"
    assert trained["log_probs"].startswith("streamed") and trained["trainable"] == "all parameters"
    assert outputs(streamed, "reference-clo", ALL)["log_probs"].startswith("streamed")

    assert max_difference(weights(full, ALL), weights(streamed, TWO + ALL)) < WEIGHT_TOLERANCE
    # the reference stage (no gradients, two processes) scored the same log-probs; they are
    # stored as fp32, so fp64 sums that differ by ~1e-15 may round one fp32 step (2**-23) apart
    ours, theirs = reference_rows(streamed), reference_rows(full)
    assert ours.keys() == theirs.keys()
    for sample in ours:
        for name, value in ours[sample].items():
            assert abs(value - theirs[sample][name]) <= 2**-23 * abs(value), (sample, name)
