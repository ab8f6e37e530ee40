"""Tokenized examples, step plans and padded forward passes."""

from collections import Counter

import pytest
import torch
from training_data import quadruples

from clo_recipes.errors import CloError
from clo_recipes.methods.logps import answer_logps
from clo_recipes.training.batch import collate, forward_logps, plan_chunks
from clo_recipes.training.chat import ChatRenderer
from clo_recipes.training.data import PREFERENCE_SEQUENCES, build_examples, epoch_steps, iterate_steps, total_steps


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clo_recipes.testing.tiny import build_tiny_llama

    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def test_examples_hold_four_sequences_and_drop_too_long(tiny):
    _, tokenizer = tiny
    renderer = ChatRenderer(tokenizer)
    rows = quadruples(6)
    rows[2]["y_l"] = "muy " * 40
    found = build_examples(rows, renderer, PREFERENCE_SEQUENCES, max_length=48)
    assert [e.id for e in found.examples] == ["s000", "s001", "s003", "s004", "s005"]
    assert found.dropped_too_long == 1
    first = found.examples[0]
    assert set(first.sequences) == set(PREFERENCE_SEQUENCES)
    # en_en and l_en share the answer y_en, so their answer tokens are identical
    en_en, l_en = first.sequences["en_en"], first.sequences["l_en"]
    assert en_en.ids[en_en.prompt_length:] == l_en.ids[l_en.prompt_length:]
    assert tokenizer.decode(en_en.ids[en_en.prompt_length:]) == rows[0]["y_en"] + "<|im_end|>\n"


def test_max_length_too_small_for_any_sample_is_a_clear_error(tiny):
    with pytest.raises(CloError) as error:
        build_examples(quadruples(3), ChatRenderer(tiny[1]), PREFERENCE_SEQUENCES, max_length=10)
    assert "no training sample fits train.max_length=10" in str(error.value)
    assert "raise train.max_length to at least" in error.value.problems[0].hint
    with pytest.raises(CloError, match="empty"):
        build_examples([], ChatRenderer(tiny[1]), PREFERENCE_SEQUENCES, max_length=10)


def test_padded_batch_equals_one_sequence_at_a_time(tiny):
    model, tokenizer = tiny
    rows = quadruples(3)
    rows[0]["y_l"] = " ".join([rows[0]["y_l"]] * 4)  # lengths that differ enough to chunk
    rows[1]["y_en"] = " ".join([rows[1]["y_en"]] * 3)
    examples = build_examples(rows, ChatRenderer(tokenizer), PREFERENCE_SEQUENCES, 128).examples
    single = collate(examples, PREFERENCE_SEQUENCES, tokenizer.pad_token_id)
    chunked = collate(examples, PREFERENCE_SEQUENCES, tokenizer.pad_token_id, max_chunks=3)
    assert len(single.chunks) == 1 and len(chunked.chunks) > 1
    assert single.chunks[0].logits_to_keep < single.chunks[0].input_ids.shape[1]  # the head skips prompts
    padded = sum(chunk.input_ids.numel() for chunk in chunked.chunks)
    assert single.tokens < padded < single.chunks[0].input_ids.numel()  # chunks cut padding
    with torch.no_grad():
        batched = forward_logps(model, single)
        in_chunks = forward_logps(model, chunked)
        for name in PREFERENCE_SEQUENCES:
            for row, example in enumerate(examples):
                rendered = example.sequences[name]
                ids = torch.tensor([rendered.ids])
                labels = ids.clone()
                labels[:, :rendered.prompt_length] = -100
                alone = answer_logps(model(input_ids=ids).logits, labels)
                assert batched[name].sum[row].item() == pytest.approx(alone.sum.item(), abs=1e-4)
                assert batched[name].count[row].item() == rendered.answer_length
                assert in_chunks[name].sum[row].item() == pytest.approx(alone.sum.item(), abs=1e-4)


def test_chunks_group_similar_lengths():
    lengths = [100, 98, 97, 95, 60, 59, 58, 57, 56, 20]
    chunks = plan_chunks(lengths, max_chunks=4)
    assert chunks == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]]  # the last chunk keeps >= 4 rows
    assert plan_chunks(lengths, max_chunks=1) == [list(range(10))]


def test_step_plans_cover_each_sample_once_per_epoch():
    lengths = [5, 9, 3, 7, 7, 2, 8, 4, 6, 1]
    plans = epoch_steps(lengths, epoch=0, seed=1, global_batch=4, micro_batch=2, world_size=1, rank=0)
    assert [len(p.examples) for p in plans] == [4, 4, 2]
    assert Counter(i for p in plans for i in p.examples) == Counter(range(10))
    for plan in plans:
        assert all(len(m) <= 2 for m in plan.micro_batches)
        flat = [i for m in plan.micro_batches for i in m]
        assert [lengths[i] for i in flat] == sorted((lengths[i] for i in flat), reverse=True)  # length-grouped
    again = epoch_steps(lengths, epoch=0, seed=1, global_batch=4, micro_batch=2, world_size=1, rank=0)
    other = epoch_steps(lengths, epoch=1, seed=1, global_batch=4, micro_batch=2, world_size=1, rank=0)
    assert again == plans and [p.examples for p in other] != [p.examples for p in plans]


def test_ranks_get_equal_micro_batch_counts_and_disjoint_samples():
    lengths = list(range(1, 12))  # 11 samples, 2 ranks: one sample left out of the epoch
    per_rank = [epoch_steps(lengths, epoch=0, seed=3, global_batch=6, micro_batch=2, world_size=2, rank=r)
                for r in (0, 1)]
    for left, right in zip(*per_rank):
        assert len(left.micro_batches) == len(right.micro_batches)
        mine = {i for m in left.micro_batches for i in m}
        theirs = {i for m in right.micro_batches for i in m}
        assert not mine & theirs and mine | theirs == set(left.examples)
    assert sum(len(p.examples) for p in per_rank[0]) == 10
    with pytest.raises(CloError, match="cannot be split evenly"):
        epoch_steps(lengths, epoch=0, seed=3, global_batch=5, micro_batch=2, world_size=2, rank=0)


def test_steps_run_across_epochs_and_resume_mid_way():
    lengths = [3] * 10
    assert total_steps(10, epochs=2, max_steps=None, global_batch=4, world_size=1) == 6
    assert total_steps(10, epochs=0.5, max_steps=None, global_batch=4, world_size=1) == 2
    every = list(iterate_steps(lengths, total=6, seed=0, global_batch=4, micro_batch=4, world_size=1, rank=0))
    assert [s for s, _ in every] == list(range(6)) and [p.epoch for _, p in every] == [0, 0, 0, 1, 1, 1]
    tail = list(iterate_steps(lengths, total=6, seed=0, global_batch=4, micro_batch=4, world_size=1, rank=0, start=4))
    assert tail == every[4:]
