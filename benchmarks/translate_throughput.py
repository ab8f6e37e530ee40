"""Translation throughput: naive fixed-order batching against the engine's length-grouped
batching, and a cold cache against a warm one, with the `hf` backend on a small seq2seq model
built locally.

The sets: N distinct English sentences whose lengths vary tenfold (4 to 40 words), shuffled,
as instruction data comes, in two length distributions:
- `uniform`: every length from 4 to 40 words equally common;
- `log-uniform`: each doubling of length equally common (many short sentences, few long
  ones), closer to segmented instruction data (list items, short replies, some paragraphs).
Both batchings translate the same set with the same loaded model and `batch_size`; the
script checks they produce the same translations. Runs alternate (naive, grouped, naive,
grouped, ...) and the best of each is kept. Then the log-uniform set runs through the SQLite
translation cache twice: cold (translate and store) and warm (a fresh translator that only
reads the cache; it never loads a model).

Throughput is sentences per CPU-second of a single-threaded process (`time.process_time`):
on a dedicated core that is sentences/s; on a shared machine it is the honest number, since
wall time there depends on the neighbours.

    HF_HUB_OFFLINE=1 python benchmarks/translate_throughput.py [--sentences 160] [--batch-size 16]

The model is an M2M100 with random weights (d_model 128, 2+2 layers): its speed behaves like
a real MT model's, but it never emits an end-of-sequence token, so each batch generates up to
the backend's length cap (3x the batch's longest input + 16 tokens), which stands in for a
real model stopping when its longest translation in the batch is done.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

WORDS = ("the cat sits on the mat and the dog runs in the park while water boils at one hundred "
         "degrees please write a short poem about the sea wind and stars translation models read "
         "sentences and write them in another language").split()
DISTRIBUTIONS = ("uniform", "log-uniform")


def word_count(index: int, count: int, distribution: str) -> int:
    """The length of sentence `index` of `count`: 4 ... 40 words."""
    position = index / max(count - 1, 1)
    return round(4 + 36 * position) if distribution == "uniform" else round(4 * 10 ** position)


def sentences(count: int, distribution: str, seed: int = 0) -> list[str]:
    """`count` distinct sentences of 4 ... 40 words in `distribution`, shuffled."""
    rng = random.Random(seed)
    out = [f"{index}: " + " ".join(rng.choice(WORDS) for _ in range(word_count(index, count, distribution))).capitalize() + "."
           for index in range(count)]
    rng.shuffle(out)
    return out


def timed(function):
    """(result, seconds of CPU time this process spent). CPU time, not wall time: on a shared
    machine other processes stretch wall time at random, but not the work done here."""
    started = time.process_time()
    result = function()
    return result, time.process_time() - started


def compare_batching(translator, texts: list[str], repeats: int) -> dict:
    from clo_recipes.translation.pipeline import fixed_order_batches, length_grouped_batches, translate_texts

    def run(batching):
        return translate_texts(texts, translator, src="en", tgt="it", cache=None, max_segment_chars=400,
                               batching=batching, progress=False)

    times: dict[str, list[float]] = {"naive": [], "grouped": []}
    outputs, batches = {}, {}
    for _ in range(repeats):
        for name, batching in (("naive", fixed_order_batches), ("grouped", length_grouped_batches)):
            (outputs[name], stats), seconds = timed(lambda: run(batching))
            times[name].append(seconds)
            batches[name] = stats.batches
    same = sum(a == b for a, b in zip(outputs["naive"], outputs["grouped"]))
    return {"times": times, "batches": batches, "same": same}


def compare_cache(model: Path, loaded, texts: list[str], batch_size: int, folder: Path) -> dict:
    from clo_recipes.translation.cache import TranslationCache
    from clo_recipes.translation.hf_seq2seq import Seq2SeqTranslator
    from clo_recipes.translation.pipeline import translate_texts

    with TranslationCache(folder / "cache.sqlite") as cache:
        cold = Seq2SeqTranslator(str(model), batch_size=batch_size, max_new_tokens=512)
        cold._model, cold._tokenizer, cold.device = loaded._model, loaded._tokenizer, loaded.device  # loading not timed
        (_, cold_stats), cold_s = timed(lambda: translate_texts(texts, cold, src="en", tgt="it", cache=cache,
                                                                max_segment_chars=400, progress=False))
        warm = Seq2SeqTranslator(str(model), batch_size=batch_size, max_new_tokens=512)
        (_, warm_stats), warm_s = timed(lambda: translate_texts(texts, warm, src="en", tgt="it", cache=cache,
                                                                max_segment_chars=400, progress=False))
    assert warm_stats.translated == 0 and warm._model is None
    return {"cold_s": cold_s, "warm_s": warm_s, "cold_translated": cold_stats.translated,
            "warm_translated": warm_stats.translated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from clo_recipes.translation.hf_seq2seq import Seq2SeqTranslator
    from clo_recipes.translation.tiny import build_tiny_m2m100

    torch.set_num_threads(args.threads)
    sets = {name: sentences(args.sentences, name) for name in DISTRIBUTIONS}
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_m2m100(Path(tmp) / "m2m100", d_model=128, layers=2)
        translator = Seq2SeqTranslator(str(model), batch_size=args.batch_size, max_new_tokens=512)
        translator.translate(sets["uniform"][:2], "en", "it")  # load and warm up outside the timings
        results = {name: compare_batching(translator, texts, args.repeats) for name, texts in sets.items()}
        cache = compare_cache(model, translator, sets["log-uniform"], args.batch_size, Path(tmp))

    print(f"{args.sentences} sentences per set, batch size {args.batch_size}, {args.threads} CPU thread(s), "
          f"tiny M2M100 (d_model 128, 2+2 layers), best of {args.repeats}, CPU time")
    print()
    print("| lengths | characters | batching | batches | CPU s (each run) | sentences/s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name, texts in sets.items():
        chars = sorted(len(text) for text in texts)
        result = results[name]
        naive, grouped = min(result["times"]["naive"]), min(result["times"]["grouped"])
        span = f"{chars[0]}-{chars[-1]} (median {chars[len(chars) // 2]})"
        for label, key, best in (("naive, fixed order", "naive", naive), ("length-grouped", "grouped", grouped)):
            runs = ", ".join(f"{t:.1f}" for t in result["times"][key])
            speedup = f"**{naive / grouped:.2f}x**" if key == "grouped" else "1.00x"
            print(f"| {name} | {span} | {label} | {result['batches'][key]} | {runs} | "
                  f"{len(texts) / best:.2f} | {speedup} |")
        print(f"|  |  | identical translations | {result['same']}/{len(texts)} |  |  |  |")
    print()
    count = len(sets["log-uniform"])
    print("| cache (log-uniform set) | CPU s | sentences/s | segments translated |")
    print("|---|---|---|---|")
    print(f"| cold: translate + store | {cache['cold_s']:.3f} | {count / cache['cold_s']:.1f} | {cache['cold_translated']} |")
    print(f"| warm: read only, no model load | {cache['warm_s']:.4f} | {count / cache['warm_s']:.0f} | "
          f"{cache['warm_translated']} |")
    print(f"warm run {cache['cold_s'] / cache['warm_s']:.0f}x faster than cold (target >= 50x); "
          "length-grouped target >= 2x")


if __name__ == "__main__":
    main()
