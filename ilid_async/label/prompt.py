"""Prompt rendering, the field rules and the per-record sampling seed for the labelling stage
(both backends).

The model never writes JSON syntax. The engine writes `{"label_long": "`, the model writes the
value and is stopped at the closing quote, the engine writes `", "label_short": "`, and so on.
Keys are forced, each value is bounded in tokens, and the answer always parses: far cheaper per
token than grammar-constrained sampling over a large vocabulary (issue 5's measurements).

A prompt's worked examples are earlier chat turns: the example's record as the user message and
its five answers, in exactly the forced-key form, as the assistant's. They come before the
record's own message, so they belong to the prompt part every record shares (decoded once).

The field rules end a value while it is written, so no answer breaks them: a value ends at a
stop (closing quote, new line), before the word that would exceed the field's word limit, and,
for fields without digits, before a digit (the engine also never samples a token with a digit:
the pre-filter removed every digit from the input, so a digit in an answer is made up).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from ilid_async.config import PromptConfig
from ilid_async.label.chat_format import GEMMA_TURNS, ChatFormat
from ilid_async.label.quality import first_word_not_from_text

__all__ = ["VALUE_STOPS", "DEFAULT_TEMPLATE", "PromptRenderer", "chat_format", "prompt_budget",
           "field_prefix", "answer_text", "value_end", "clean_value", "record_seed"]

VALUE_STOPS = ['"', "\n"]
# Gemma's turn format: used when neither the model nor the prompt file gives a chat format.
DEFAULT_TEMPLATE = GEMMA_TURNS
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"\S+")
_DIGIT = re.compile(r"\d")
REPEAT_WORDS = 3  # a value ends where it starts to repeat this many words it already wrote
# A value never ends on these (a word limit may cut "gas spring with end damping" after "with").
_TRAILING = frozenset("a an and as at by for from in into of on or per the to with".split())
# Marks where the record's own text starts, to cut the shared part out of a rendered chat.
_RECORD_MARK = "\x00record\x00"


def chat_format(model_template: str | None, prompt: PromptConfig) -> ChatFormat:
    """The chat format a model is prompted in: its own template, else the prompt file's, else
    Gemma's turns."""
    return ChatFormat(model_template or prompt.template or DEFAULT_TEMPLATE)


def field_prefix(index: int, name: str) -> str:
    """What the engine writes before the model writes the value of field ``name``."""
    return ('{"' if index == 0 else '", "') + name + '": "'


def answer_text(prompt: PromptConfig, values: dict[str, str]) -> str:
    """A complete answer as the forced keys write it: the assistant turn of an example."""
    return "".join(field_prefix(i, name) + values[name] for i, name in enumerate(prompt.max_tokens)) + '"}'


def render_user(prompt: PromptConfig, label: str, data: list[str], max_chars: int) -> tuple[str, bool]:
    """The user message for a record; page text longer than max_chars is cut (returns True)."""
    text = ", ".join(data)
    truncated = len(text) > max_chars
    if truncated:
        text = text[:max_chars].rsplit(" ", 1)[0]
    # str.replace, not str.format: page text may hold braces.
    return prompt.user.replace("{label}", label).replace("{text}", text), truncated


class PromptRenderer:
    """A prompt file in one chat format: the text of a record's prompt and the part of it that
    every record shares."""

    def __init__(self, prompt: PromptConfig, fmt: ChatFormat):
        self.prompt = prompt
        self.format = fmt
        self.turns = [(render_user(prompt, ex.label, [ex.text], len(ex.text))[0],
                       answer_text(prompt, {name: getattr(ex, name) for name in prompt.max_tokens}))
                      for ex in prompt.examples]

    def chat(self, user: str) -> str:
        """The whole chat text for one user message, up to where the answer starts."""
        return self.format.render(self.prompt.system, self.turns, user)

    def record(self, label: str, data: list[str], max_chars: int) -> tuple[str, bool]:
        """(chat text, whether the page text was cut) of one record."""
        user, truncated = render_user(self.prompt, label, data, max_chars)
        return self.chat(user), truncated

    def shared(self) -> str:
        """The text every record's prompt starts with: system text, examples and the user
        message up to the record's label or text."""
        user = self.prompt.user
        cut = min(i for i in (user.find("{label}"), user.find("{text}")) if i >= 0)
        text = self.chat(user[:cut] + _RECORD_MARK)
        return text[:text.index(_RECORD_MARK)]

    def fit(self, label: str, data: list[str], max_chars: int, budget: int,
            count_tokens: Callable[[str], int]) -> tuple[str, str, bool]:
        """(chat text, user message, whether the page text was cut): cut to max_chars, then
        shorter until the chat text fits ``budget`` tokens. OverflowError when even no text
        does not fit."""
        truncated = False
        while True:
            user, cut = render_user(self.prompt, label, data, max_chars)
            text = self.chat(user)
            truncated |= cut
            n_tokens = count_tokens(text)
            if n_tokens <= budget:
                return text, user, truncated
            if max_chars < 50:
                raise OverflowError("prompt does not fit the context even without page text")
            max_chars = int(max_chars * budget / n_tokens * 0.9)


def prompt_budget(prompt: PromptConfig, n_ctx: int) -> int:
    """Tokens a record's prompt may use: its context less every field's cap and key."""
    return n_ctx - sum(prompt.max_tokens.values()) - 16 * len(prompt.max_tokens)


def value_end(prompt: PromptConfig, name: str, text: str, text_words: set[str] | None = None) -> int | None:
    """Where the value of field ``name`` ends in ``text`` (what the model wrote so far), or None
    while it goes on: at a stop, before a digit (fields in no_digits), before the first word over
    the field's word limit, where it repeats itself, or (from_text fields, given the record's
    ``text_word_set``) before the first word that is not in the record's text."""
    stop = min((i for i in (text.find(s) for s in VALUE_STOPS) if i >= 0), default=None)
    body = text if stop is None else text[:stop]
    ends = [] if stop is None else [stop]
    if name in prompt.no_digits and (digit := _DIGIT.search(body)):
        ends.append(digit.start())
    words = list(_WORD.finditer(body))
    limit = prompt.max_words.get(name)
    if limit and len(words) > limit:
        ends.append(words[limit].start())
    # Small models loop ("with a non-slip base, with a non-slip base, ..."): end the value where
    # it repeats itself. Only whole words count: the last one may still be growing.
    complete = words if stop is not None or body[-1:].isspace() else words[:-1]
    seen = set()
    for i in range(len(complete) - REPEAT_WORDS + 1):
        key = tuple(w.group().lower() for w in complete[i:i + REPEAT_WORDS])
        if key in seen:
            ends.append(complete[i].start())
            break
        seen.add(key)
    if text_words is not None and name in prompt.from_text:
        foreign = first_word_not_from_text(body, text_words, complete=stop is not None)
        if foreign is not None:
            ends.append(foreign)
    return min(ends) if ends else None


def clean_value(text: str) -> str | None:
    """A generated value: one line, no escape residue, collapsed spaces, no dangling comma or
    function word at the end; empty -> None."""
    words = _SPACES.sub(" ", text.replace("\\", " ")).strip().split(" ")
    while words and (words[-1].lower() in _TRAILING or not words[-1].strip(",;:-")):
        words.pop()
    if words:
        words[-1] = words[-1].rstrip(",;:")
    return " ".join(words) or None


def record_seed(seed: int, label: str, data: list[str]) -> int:
    """A sampling seed that depends only on the record: a resumed run samples the same."""
    digest = hashlib.blake2b("\x1f".join([label, *data]).encode(), digest_size=8).digest()
    return seed ^ int.from_bytes(digest, "little")
