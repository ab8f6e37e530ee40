"""Which way answer log-probs are computed, from the vocabulary size alone (no torch: `plan`
and the memory estimate use it, training follows it).

- streamed (`methods/streamed.py`): the output projection and log-softmax over chunks of
  `chunk_tokens` answer tokens, so a chunk's logits are at most `CHUNK_ELEMENTS` numbers;
- full logits (`methods/logps.py:answer_logps`): one `[answer tokens, vocab]` tensor, kept
  where it is small and the streamed path's per-chunk bookkeeping would cost more than it
  saves (`benchmarks/logps_memory.py` measured the crossing point, see docs/performance.md).
"""

from __future__ import annotations

# Below this vocabulary the full logits are cheap and no slower; from it on, streamed.
STREAM_MIN_VOCAB = 32768
# Numbers per chunk of logits: 3 * 2**23 fp32 numbers are 96 MiB per buffer (196 rows at 128k).
# benchmarks/logps_memory.py at 512 answer tokens, vocabulary 128256 (docs/performance.md):
# 130 rows peaked 0.16x the full path in 1.2x its time, 196 rows 0.20x in 1.0x, 256 rows 0.24x;
# the largest chunk that keeps the peak within 0.2x of the full logits at 512 tokens.
CHUNK_ELEMENTS = 3 << 23
# Buffers of one chunk alive at its peak (logits in the compute dtype, their fp32 copy, the
# softmax turned into d logp / d logits in place, and the head's gradient input), in fp32 units.
CHUNK_BUFFERS = 3.5


def streams(vocab: int) -> bool:
    return vocab >= STREAM_MIN_VOCAB


def chunk_tokens(vocab: int) -> int:
    """Answer tokens per chunk of the streamed path."""
    return max(16, CHUNK_ELEMENTS // max(vocab, 1))


def describe(vocab: int) -> str:
    """One line for `plan`: which path training and the reference stage take, and why."""
    if streams(vocab):
        return (f"answer log-probs: streamed over chunks of {chunk_tokens(vocab)} tokens "
                f"(vocabulary {vocab:,}; no tokens x vocabulary logits are kept)")
    return (f"answer log-probs: full logits (vocabulary {vocab:,} < {STREAM_MIN_VOCAB:,}, where they are "
            "small and no slower)")
