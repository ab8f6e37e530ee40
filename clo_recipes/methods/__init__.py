"""Training objectives as pure functions over per-sequence log-probabilities.

Nothing here touches a model: `logps` turns logits into summed answer log-probs, and
`sft`, `dpo` and `clo` turn those into losses and metrics. Every loss is a mean whose
denominator can be given explicitly (`num_tokens`, `num_pairs`), so a training loop can make
the loss of an optimizer step exact under any split into micro-batches, accumulation steps
and processes.
"""
