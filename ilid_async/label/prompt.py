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
