"""Chat-template rendering: prompt masked, end-of-turn trained, broken templates caught."""

import copy

import pytest

from clo_recipes.errors import CloError
from clo_recipes.testing.tiny import build_tokenizer
from clo_recipes.training.chat import ChatRenderer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def with_template(tokenizer, template):
    clone = copy.deepcopy(tokenizer)
    clone.chat_template = template
    return clone


def test_prompt_is_masked_and_end_of_turn_is_trained(tokenizer):
    renderer = ChatRenderer(tokenizer)
    rendered = renderer.render("Where is Paris?", "In France.")
    prompt = tokenizer.decode(rendered.ids[:rendered.prompt_length])
    answer = tokenizer.decode(rendered.ids[rendered.prompt_length:])
    assert prompt == "<|im_start|>user\nWhere is Paris?<|im_end|>\n<|im_start|>assistant\n"
    assert answer == "In France.<|im_end|>\n"
    # the prompt tokens are exactly what generation tokenizes (the chat template's generation prompt)
    expected = tokenizer(renderer.prompt_text("Where is Paris?"), add_special_tokens=False)["input_ids"]
    assert list(rendered.ids[:rendered.prompt_length]) == expected
    seen = renderer.check("Where is Paris?", "In France.")
    assert seen["end_of_turn"] == "<|im_end|>" and seen["bos"] == "<|im_start|>"


def test_missing_template_asks_for_an_override(tokenizer):
    with pytest.raises(CloError) as error:
        ChatRenderer(with_template(tokenizer, None))
    assert "model.chat_template" in error.value.problems[0].hint


def test_template_without_end_of_turn_gets_eos(tokenizer):
    plain = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
             "{% if add_generation_prompt %}assistant: {% endif %}")
    renderer = ChatRenderer(with_template(tokenizer, plain))
    rendered = renderer.render("hi", "hello")
    assert tokenizer.decode(rendered.ids[rendered.prompt_length:]) == "hello\n<|im_end|>"
    renderer.check("hi", "hello")


def test_double_bos_is_caught(tokenizer):
    doubled = "{{ bos_token }}" + tokenizer.chat_template
    with pytest.raises(CloError, match="two BOS tokens"):
        ChatRenderer(with_template(tokenizer, doubled)).check("hi", "hello")


def test_prompt_rendered_differently_with_an_answer_is_refused(tokenizer):
    # a "thinking" style template: the assistant header changes once the answer is present
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
    with pytest.raises(CloError, match="renders the prompt differently"):
        ChatRenderer(with_template(tokenizer, template)).render("hi", "hello")


def test_template_that_drops_the_answer_is_refused(tokenizer):
    template = "{% for m in messages if m['role'] == 'user' %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(CloError, match="drops the assistant's answer"):
        ChatRenderer(with_template(tokenizer, template))
