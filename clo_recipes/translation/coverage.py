"""Language coverage: can this translator produce the recipe's language? Answered at plan time
(the stage table names `check_recipe` as the translate stage's check; the backend registry,
`recipe/backends.py`, names each backend's check).

The `local` backend's engines say which pairs they ship in their package files (`local_mt`).

Pure file and name logic, no torch: the seq2seq family is recognised from the model id
(`m2m100`, `nllb`, `madlad`, `opus-mt`), or, for a local folder or a model already in the
hub cache, from its `config.json`. Each family's codes come from the language registry, so
the check and the backend (`hf_seq2seq`) agree by construction.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from clo_recipes.errors import CloError
from clo_recipes.files import enumerate_records
from clo_recipes.recipe.backends import BACKENDS, load_function
from clo_recipes.recipe.languages import Language, UnknownLanguage, all_languages, get_language

Family = Literal["m2m100", "nllb", "madlad", "opus-mt"]
FAMILIES: tuple[Family, ...] = ("m2m100", "nllb", "madlad", "opus-mt")

# `Helsinki-NLP/opus-mt-en-it`, `Helsinki-NLP/opus-mt-tc-big-en-it`, `opus-mt-en-ROMANCE`.
_OPUS_PAIR = re.compile(r"opus-mt-(?:tc-(?:big|base)-)?([A-Za-z_+]+)-([A-Za-z_+]+)$")


def family_code(family: Family, language: Language) -> str | None:
    """The code `family` uses for `language`, or None when it cannot produce it."""
    if family == "m2m100":
        return language.m2m100
    if family == "nllb":
        return language.flores
    if family == "madlad":
        return language.madlad
    return language.iso1  # opus-mt names carry ISO 639-1 codes (or a group name)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _config_files(model: str, revision: str | None) -> tuple[dict, dict]:
    """config.json and tokenizer_config.json of a local folder or of a hub-cached model."""
    folder = Path(model)
    if folder.is_dir():
        return _read_json(folder / "config.json"), _read_json(folder / "tokenizer_config.json")
    try:
        from huggingface_hub import try_to_load_from_cache  # no network: cache lookup only
    except ImportError:
        return {}, {}
    found = []
    for name in ("config.json", "tokenizer_config.json"):
        try:
            path = try_to_load_from_cache(model, name, revision=revision)
        except Exception:  # noqa: BLE001 - an id that is not a valid repo name
            path = None
        found.append(_read_json(Path(path)) if isinstance(path, str) else {})
    return found[0], found[1]


def detect_family(model: str, revision: str | None = None) -> Family | None:
    """The seq2seq family of a translator model id or folder, or None if unrecognised."""
    name = model.lower()
    for marker, family in (("nllb", "nllb"), ("m2m100", "m2m100"), ("m2m_100", "m2m100"),
                           ("madlad", "madlad"), ("opus-mt", "opus-mt")):
        if marker in name:
            return family  # type: ignore[return-value]
    config, tokenizer_config = _config_files(model, revision)
    model_type = str(config.get("model_type", ""))
    tokenizer_class = str(tokenizer_config.get("tokenizer_class", ""))
    if model_type == "m2m_100":
        return "nllb" if "nllb" in tokenizer_class.lower() else "m2m100"
    if model_type == "marian":
        return "opus-mt"
    if model_type == "t5" and "madlad" in str(config.get("_name_or_path", "")).lower():
        return "madlad"
    return None


def opus_target(model: str) -> str | None:
    """The single target code in an opus-mt name (`it` in `opus-mt-en-it`); None for a group
    (`ROMANCE`, `mul`, `gem`), a language the registry does not know, or no language pair."""
    match = _OPUS_PAIR.search(model.rstrip("/").split("/")[-1])
    if not match:
        return None
    target = match.group(2)
    if re.fullmatch(r"[a-z]{2}", target):
        return target
    if re.fullmatch(r"[a-z]{3}", target):  # an ISO 639-3 language, or a group like `mul`, `gem`
        try:
            return get_language(target).iso3
        except UnknownLanguage:
            return None
    return None


def supported_codes(family: Family) -> list[str]:
    """Registry languages (ISO 639-1) the family can produce."""
    return [language.iso1 for language in all_languages() if family_code(family, language)]


def _check_hf(translation: Any, language: Language) -> None:
    family = detect_family(translation.model, translation.revision)
    if family is None:
        raise CloError(
            f"translation.model {translation.model!r} is not a seq2seq translator this engine "
            "knows the language codes of",
            hint="use an M2M100, NLLB-200, MADLAD-400 or Helsinki-NLP/opus-mt model, or "
                 "backend 'hf-causal' / 'openai' for an LLM translator",
        )
    if family == "opus-mt":
        target = opus_target(translation.model)
        if target is not None and target not in (language.iso1, language.iso3):
            raise CloError(
                f"translation.model {translation.model!r} translates into {target!r}, "
                f"not {language.name} ({language.iso1})",
                hint=f"use Helsinki-NLP/opus-mt-en-{language.iso1} if it exists, or an M2M100/NLLB model",
            )
        return
    if family_code(family, language) is None:
        raise CloError(
            f"translation.model {translation.model!r} ({family}) cannot translate into "
            f"{language.name} ({language.iso1})",
            hint=f"{family} supports: {', '.join(supported_codes(family))}; "
                 "NLLB-200 and MADLAD-400 cover every registry language",
        )


def check_memory(translation: Any, language: Language) -> None:
    """A JSONL translation memory must carry the target language (first record checked).

    A file that is not there yet (written by an earlier step of the user's pipeline) is the
    translate stage's to report; TMX languages are checked when the file is read."""
    path = Path(translation.memory_file)
    if not path.is_file() or path.suffix.lower() != ".jsonl":
        return
    first = next(enumerate_records(path), None)  # bad JSON / bytes: an error naming the line
    if first is None:
        raise CloError(f"translation memory {path} is empty")
    record = first[1]
    if language.iso1 not in record:
        codes = [key for key in record if key != "en"]
        raise CloError(
            f"translation memory {path} has no {language.iso1!r} field",
            hint=f"its first record has: {', '.join(sorted(record))}; "
                 f"records look like {{\"en\": ..., \"{language.iso1}\": ...}}"
                 + (f" (this file translates into {', '.join(codes)})" if codes else ""),
        )


def check_local(translation: Any, language: Language) -> None:
    """The engine is installed and has en->target (and target->en for the round trip)."""
    from .local_mt import check_pair, get_engine  # file reads only: the engine is not loaded

    engine = get_engine(translation.model)
    check_pair(engine, "en", language.iso1)
    if translation.round_trip:
        check_pair(engine, language.iso1, "en", " for translation.round_trip")


def _check_round_trip_hf(translation: Any) -> None:
    if translation.round_trip and detect_family(translation.model, translation.revision) == "opus-mt":
        raise CloError(
            f"translation.round_trip translates back into English, which {translation.model!r} "
            "(opus-mt, one direction per model) cannot",
            hint="use an M2M100, NLLB-200 or MADLAD-400 model, or turn translation.round_trip off",
        )


def check_seq2seq(translation: Any, language: Language) -> None:
    _check_hf(translation, language)
    _check_round_trip_hf(translation)


def check_language_support(translation: Any, language: Language | str) -> None:
    """Raise CloError when `translation` (the recipe's section) cannot produce `language`
    (nor, with `round_trip`, translate it back into English): the check the backend registry
    names. hf-causal and openai have none: an LLM can be asked for any language, and fidelity
    is measured later."""
    if isinstance(language, str):
        language = get_language(language)
    check = BACKENDS[translation.backend].check
    if check is not None:
        load_function(check)(translation, language)


def check_recipe(recipe: Any) -> None:
    """The translate stage's plan-time check (named in the stage table)."""
    check_language_support(recipe.translation, recipe.language)
