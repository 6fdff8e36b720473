"""llama.cpp's model through the public ctypes API (ilid_async.label.llama), with the small
Gemma 3 270M model's vocabulary."""

from __future__ import annotations

import logging

import pytest

from ilid_async.config import LlmSettings
from ilid_async.label.llama import Model, resolve_model_path, route_llama_log

llama_cpp = pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def vocab_model():
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True  # the tokenizer and metadata only: fast
    route_llama_log()
    model = Model(resolve_model_path(LlmSettings()), params)
    yield model
    model.close()
    model.close()  # twice is harmless


@pytest.mark.slow
@pytest.mark.parametrize("text", ["", "a", " Hinge zinc die-cast, black", "é中文🙂 " * 40, "word " * 5000])
def test_tokens_write_the_text_back(vocab_model, text):
    tokens = vocab_model.tokenize(text.encode(), add_bos=False, special=False)
    assert b"".join(vocab_model.piece(t) for t in tokens) == text.encode()
    with_bos = vocab_model.tokenize(text.encode(), add_bos=True, special=False)
    assert with_bos == [llama_cpp.llama_vocab_bos(vocab_model.vocab), *tokens]


@pytest.mark.slow
def test_special_tokens_are_read_as_such_only_when_asked(vocab_model):
    text = b"<start_of_turn>user"
    special = vocab_model.tokenize(text, add_bos=False, special=True)
    plain = vocab_model.tokenize(text, add_bos=False, special=False)
    assert len(special) < len(plain) and vocab_model.is_eog(vocab_model.tokenize(b"<end_of_turn>", False, True)[0])
    assert vocab_model.piece(special[0]) == b""  # a generated special token writes nothing
    assert vocab_model.n_vocab == llama_cpp.llama_vocab_n_tokens(vocab_model.vocab)
    assert vocab_model.chat_template() is None  # the demo model has none: the prompt's own is used


@pytest.mark.slow
def test_a_bad_model_file_is_a_value_error_without_llama_logs(tmp_path, caplog):
    params = llama_cpp.llama_model_default_params()
    route_llama_log()
    with pytest.raises(ValueError, match="Model path does not exist"):
        Model(str(tmp_path / "nope.gguf"), params)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(100))
    with caplog.at_level(logging.ERROR), pytest.raises(ValueError, match="Failed to load model from file"):
        Model(str(broken), params)
    assert not [r for r in caplog.records if r.message.startswith("llama.cpp:")]


def test_tokenize_reads_again_when_the_first_buffer_is_short(monkeypatch):
    """llama_tokenize answers -n when n tokens do not fit: the tokens are read again into n."""
    calls = []

    def fake_tokenize(vocab, text, text_len, tokens, n_max, add_special, parse_special):
        calls.append(n_max)
        produced = list(range(100, 100 + 3 * len(text)))  # more tokens than bytes
        if n_max < len(produced):
            return -len(produced)
        tokens[:len(produced)] = produced
        return len(produced)

    monkeypatch.setattr(llama_cpp, "llama_tokenize", fake_tokenize)
    model = Model.__new__(Model)  # no file: only the tokenizer call is under test
    model.vocab = None
    assert model.tokenize(b"abcd", add_bos=True, special=True) == list(range(100, 112))
    assert calls == [6, 12]
