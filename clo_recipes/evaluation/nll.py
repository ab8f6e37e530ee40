"""Held-out answer likelihood: how well a model predicts the reference answers it never saw.

For every held-out pair (the pairs stage's `eval.jsonl`) the reference answer is scored given
its query, rendered exactly as in training (`training.chat.ChatRenderer`: the model's chat
template, prompt tokens masked, the end-of-turn token part of the answer): the target-language
answer `y_l` given `x_l`, and the English answer `y_en` given `x_en`.

The suite's number per language is the token-weighted mean NLL in nats per answer token
(summed NLL over all answers / their token count, the usual corpus perplexity convention), and
perplexity = exp(mean NLL). Its 95% interval is a percentile bootstrap over samples (whole
answers are resampled, so the interval reflects which prompts were drawn, not tokens as if
independent), with a fixed seed: the same model and pairs always give the same interval.

Target NLL going down means the model writes the reference target-language answers more
readily; English NLL staying flat means English was kept. No judge, no generation.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .stats import ALPHA, BOOTSTRAP_RESAMPLES, bootstrap_ratio_interval


def summarise_nll(nlls: Sequence[float], tokens: Sequence[int]) -> dict[str, Any]:
    """`{"nll", "low", "high", "ppl", "ppl_low", "ppl_high", "n", "tokens"}` for one language."""
    if not nlls:
        return {"nll": None, "low": None, "high": None, "ppl": None, "ppl_low": None, "ppl_high": None,
                "n": 0, "tokens": 0}
    total_tokens = int(sum(tokens))
    mean = float(sum(nlls)) / total_tokens
    low, high = bootstrap_ratio_interval(nlls, tokens)
    return {"nll": mean, "low": low, "high": high, "ppl": math.exp(mean), "ppl_low": math.exp(low),
            "ppl_high": math.exp(high), "n": len(nlls), "tokens": total_tokens,
            "interval": f"{int((1 - ALPHA) * 100)}% sample bootstrap ({BOOTSTRAP_RESAMPLES}, seeded)"}


def answer_nlls(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], *, batch_size: int = 8,
                max_length: int | None = None, progress: Any = None) -> list[tuple[float, int] | None]:
    """(summed NLL in nats, answer tokens) of each answer given its query, through the chat
    template; None for a pair longer than `max_length` (training drops those too)."""
    import torch

    from clo_recipes.training.batch import pad_left
    from clo_recipes.training.chat import ChatRenderer
    from clo_recipes.training.streaming import choose_path, sequence_logps

    rendered = ChatRenderer(tokenizer).render_many(list(pairs)) if pairs else []
    keep = [i for i, seq in enumerate(rendered) if not max_length or len(seq) <= max_length]
    results: list[tuple[float, int] | None] = [None] * len(rendered)
    order = sorted(keep, key=lambda i: -len(rendered[i]))  # similar lengths share a batch
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    model.eval()
    path = choose_path(model)  # as training and the reference stage: streamed at large vocabularies
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        input_ids, attention_mask, position_ids, labels = pad_left([rendered[i] for i in batch], pad_id)
        inputs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
                  "position_ids": position_ids.to(device), "use_cache": False}
        with torch.inference_mode():
            logps = sequence_logps(model, inputs, labels.to(device), path)
        for row, index in enumerate(batch):
            results[index] = (-float(logps.sum[row]), int(logps.count[row]))
        if progress is not None:
            progress.update(len(batch))
    return results


def nll_suite(model: Any, tokenizer: Any, rows: Sequence[dict], target: str, *, batch_size: int = 8,
              max_length: int | None = None, progress: Any = None) -> tuple[dict, list[dict]]:
    """The suite's metrics `{lang: summary}` (target language and `en`) and per-sample details."""
    fields = {target: ("x_l", "y_l"), "en": ("x_en", "y_en")}
    metrics: dict[str, dict] = {}
    details: list[dict] = []
    for lang, (x, y) in fields.items():
        scored = answer_nlls(model, tokenizer, [(row[x], row[y]) for row in rows], batch_size=batch_size,
                             max_length=max_length, progress=progress)
        kept = [(row, s) for row, s in zip(rows, scored) if s is not None]
        metrics[lang] = summarise_nll([s[0] for _, s in kept], [s[1] for _, s in kept])
        metrics[lang]["dropped_too_long"] = len(rows) - len(kept)
        details += [{"id": row["id"], "lang": lang, "nll": s[0], "tokens": s[1]} for row, s in kept]
    return metrics, details
