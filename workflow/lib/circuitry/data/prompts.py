"""Prompts: the text a model is given for a problem, and the exact token ids it sees.

A template (config `templates.<name>`) has a `format`:

- `raw`: `user` with `{question}` replaced is the whole prompt;
- `chatml`: an optional system turn, then the user turn, in ChatML, ending with the
  opener of the assistant turn;
- `chat_template`: the tokenizer's own chat template, with the generation prompt.

`{question}` is replaced with `str.replace`, not `str.format`: templates contain
LaTeX such as `\\boxed{}`.

Special tokens: raw and chatml text is tokenised with the tokenizer's special tokens
(a BOS where the tokenizer adds one), unless the text already starts with the BOS
string; a chat template writes every special token it needs itself, so its text is
tokenised without adding any. Either way the ids are exactly what the model reads.
"""

from __future__ import annotations

from dataclasses import dataclass

FORMATS = ("raw", "chatml", "chat_template")
QUESTION = "{question}"


@dataclass(frozen=True)
class PromptTemplate:
    """One entry of the config's `templates` section."""

    format: str
    user: str
    system: str | None
    stop: tuple[str, ...]

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"unknown template format {self.format!r} (known: {FORMATS})")
        if QUESTION not in self.user:
            raise ValueError(f"template user text {self.user!r} has no {QUESTION} placeholder")
        if self.system and self.format == "raw":
            raise ValueError("a raw template has no system turn; put the text into `user`")

    @classmethod
    def from_config(cls, entry: dict) -> PromptTemplate:
        return cls(
            format=entry["format"],
            user=entry["user"],
            system=entry["system"],
            stop=tuple(entry["stop"]),
        )


@dataclass(frozen=True)
class Prompt:
    """The rendered prompt text and the token ids the model reads for it."""

    text: str
    token_ids: list[int]


def user_text(template: PromptTemplate, question: str) -> str:
    return template.user.replace(QUESTION, question)


def chatml(system: str | None, user: str) -> str:
    """System turn (if any) and user turn in ChatML, ending with the assistant opener."""
    turns = [("system", system)] if system else []
    turns.append(("user", user))
    rendered = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
    return rendered + "<|im_start|>assistant\n"


def chat_messages(template: PromptTemplate, question: str) -> list[dict]:
    messages = [{"role": "system", "content": template.system}] if template.system else []
    messages.append({"role": "user", "content": user_text(template, question)})
    return messages


def render_prompt(template: PromptTemplate, question: str, tokenizer) -> str:
    """The prompt text for `question`, before tokenisation."""
    if template.format == "raw":
        return user_text(template, question)
    if template.format == "chatml":
        return chatml(template.system, user_text(template, question))
    if tokenizer.chat_template is None:
        raise ValueError(
            "template format chat_template, but the tokenizer has no chat template; "
            "use format raw or chatml for this model"
        )
    return tokenizer.apply_chat_template(
        chat_messages(template, question), add_generation_prompt=True, tokenize=False
    )


def adds_special_tokens(template: PromptTemplate, text: str, tokenizer) -> bool:
    """Whether tokenising `text` should add the tokenizer's special tokens (BOS)."""
    if template.format == "chat_template":
        return False
    bos = tokenizer.bos_token
    return not (bos and text.startswith(bos))


def encode_prompt(template: PromptTemplate, text: str, tokenizer) -> list[int]:
    add = adds_special_tokens(template, text, tokenizer)
    return list(tokenizer(text, add_special_tokens=add)["input_ids"])


def build_prompt(template: PromptTemplate, question: str, tokenizer) -> Prompt:
    text = render_prompt(template, question, tokenizer)
    return Prompt(text=text, token_ids=encode_prompt(template, text, tokenizer))
