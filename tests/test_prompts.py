"""Prompt rendering per template format, and the exact token ids (BOS handling)."""

from __future__ import annotations

import pytest

from circuitry.data.prompts import PromptTemplate, build_prompt, chatml, render_prompt
from circuitry.models.tokenizer import build_char_tokenizer
from conftest import prompt_template

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)
BOXED = "Please reason step by step, and put your final answer within \\boxed{}."


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def chat_tokenizer():
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def test_raw_replaces_the_question_and_keeps_latex_braces(tokenizer):
    template = prompt_template("raw", user="User: {question}\n" + BOXED + "\n\nAssistant:")
    prompt = build_prompt(template, "Is {x} + 1 = 2?", tokenizer)
    assert prompt.text == "User: Is {x} + 1 = 2?\n" + BOXED + "\n\nAssistant:"


def test_raw_prompt_ids_have_one_bos_then_the_text(tokenizer):
    prompt = build_prompt(prompt_template("raw", user="{question}\n"), "1+2", tokenizer)
    assert prompt.token_ids == tokenizer(prompt.text)["input_ids"]
    assert prompt.token_ids[0] == tokenizer.bos_token_id
    assert prompt.token_ids[1:] == tokenizer("1+2\n", add_special_tokens=False)["input_ids"]


def test_raw_text_that_starts_with_bos_gets_no_second_bos(tokenizer):
    prompt = build_prompt(prompt_template("raw", user="<s>{question}"), "7", tokenizer)
    assert prompt.token_ids == [tokenizer.bos_token_id, *tokenizer.convert_tokens_to_ids(["7"])]


def test_chatml_with_system_turn():
    assert chatml("Be brief.", "1+1?") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n1+1?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("system", [None, ""])
def test_chatml_without_system_turn(system):
    assert chatml(system, "1+1?") == "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"


def test_chatml_prompt_substitutes_the_question_into_the_user_turn(tokenizer):
    template = prompt_template("chatml", system=BOXED, user="Q: {question}")
    prompt = build_prompt(template, "2*3", tokenizer)
    assert prompt.text == chatml(BOXED, "Q: 2*3")
    assert prompt.token_ids == tokenizer(prompt.text)["input_ids"]


def test_chat_template_renders_system_and_user(chat_tokenizer):
    template = prompt_template("chat_template", system="S", user="{question}?")
    text = render_prompt(template, "U", chat_tokenizer)
    assert text == "<s>[system] S\n[user] U?\n[assistant] "


def test_chat_template_ids_are_what_apply_chat_template_gives(chat_tokenizer):
    template = prompt_template("chat_template", user="{question}\n" + BOXED)
    prompt = build_prompt(template, "What is 3+4?", chat_tokenizer)
    messages = [{"role": "user", "content": "What is 3+4?\n" + BOXED}]
    expected = chat_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert prompt.token_ids == list(expected)
    assert prompt.token_ids[:2] == [
        chat_tokenizer.bos_token_id,
        chat_tokenizer("[")["input_ids"][1],
    ]


def test_chat_template_format_needs_a_tokenizer_chat_template(tokenizer):
    with pytest.raises(ValueError, match="no chat template"):
        render_prompt(prompt_template("chat_template"), "1+1", tokenizer)


def test_the_schema_defaults_make_a_bare_question_template():
    template = prompt_template("chatml")
    assert template == PromptTemplate("chatml", user="{question}", system=None, stop=())
    assert prompt_template("raw", stop=["</s>", "\n\n"]).stop == ("</s>", "\n\n")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"format": "markdown"}, "unknown template format"),
        ({"format": "raw", "user": "no placeholder"}, "no \\{question\\} placeholder"),
        ({"format": "raw", "system": "S"}, "raw template has no system turn"),
    ],
)
def test_bad_templates_fail_clearly(entry, message):
    with pytest.raises(ValueError, match=message):
        prompt_template(**entry)
