"""Pairwise LLM judge over an OpenAI-compatible chat endpoint (hosted API or a local vLLM).

Every prompt is judged twice, once with each model's answer in first position, so a judge
that prefers a position cannot tilt the result; each verdict scores the model 1 (win),
0.5 (tie) or 0 (loss) and a prompt's score is the mean of its two verdicts. The judge prompt
tells the judge that an answer not written in the prompt's language fails the instruction,
which is how the paper's multilingual AlpacaEval treats wrong-language answers.

Verdicts are cached in SQLite keyed by the judge model (`ChatClient.identity`: the served name
at an endpoint, the served weights' identity for a managed server) and the exact messages sent,
so a re-run (or another run comparing the same answers) costs nothing, and another judge
never reuses them.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from clo_recipes.chat_endpoint import ChatEndpoint, EndpointError

from .stats import share_with_interval


SYSTEM_PROMPT = (
    "You are an impartial judge comparing two AI assistants' answers to the same user "
    "instruction. You reply with a single word."
)

USER_PROMPT = """The user wrote the instruction below in {language}. A good answer follows the instruction, is correct and helpful, and is written in {language}. An answer written mainly in a language other than {language} fails the instruction and loses to an answer written in {language}, whatever its content. Judge content, not position or length.

[Instruction]
{prompt}

[Answer A]
{answer_a}

[Answer B]
{answer_b}

Which answer is better? Reply with exactly one word: A, B, or tie."""

Verdict = str  # "a", "b" or "tie"


class JudgeUnavailable(Exception):
    """The judge cannot be used at all (unreachable, key rejected, unknown model)."""


class TooLongForJudge(Exception):
    """One judge prompt exceeds the judge's context: that verdict is unreadable, the rest go on."""


@dataclass(frozen=True)
class Comparison:
    """One prompt answered by the judged model and by the baseline."""

    id: str
    lang: str
    prompt: str
    answer: str  # the judged model's answer
    baseline_answer: str


def build_messages(prompt: str, answer_a: str, answer_b: str, language: str) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_PROMPT.format(
            language=language, prompt=prompt, answer_a=answer_a or "(empty answer)",
            answer_b=answer_b or "(empty answer)")},
    ]


def parse_verdict(text: str) -> Verdict | None:
    """The judge's choice, from the bare word it was asked for or a short sentence around it."""
    cleaned = re.sub(r"[^a-z ]", " ", text.lower()).split()
    if not cleaned:
        return None
    if cleaned[0] in ("a", "b", "tie"):
        return cleaned[0]
    if "tie" in cleaned:
        return "tie"
    named = re.search(r"\b(?:answer|assistant|output)\s+([ab])\b", " ".join(cleaned))
    return named.group(1) if named else None


def cache_key(model: str, messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps([model, messages], ensure_ascii=False, sort_keys=True).encode()).hexdigest()


class VerdictCache:
    """SQLite store of raw judge replies, shared by every run that uses the same cache dir.

    Used from one thread only (the judge's worker threads hand results back to the caller).
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(path)
        self.connection.execute(
            "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, model TEXT, reply TEXT, created REAL)"
        )
        self.connection.commit()

    def get(self, key: str) -> str | None:
        row = self.connection.execute("SELECT reply FROM verdicts WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, model: str, reply: str) -> None:
        self.connection.execute(
            "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?)", (key, model, reply, time.time())
        )
        self.connection.commit()

    def close(self) -> None:
        self.connection.close()


class ChatClient:
    """The judge's view of the shared chat client: greedy, a few tokens, and any failure that
    outlives the retries makes the judge unavailable (its stage is optional, so a refused
    connection is not waited for)."""

    def __init__(self, endpoint: str, model: str, api_key: str | None, *, timeout_s: float = 120.0,
                 retries: int = 3, max_tokens: int = 16, identity: str | None = None):
        self.endpoint = ChatEndpoint(endpoint, model, api_key, timeout_s=timeout_s, max_retries=retries,
                                     max_tokens=max_tokens, retry_refused=False)
        self.model = model
        # What the verdict cache keys on: the served name for a server the user runs; for a
        # managed server (whose requests always name `clo-eval`) what it serves.
        self.identity = identity or model

    def complete(self, messages: list[dict]) -> str:
        try:
            return self.endpoint.complete(messages)
        except EndpointError as error:
            url = self.endpoint.url
            if error.kind == "too_long":
                raise TooLongForJudge(error.detail) from None
            raise JudgeUnavailable({
                "auth": f"judge endpoint rejected the API key ({error.detail})",
                "not_found": f"judge endpoint or model not found (at {url}, model {self.model!r}): {error.detail}",
                "unreachable": f"judge endpoint {url} unreachable: {error.detail}",
                "bad_reply": f"judge endpoint sent a reply that is not a chat completion: {error.detail}",
            }.get(error.kind, f"judge request failed after {error.attempts} attempts ({error.detail})")) from None


def model_score(verdict: Verdict | None, model_first: bool) -> float:
    """The judged model's score from one verdict; an unreadable verdict counts as a tie."""
    if verdict in (None, "tie"):
        return 0.5
    return 1.0 if (verdict == "a") == model_first else 0.0


def judge_comparisons(comparisons: Sequence[Comparison], client: ChatClient, cache: VerdictCache,
                      language_names: dict[str, str], *, concurrency: int = 4) -> tuple[list[dict], dict]:
    """Judge every comparison in both orders. Returns (one record per comparison, counters).

    Cached replies are reused; new ones are written to the cache as they arrive, so an
    interrupted judge loses nothing it already paid for. Identical answers are ties without
    asking the judge. A prompt too long for the judge's context gets no verdict (counted in
    `too_long` and as unreadable, not cached: a judge with a longer context can answer it).
    """
    jobs: dict[str, list[dict]] = {}  # cache key -> messages (unique requests)
    plan: list[tuple[Comparison, str | None, str | None]] = []
    for item in comparisons:
        if item.answer.strip() == item.baseline_answer.strip():
            plan.append((item, None, None))
            continue
        language = language_names.get(item.lang, item.lang)
        keys = []
        for first, second in ((item.answer, item.baseline_answer), (item.baseline_answer, item.answer)):
            messages = build_messages(item.prompt, first, second, language)
            key = cache_key(client.identity, messages)
            jobs[key] = messages
            keys.append(key)
        plan.append((item, keys[0], keys[1]))

    replies = {key: reply for key in jobs if (reply := cache.get(key)) is not None}
    missing = [key for key in jobs if key not in replies]
    counters = {"requests": len(missing), "cached": len(replies), "identical": sum(1 for p in plan if p[1] is None),
                "too_long": 0}
    if missing:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = {pool.submit(client.complete, jobs[key]): key for key in missing}
            try:
                for future in as_completed(futures):
                    key = futures[future]
                    try:
                        replies[key] = future.result()
                    except TooLongForJudge:
                        replies[key] = ""
                        counters["too_long"] += 1
                        continue
                    cache.put(key, client.identity, replies[key])
            except JudgeUnavailable:
                for pending in futures:
                    pending.cancel()
                raise

    records = []
    for item, key_first, key_second in plan:
        if key_first is None:
            verdicts = ("tie", "tie")
            scores = (0.5, 0.5)
        else:
            verdicts = (parse_verdict(replies[key_first]), parse_verdict(replies[key_second]))
            scores = (model_score(verdicts[0], True), model_score(verdicts[1], False))
        records.append({
            "id": item.id, "lang": item.lang,
            "verdict_model_first": verdicts[0], "verdict_model_second": verdicts[1],
            "score": (scores[0] + scores[1]) / 2,
            "scores": list(scores),
        })
    counters["unreadable"] = sum(
        (r["verdict_model_first"] is None) + (r["verdict_model_second"] is None) for r in records
    )
    return records, counters


def win_rates(records: Iterable[dict]) -> dict[str, dict]:
    """Per prompt language: win rate (ties half) with a 95% Wilson interval over prompts
    (conservative for fractional scores, see `stats.wilson_interval`) and verdict counts.

    `consistent` is the share of prompts whose two orders agree; a low value means the judge
    mostly follows position, and the win rate is then close to 0.5 by construction.
    """
    by_lang: dict[str, list[dict]] = {}
    for record in records:
        by_lang.setdefault(record["lang"], []).append(record)
    result = {}
    for lang, rows in by_lang.items():
        stats = share_with_interval(sum(row["score"] for row in rows), len(rows))
        verdict_scores = [score for row in rows for score in row["scores"]]
        result[lang] = {
            "win_rate": stats["share"], "low": stats["low"], "high": stats["high"], "n": stats["n"],
            "wins": verdict_scores.count(1.0), "ties": verdict_scores.count(0.5),
            "losses": verdict_scores.count(0.0),
            "consistent": sum(row["scores"][0] == row["scores"][1] for row in rows) / len(rows),
        }
    return result
