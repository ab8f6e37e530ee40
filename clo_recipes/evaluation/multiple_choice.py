"""Multiple-choice knowledge by log-likelihood, scored the way lm-evaluation-harness does.

Each option is a continuation of the question prompt; its score is the summed log-probability
of the continuation's tokens given the prompt (`acc` takes the argmax). `acc_norm` divides
each score by the option's length in characters first, as the harness does, so long options
are not penalised for having more tokens. Prompts are plain text (no chat template), again
as in the harness's default.

MC set format (one JSON object per line, UTF-8):
    {"id": "mc-001", "question": "...", "choices": ["...", "...", "...", "..."], "answer": 2}
`answer` is the 0-based index of the correct choice. Built-in sets live in
`clo_recipes/evaluation/mc_sets/<iso1>.jsonl` and share their ids across languages (parallel
questions), so English and target-language accuracy measure the same knowledge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from clo_recipes.errors import StageError
from clo_recipes.files import enumerate_records

BUILTIN = "builtin"
MC_SETS_DIR = Path(__file__).parent / "mc_sets"


@dataclass(frozen=True)
class MCQuestion:
    id: str
    question: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class MCSet:
    name: str  # "builtin" or the file's stem
    lang: str  # ISO 639-1
    path: Path
    questions: tuple[MCQuestion, ...]


def load_mc_file(path: Path) -> list[MCQuestion]:
    """Read and check an MC set; every problem names its line."""
    questions = []
    for number, row in enumerate_records(path):  # bad JSON / bytes: an error at the line
        where = f"{path}:{number}"
        try:
            question = MCQuestion(
                id=str(row["id"]),
                question=str(row["question"]),
                choices=tuple(str(choice) for choice in row["choices"]),
                answer=int(row["answer"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise StageError(
                f"{where}: not a multiple-choice question ({error})",
                hint='expected {"id": ..., "question": ..., "choices": [...], "answer": <0-based index>}',
            ) from None
        if len(question.choices) < 2 or not 0 <= question.answer < len(question.choices):
            raise StageError(f"{where}: needs 2+ choices and 0 <= answer < {len(question.choices)}")
        questions.append(question)
    if not questions:
        raise StageError(f"{path}: the multiple-choice set is empty")
    return questions


def builtin_path(lang: str) -> Path:
    return MC_SETS_DIR / f"{lang}.jsonl"


def file_language(path: Path, questions: Sequence[MCQuestion]) -> str:
    """A user set's language: a registry code ending the file name (`quiz.th.jsonl`,
    `th.jsonl`, `quiz_th.jsonl`), else the majority language-ID verdict on its questions."""
    from clo_recipes.recipe.languages import UnknownLanguage, get_language

    stem = path.name.removesuffix(".jsonl")
    for separator in (".", "_", "-"):
        tail = stem.rsplit(separator, 1)[-1]
        if len(tail) in (2, 3):
            try:
                return get_language(tail).iso1
            except UnknownLanguage:
                pass
    from .fidelity import detect_answer_languages

    votes: dict[str, int] = {}
    for code, _ in detect_answer_languages([q.question for q in questions]):
        votes[code] = votes.get(code, 0) + 1
    return max(votes, key=votes.get)


def resolve_mc_sets(entries: Sequence[str], target: str) -> tuple[list[MCSet], list[dict]]:
    """The sets named by `eval.mc_sets`, and the ones that cannot be run (with the reason).

    `builtin` means the shipped files for English and the target language; a language without
    a shipped file is reported as skipped rather than failing the whole evaluation.
    """
    sets: list[MCSet] = []
    skipped: list[dict] = []
    for entry in entries:
        if entry == BUILTIN:
            for lang in ("en", target):
                path = builtin_path(lang)
                if path.is_file():
                    sets.append(MCSet(BUILTIN, lang, path, tuple(load_mc_file(path))))
                else:
                    skipped.append({"set": BUILTIN, "lang": lang, "reason": f"no built-in MC set for '{lang}'"})
            continue
        path = Path(entry)
        if not path.is_file():
            raise StageError(f"multiple-choice set not found: {entry}", hint="check `eval.mc_sets`")
        questions = load_mc_file(path)
        sets.append(MCSet(path.name.removesuffix(".jsonl"), file_language(path, questions), path, tuple(questions)))
    return sets, skipped


def question_prompt(question: MCQuestion) -> str:
    """The harness's ARC-style zero-shot frame: the options are scored as the answer text."""
    return f"Question: {question.question}\nAnswer:"


def _bos_prefix(tokenizer: Any) -> list[int]:
    """[BOS] for tokenizers that add it by default (Llama, Mistral), so the model sees the
    start of a document the way it was trained; nothing for those that do not (Qwen)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    probe = tokenizer.encode("a", add_special_tokens=True)
    return [bos] if probe and probe[0] == bos else []


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation, split as the harness splits them.

    Trailing spaces of the context move to the continuation, then the whole string is encoded
    at once and the continuation is what follows the context's tokens, so tokens that merge
    across the boundary are encoded as the model would see them in running text.
    """
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    context_ids = tokenizer.encode(context, add_special_tokens=False)
    return context_ids, whole[len(context_ids) :]


def loglikelihoods(model: Any, tokenizer: Any, requests: Sequence[tuple[str, str]], *,
                   batch_size: int = 8, max_length: int | None = None,
                   progress: Any = None) -> list[tuple[float, int]]:
    """(summed log-probability, token count) of each continuation given its context;
    `progress.update(n)`, if given, hears of requests as they are scored."""
    import torch

    prefix = _bos_prefix(tokenizer)
    encoded = []
    for context, continuation in requests:
        context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
        if not continuation_ids:
            raise StageError(f"continuation {continuation!r} encodes to no tokens")
        ids = prefix + context_ids + continuation_ids
        if max_length and len(ids) > max_length + 1:
            ids = ids[-(max_length + 1) :]  # keep the end: the continuation and what precedes it
        encoded.append((ids, len(continuation_ids)))

    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    device = next(model.parameters()).device
    results: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    model.eval()
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        # Inputs are the sequence minus its last token; position t predicts token t + 1.
        inputs = [encoded[i][0][:-1] for i in batch]
        width = max(len(ids) for ids in inputs)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(inputs):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        for row, index in enumerate(batch):
            ids, count = encoded[index]
            targets = torch.tensor(ids[-count:])
            positions = torch.arange(len(ids) - 1 - count, len(ids) - 1)
            total = logprobs[row, positions, targets].sum().item()
            results[index] = (total, count)
        if progress is not None:
            progress.update(len(batch))
    return results


def score_questions(model: Any, tokenizer: Any, questions: Sequence[MCQuestion], *,
                    batch_size: int = 8, max_length: int | None = None, progress: Any = None) -> dict:
    """Accuracy (`acc`) and length-normalised accuracy (`acc_norm`) over the questions, with
    each question's option scores for inspection."""
    requests = [(question_prompt(q), " " + choice) for q in questions for choice in q.choices]
    scores = iter(loglikelihoods(model, tokenizer, requests, batch_size=batch_size, max_length=max_length,
                                 progress=progress))
    details = []
    correct = correct_norm = 0
    for question in questions:
        logliks = [next(scores)[0] for _ in question.choices]
        normalised = [ll / len(choice) for ll, choice in zip(logliks, question.choices)]
        pick = max(range(len(logliks)), key=logliks.__getitem__)
        pick_norm = max(range(len(normalised)), key=normalised.__getitem__)
        correct += pick == question.answer
        correct_norm += pick_norm == question.answer
        details.append({"id": question.id, "answer": question.answer, "pick": pick,
                        "pick_norm": pick_norm, "logliks": logliks})
    n = len(questions)
    return {
        "acc": correct / n,
        "acc_norm": correct_norm / n,
        "acc_stderr": _binomial_stderr(correct / n, n),
        "acc_norm_stderr": _binomial_stderr(correct_norm / n, n),
        "n": n,
        "details": details,
    }


def _binomial_stderr(share: float, n: int) -> float:
    """Standard error of an accuracy, with the harness's n - 1 (sample) convention."""
    return math.sqrt(share * (1 - share) / (n - 1)) if n > 1 else 0.0
