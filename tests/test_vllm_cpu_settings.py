"""How a managed vLLM server is sized and threaded on CPU: the KV cache from the model's shape
and the stage's requests, all cores for the engine, the user's environment left alone."""

from __future__ import annotations

import json
from types import SimpleNamespace

from clo_recipes.evaluation.serving import PROMPT_TOKENS, SPARE_TOKENS, cpu_kv_cache_bytes
from clo_recipes.evaluation.vllm_server import ServeSpec, cpu_thread_env


def write_config(folder, **overrides):
    config = {"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
              "num_hidden_layers": 2, "intermediate_size": 64, "vocab_size": 100,
              "max_position_embeddings": 4096, **overrides}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_kv_cache_holds_every_request_in_flight(tmp_path):
    source = write_config(tmp_path)
    settings = SimpleNamespace(max_model_len=64, concurrency=3)
    # keys and values x 2 layers x 2 kv heads x head_dim 32/4 x 4 bytes = 256 bytes per token
    assert cpu_kv_cache_bytes(source, "float32", settings, 10) == 256 * (3 * (PROMPT_TOKENS + 10) + SPARE_TOKENS)
    assert cpu_kv_cache_bytes(source, "bfloat16", settings, 10) == 128 * (3 * (PROMPT_TOKENS + 10) + SPARE_TOKENS)


def test_kv_cache_holds_one_sequence_of_the_served_context(tmp_path):
    # plus spare blocks: vLLM refuses a cache of exactly one sequence (seen with concurrency 1)
    source = write_config(tmp_path, head_dim=16)  # an explicit head_dim wins over hidden/heads
    settings = SimpleNamespace(max_model_len=None, concurrency=1)
    assert cpu_kv_cache_bytes(source, "float32", settings, 10) == 2 * 2 * 2 * 16 * 4 * (4096 + SPARE_TOKENS)


def test_unreadable_config_leaves_vllms_default(tmp_path):
    assert cpu_kv_cache_bytes(str(tmp_path), "float32", SimpleNamespace(max_model_len=None, concurrency=1), 8) is None


def test_kv_cache_bytes_reach_the_command():
    args = ServeSpec(model="m", kv_cache_bytes=1234).command("python", 8000)
    assert args[args.index("--kv-cache-memory-bytes") + 1] == "1234"
    assert "--kv-cache-memory-bytes" not in ServeSpec(model="m").command("python", 8000)


def test_thread_env_uses_every_core_unless_the_user_set_it():
    env = cpu_thread_env({})
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert cpu_thread_env({"VLLM_CPU_NUM_OF_RESERVED_CPU": "1", "VLLM_CPU_OMP_THREADS_BIND": "0"}) == {}
