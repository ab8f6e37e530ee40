"""Which way answer log-probs are computed, from the vocabulary size alone (no torch: `plan`
and the memory estimate use it, training follows it).

- streamed (`methods/streamed.py`): the output projection and log-softmax over chunks of
  `chunk_tokens` answer tokens (a quarter of a call's answer tokens, so a chunk holds between
  `CHUNK_ELEMENTS` and `MAX_CHUNK_ELEMENTS` logits);
- full logits (`methods/logps.py:answer_logps`): one `[answer tokens, vocab]` tensor, kept
  where it is small and the streamed path's per-chunk bookkeeping would cost more than it
  saves (`benchmarks/logps_memory.py` measured the crossing point, see docs/performance.md).
"""

from __future__ import annotations

# Below this vocabulary the full logits are cheap and no slower; from it on, streamed.
STREAM_MIN_VOCAB = 32768
# Numbers per chunk of logits, at least: 3 * 2**23 fp32 numbers are 96 MiB per buffer (196 rows
# at 128k). benchmarks/logps_memory.py at 512 answer tokens, vocabulary 128256 (docs/performance.md):
# 130 rows peaked 0.16x the full path in 1.2x its time, 196 rows 0.20x in 1.0x, 256 rows 0.24x;
# the largest chunk that keeps the peak within 0.2x of the full logits at 512 tokens.
CHUNK_ELEMENTS = 3 << 23
# Longer answers take longer chunks: a quarter of a call's answer tokens, up to 2**26 numbers
# (523 rows at 128k, 0.5 GiB of chunk working set in bf16). At 2048 answer tokens 196-row chunks
# cost 1.17x the full path's CPU time, 512-row chunks 0.99x (peaks 0.06x and 0.11x of its 2.96 GiB).
CHUNKS_PER_CALL = 4
MAX_CHUNK_ELEMENTS = 1 << 26
# Buffers of one chunk alive at its peak (logits in the compute dtype, their fp32 copy, the
# softmax turned into d logp / d logits in place, and the head's gradient input), in fp32 units.
CHUNK_BUFFERS = 3.5


def streams(vocab: int) -> bool:
    return vocab >= STREAM_MIN_VOCAB


def chunk_tokens(vocab: int, answer_tokens: int = 0) -> int:
    """Answer tokens per chunk of the streamed path, for a call with `answer_tokens` of them."""
    return chunk_rows(answer_tokens, *chunk_bounds(vocab))


def chunk_bounds(vocab: int) -> tuple[int, int]:
    """The fewest and the most answer tokens in one chunk at this vocabulary."""
    least = max(16, CHUNK_ELEMENTS // max(vocab, 1))
    return least, max(least, MAX_CHUNK_ELEMENTS // max(vocab, 1))


def chunk_rows(answer_tokens: int, least: int, most: int) -> int:
    """A quarter of the call's answer tokens, within [least, most] (most 0: always least)."""
    return min(max(least, answer_tokens // CHUNKS_PER_CALL), most) if most else least


def describe(vocab: int, answer_tokens: int = 0) -> str:
    """One line for `plan`: which path training and the reference stage take, and why."""
    if streams(vocab):
        least, most = chunk_bounds(vocab)
        size = f"{chunk_tokens(vocab, answer_tokens)} tokens at {answer_tokens:,} answer tokens" if answer_tokens \
            else f"{least}-{most} tokens"
        return (f"answer log-probs: streamed over chunks of {size} (a quarter of a call's answer tokens, "
                f"{least} to {most}; vocabulary {vocab:,}; no tokens x vocabulary logits are kept)")
    return (f"answer log-probs: full logits (vocabulary {vocab:,} < {STREAM_MIN_VOCAB:,}, where they are "
            "small and no slower)")
