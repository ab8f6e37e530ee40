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
# Numbers per chunk of logits: 2**24 fp32 numbers are 64 MiB per buffer (128 rows at 128k).
CHUNK_ELEMENTS = 1 << 24
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
