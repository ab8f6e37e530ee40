import pytest

from clo_recipes.recipe.languages import UnknownLanguage, get_language

REQUIRED = ["zh", "de", "ko", "id", "sw", "yo", "th", "ja", "vi", "hi", "ar", "es", "fr", "pt", "ru", "tr"]


@pytest.mark.parametrize("code", REQUIRED)
def test_required_languages_have_all_codes(code):
    language = get_language(code)
    assert language.iso1 == code
    assert get_language(language.iso3) is language
    assert get_language(language.name) is language
    assert language.flores.count("_") == 1 and language.madlad and language.tier in ("high", "medium", "low")


def test_known_codes():
    assert get_language("Swahili").flores == "swh_Latn"
    assert get_language("tha").script == "Thai"
    assert get_language("KOREAN").flores == "kor_Hang"
    assert get_language("yo").tier == "low" and get_language("de").tier == "high"
    assert get_language("te").m2m100 is None  # M2M100 has no Telugu


def test_unknown_suggests():
    with pytest.raises(UnknownLanguage) as info:
        get_language("germn")
    assert "german" in info.value.suggestions
