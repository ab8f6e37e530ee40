"""Language registry: one entry per language, found by ISO 639-1, ISO 639-3 or English name.

Each entry carries the codes the translation backends and evaluation suites need, so no
backend guesses a code: FLORES-200 (also NLLB-200 and BELEBELE), M2M100, MADLAD-400 (`<2xx>`
target prefix) and the resource tier used in the paper's analysis.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

Tier = Literal["high", "medium", "low"]


@dataclass(frozen=True)
class Language:
    iso1: str
    iso3: str
    name: str
    script: str  # ISO 15924
    flores: str  # FLORES-200 / NLLB-200 / BELEBELE code
    m2m100: str | None  # None: not among M2M100's 100 languages
    madlad: str
    tier: Tier

    @property
    def code(self) -> str:
        """The short code used in file names, fields and language-ID output."""
        return self.iso1


class UnknownLanguage(ValueError):
    def __init__(self, query: str, suggestions: list[str]):
        self.query = query
        self.suggestions = suggestions
        hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"unknown language {query!r}{hint}")


_L = Language
LANGUAGES: tuple[Language, ...] = (
    _L("en", "eng", "English", "Latn", "eng_Latn", "en", "en", "high"),
    # The paper's six.
    _L("zh", "zho", "Chinese", "Hans", "zho_Hans", "zh", "zh", "high"),
    _L("de", "deu", "German", "Latn", "deu_Latn", "de", "de", "high"),
    _L("ko", "kor", "Korean", "Hang", "kor_Hang", "ko", "ko", "medium"),
    _L("id", "ind", "Indonesian", "Latn", "ind_Latn", "id", "id", "medium"),
    _L("sw", "swa", "Swahili", "Latn", "swh_Latn", "sw", "sw", "low"),
    _L("yo", "yor", "Yoruba", "Latn", "yor_Latn", "yo", "yo", "low"),
    # Common transfer targets.
    _L("th", "tha", "Thai", "Thai", "tha_Thai", "th", "th", "medium"),
    _L("ja", "jpn", "Japanese", "Jpan", "jpn_Jpan", "ja", "ja", "high"),
    _L("vi", "vie", "Vietnamese", "Latn", "vie_Latn", "vi", "vi", "medium"),
    _L("hi", "hin", "Hindi", "Deva", "hin_Deva", "hi", "hi", "medium"),
    _L("ar", "ara", "Arabic", "Arab", "arb_Arab", "ar", "ar", "medium"),
    _L("es", "spa", "Spanish", "Latn", "spa_Latn", "es", "es", "high"),
    _L("fr", "fra", "French", "Latn", "fra_Latn", "fr", "fr", "high"),
    _L("pt", "por", "Portuguese", "Latn", "por_Latn", "pt", "pt", "high"),
    _L("ru", "rus", "Russian", "Cyrl", "rus_Cyrl", "ru", "ru", "high"),
    _L("tr", "tur", "Turkish", "Latn", "tur_Latn", "tr", "tr", "medium"),
    _L("it", "ita", "Italian", "Latn", "ita_Latn", "it", "it", "high"),
    _L("nl", "nld", "Dutch", "Latn", "nld_Latn", "nl", "nl", "high"),
    _L("pl", "pol", "Polish", "Latn", "pol_Latn", "pl", "pl", "medium"),
    _L("uk", "ukr", "Ukrainian", "Cyrl", "ukr_Cyrl", "uk", "uk", "medium"),
    _L("bn", "ben", "Bengali", "Beng", "ben_Beng", "bn", "bn", "medium"),
    _L("fa", "fas", "Persian", "Arab", "pes_Arab", "fa", "fa", "medium"),
    _L("he", "heb", "Hebrew", "Hebr", "heb_Hebr", "he", "iw", "medium"),
    _L("ur", "urd", "Urdu", "Arab", "urd_Arab", "ur", "ur", "low"),
    _L("ta", "tam", "Tamil", "Taml", "tam_Taml", "ta", "ta", "low"),
    _L("te", "tel", "Telugu", "Telu", "tel_Telu", None, "te", "low"),
    _L("ms", "msa", "Malay", "Latn", "zsm_Latn", "ms", "ms", "medium"),
)

# Other names people write for the same language.
_ALIASES = {"swh": "sw", "arb": "ar", "zsm": "ms", "pes": "fa", "iw": "he", "farsi": "fa",
            "mandarin": "zh", "cmn": "zh", "kiswahili": "sw", "bahasa indonesia": "id"}

_INDEX: dict[str, Language] = {}
for _lang in LANGUAGES:
    for _key in (_lang.iso1, _lang.iso3, _lang.name.lower(), _lang.flores.lower()):
        _INDEX[_key] = _lang
for _alias, _iso1 in _ALIASES.items():
    _INDEX[_alias] = _INDEX[_iso1]


def get_language(query: str) -> Language:
    """Find a language by ISO 639-1/639-3 code, FLORES code or English name (any case)."""
    key = query.strip().lower().replace("-", "_")
    if key in _INDEX:
        return _INDEX[key]
    raise UnknownLanguage(query, difflib.get_close_matches(key, list(_INDEX), n=3, cutoff=0.6))


def all_languages() -> tuple[Language, ...]:
    return LANGUAGES
