"""Picking each record's next token: the field rules as logit masks over classes of the
vocabulary, then a greedy argmax or the record's own llama.cpp sampler chain.

llama_cpp is imported where it is used: loading it is slow.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ilid_async.label.quality import text_words

__all__ = ["VocabClasses", "vocab_classes", "text_tokens", "new_sampler", "free_sampler", "mask_logits", "pick"]


@dataclass
class VocabClasses:
    """Token classes of a vocabulary, found once per model for the field rules."""

    digits: np.ndarray  # ids of tokens whose text has a digit: masked in no_digits fields
    # Tokens a from_text field may always use besides its record's words: end of generation,
    # those that end a value (a quote or line break in them) and those of spaces and
    # punctuation only (between words).
    separators: np.ndarray


_SEPARATOR = re.compile(r'[\s,.;:/&()+-]+|.*["\n].*', re.S)


def vocab_classes(vocab) -> VocabClasses:
    """``vocab``: a llama.cpp vocabulary (llama_model_get_vocab)."""
    import llama_cpp

    piece = ctypes.create_string_buffer(256)
    ascii_digit, any_digit = re.compile(rb"[0-9]"), re.compile(r"\d")
    digits, separators = [], []
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        n = llama_cpp.llama_token_to_piece(vocab, token, piece, len(piece), 0, True)
        raw = piece.raw[:max(n, 0)]
        text = raw.decode(errors="ignore")
        if ascii_digit.search(raw) or any_digit.search(text):
            digits.append(token)
        elif llama_cpp.llama_vocab_is_eog(vocab, token) or (text and _SEPARATOR.fullmatch(text)):
            separators.append(token)
    return VocabClasses(np.array(digits, dtype=np.int64), np.array(separators, dtype=np.int64))


def text_tokens(model, classes: VocabClasses, label: str, data: list[str]) -> np.ndarray:
    """The tokens of a record's words (at a value's start and after a space) and the separators:
    all its from_text fields may use. ``model``: anything with llama-cpp-python's
    ``tokenize(text: bytes, add_bos, special)``, such as ``ilid_async.label.llama.Model``."""
    ids: set[int] = set()
    for word in text_words(label, data):
        for form in (word, " " + word):
            ids.update(model.tokenize(form.encode(), add_bos=False, special=False))
    return np.union1d(np.fromiter(ids, dtype=np.int64, count=len(ids)), classes.separators)


def new_sampler(temperature: float, top_p: float, seed: int):
    """top-p, temperature and a seeded draw, all in llama.cpp: no per-token work over the
    vocabulary in Python. Free it with free_sampler."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if top_p < 1.0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(top_p, 1))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(temperature))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain


def free_sampler(chain) -> None:
    import llama_cpp

    llama_cpp.llama_sampler_free(chain)


def mask_logits(logits: np.ndarray, allowed: Sequence[np.ndarray | None], no_digits: Sequence[bool],
                classes: VocabClasses) -> None:
    """The field rules in the logits, row by row and in place (the sampler chains read the same
    buffer): a row with ``allowed`` tokens (a from_text field) keeps only those; tokens with
    digits never win in a ``no_digits`` row."""
    digit_rows = []
    for i, (tokens, digits) in enumerate(zip(allowed, no_digits)):
        if tokens is not None:
            row = logits[i]
            kept = row[tokens]
            row.fill(-np.inf)
            row[tokens] = kept
        if digits:
            digit_rows.append(i)
    if digit_rows:
        # numpy's ix_ stubs want all arguments of one kind (here a list and an array).
        logits[np.ix_(digit_rows, classes.digits)] = -np.inf  # type: ignore[arg-type]


def pick(logits: np.ndarray, ctx, samplers: Sequence | None, rows: Sequence[int]) -> list[int]:
    """The next token of each logits row. Without ``samplers`` greedy, as one argmax over all
    rows in numpy (the first of equal maxima, as llama.cpp's); else each row's token drawn by its
    own chain from batch row ``rows[i]`` of llama.cpp context ``ctx``."""
    if samplers is None:
        return logits.argmax(axis=1).tolist()
    import llama_cpp

    return [llama_cpp.llama_sampler_sample(s, ctx, row) for s, row in zip(samplers, rows)]
