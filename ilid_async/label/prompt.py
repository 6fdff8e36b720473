"""Prompt rendering, answer parsing and the per-record sampling seed for the labelling stage
(both backends): plain functions.

The model never writes JSON syntax. The engine writes `{"label_long": "`, the model writes the
value and is stopped at the closing quote, the engine writes `", "label_short": "`, and so on.
Keys are forced, each value is bounded in tokens, and the answer always parses: far cheaper per
token than grammar-constrained sampling over a large vocabulary (issue 5's measurements).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from ..config import PromptConfig

VALUE_STOPS = ['"', "\n"]
# Gemma's turn format: used when neither the model nor the prompt file gives a chat format.
DEFAULT_TEMPLATE = "<start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n<start_of_turn>model\n"
_SPACES = re.compile(r"\s+")


def render_user(prompt: PromptConfig, label: str, data: list[str], max_chars: int) -> tuple[str, bool]:
    """The user message for a record; page text longer than max_chars is cut (returns True)."""
    text = ", ".join(data)
    truncated = len(text) > max_chars
    if truncated:
        text = text[:max_chars].rsplit(" ", 1)[0]
    # str.replace, not str.format: page text may hold braces.
    return prompt.user.replace("{label}", label).replace("{text}", text), truncated


def render_chat(template: str, system: str, user: str) -> str:
    return template.replace("{system}", system).replace("{user}", user)


def chat_template(model_template: str | None, prompt: PromptConfig) -> str:
    """The chat format with {system} and {user}: the model's own template (rendered once with
    the placeholders, then filled by replace), else the prompt file's, else Gemma's."""
    if not model_template:
        return prompt.template or DEFAULT_TEMPLATE
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(model_template, eos_token="", bos_token="")
    return formatter(messages=[{"role": "system", "content": "{system}"},
                               {"role": "user", "content": "{user}"}]).prompt


def prompt_budget(prompt: PromptConfig, n_ctx: int) -> int:
    """Tokens a record's prompt may use: its context less every field's cap and key."""
    return n_ctx - sum(prompt.max_tokens.values()) - 16 * len(prompt.max_tokens)


def fit_chat_prompt(prompt: PromptConfig, template: str, label: str, data: list[str], max_chars: int,
                    budget: int, count_tokens: Callable[[str], int]) -> tuple[str, str, bool]:
    """(chat text, user message, whether the page text was cut): cut to max_chars, then shorter
    until the chat text fits ``budget`` tokens. OverflowError when even no text does not fit."""
    truncated = False
    while True:
        user, cut = render_user(prompt, label, data, max_chars)
        truncated |= cut
        text = render_chat(template, prompt.system, user)
        n_tokens = count_tokens(text)
        if n_tokens <= budget:
            return text, user, truncated
        if max_chars < 50:
            raise OverflowError("prompt does not fit the context even without page text")
        max_chars = int(max_chars * budget / n_tokens * 0.9)


def field_prefix(index: int, name: str) -> str:
    """What the engine writes before the model writes the value of field ``name``."""
    return ('{"' if index == 0 else '", "') + name + '": "'


def clean_value(text: str) -> str | None:
    """A generated value: one line, no escape residue, collapsed spaces; empty -> None."""
    text = _SPACES.sub(" ", text.replace("\\", " ")).strip()
    return text or None


def record_seed(seed: int, label: str, data: list[str]) -> int:
    """A sampling seed that depends only on the record: a resumed run samples the same."""
    digest = hashlib.blake2b("\x1f".join([label, *data]).encode(), digest_size=8).digest()
    return seed ^ int.from_bytes(digest, "little")
