"""A record in its llama.cpp sequence: its prompt fitted to the context, the forced keys, the
tokens the sequence holds and those still to decode, and its values as tokens arrive.

The model never writes JSON syntax: ``next_field`` writes a key, the model writes its value
token by token (``accept``) until a field rule or the token cap ends it (``prompt``'s rules).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ilid_async.config import PromptConfig
from ilid_async.errors import UserError
from ilid_async.label.bridge import Job
from ilid_async.label.llama import Context, Model
from ilid_async.label.prompt import PromptRenderer, clean_value, field_prefix, prompt_budget, value_end
from ilid_async.label.result import LabelResult, answer_result

__all__ = ["Seq", "prompt_tokens", "shared_prefix", "fit_prompt", "next_field", "accept"]


@dataclass
class Seq:
    """One record in flight: its text so far and what its llama.cpp sequence holds."""

    job: Job
    seq_id: int
    text: str  # prompt, forced keys and values written so far
    truncated: bool
    sampler: object | None  # llama.cpp sampler chain (temperature > 0), seeded by the record
    cached: list[int] = field(default_factory=list)  # the tokens in the sequence, position = index
    pending: list[int] = field(default_factory=list)  # tokens to decode next
    field_index: int = 0
    generated: int = 0  # tokens of the current value
    value: bytes = b""
    fields: dict[str, str | None] = field(default_factory=dict)
    text_tokens: np.ndarray | None = None  # what its from_text fields may use
    text_words: set[str] | None = None  # and the words they may be written in


def prompt_tokens(model: Model, text: str) -> list[int]:
    """A prompt's tokens: BOS first, the chat format's special tokens as such."""
    return model.tokenize(text.encode(), add_bos=True, special=True)


def shared_prefix(model: Model, shared: str, n_ctx_seq: int) -> list[int]:
    """The tokens of the prompt that every record shares (system text, examples, the user
    message up to the record), to be decoded once: every record starts from exactly this cache,
    so its answer does not depend on which records came before it."""
    # The last token may merge with what follows in a full prompt: leave it out.
    prefix = prompt_tokens(model, shared)[:-1]
    if len(prefix) + 16 > n_ctx_seq:
        raise UserError(f"config: key 'llm.n_ctx': {n_ctx_seq} tokens do not hold the "
                        f"prompt's {len(prefix)} shared tokens")
    return prefix


def fit_prompt(chat: PromptRenderer, model: Model, label: str, data: list[str], max_chars: int,
               n_ctx_seq: int) -> tuple[str, bool]:
    """The prompt up to the first value, cut further if it would not fit the context, and
    whether the page text was cut. OverflowError when even no page text fits."""
    budget = prompt_budget(chat.prompt, n_ctx_seq)
    text, _, truncated = chat.fit(label, data, max_chars, budget, lambda text: len(prompt_tokens(model, text)))
    return text, truncated


def next_field(seq: Seq, prompt: PromptConfig, model: Model, ctx: Context) -> None:
    """Write the next forced key and queue the tokens the sequence does not hold yet.

    The whole text is tokenized again, as one string: a value's last token and the key
    after it may tokenize differently together than apart, and this way a record gets the
    tokens a single-sequence completion of the same text would get.
    """
    name = list(prompt.max_tokens)[seq.field_index]
    seq.text += field_prefix(seq.field_index, name)
    tokens = prompt_tokens(model, seq.text)
    same = 0
    for a, b in zip(seq.cached, tokens[:-1]):  # the last token is always decoded: its logits
        if a != b:
            break
        same += 1
    if same < len(seq.cached):
        ctx.seq_rm(seq.seq_id, same)
        del seq.cached[same:]
    seq.pending = tokens[same:]
    seq.generated = 0
    seq.value = b""


def accept(seq: Seq, prompt: PromptConfig, model: Model, ctx: Context, token: int) -> LabelResult | None:
    """Take one generated token; returns the result once the record's last value ends."""
    name = list(prompt.max_tokens)[seq.field_index]
    value = None
    if model.is_eog(token):
        value = seq.value.decode(errors="ignore")
    else:
        seq.generated += 1
        seq.value += model.piece(token)
        text = seq.value.decode(errors="ignore")
        # A stop, a word over the limit, a digit, a repeat, a word not in the text.
        end = value_end(prompt, name, text, seq.text_words)
        if end is not None:
            value = text[:end]
        elif seq.generated >= prompt.max_tokens[name]:
            value = text
    if value is None:
        seq.pending = [token]
        return None
    seq.fields[name] = clean_value(value)
    # Without the space before a word cut off by a rule (its cells are dropped by next_field).
    seq.text += value.rstrip()
    seq.field_index += 1
    if seq.field_index < len(prompt.max_tokens):
        next_field(seq, prompt, model, ctx)
        return None
    return answer_result(seq.fields, seq.truncated)
