"""The llama.cpp labelling engine: one thread owns the model, one context and many sequences.

The model thread (``bridge``) does all llama.cpp work (``llama``); this module schedules it.
Continuous batching: up to ``llm.n_parallel`` records are in flight, each in its own llama.cpp
sequence (``sequence``). The prompt part that every record shares is decoded once, into
sequence 0, and a record's sequence starts from it. Two schedules (``llm.reproducible``):

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

import logging
import queue

from ilid_async import reasons
from ilid_async.config import LlmSettings, PromptConfig
from ilid_async.errors import UserError
from ilid_async.label.bridge import Job, ModelThread
from ilid_async.label.llama import Context, Model, model_params, resolve_model_path, route_llama_log
from ilid_async.label.prompt import PromptRenderer, chat_format, record_seed
from ilid_async.label.quality import text_word_set
from ilid_async.label.result import LabelResult, count_result, new_stats
from ilid_async.label.sampling import (VocabClasses, free_sampler, mask_logits, new_sampler, pick, text_tokens,
                                       vocab_classes)
from ilid_async.label.sequence import Seq, accept, fit_prompt, next_field, shared_prefix

__all__ = ["PREFIX_SEQ", "LabelEngine"]

log = logging.getLogger(__name__)

PREFIX_SEQ = 0  # the sequence that holds the shared prompt prefix; records use 1..n_parallel


class LabelEngine:
    def __init__(self, llm: LlmSettings, prompt: PromptConfig):
        self.llm = llm
        self.prompt = prompt
        self.model_path = resolve_model_path(llm)
        self._bridge = ModelThread("llama")
        # Loaded by _load in the model thread, freed (None again) by _free.
        self._model: Model | None = None
        self._ctx: Context | None = None
        self._prefix: list[int]  # the shared prompt part's tokens (_decode_prefix), set by _load
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
        await self._bridge.start(self._load, self._serve, self._free)

    async def close(self, drain: bool = True) -> None:
        """Stop the thread: after the records already queued, or (drain=False) at the next
        decode step, abandoning the records in flight and dropping the queued ones. Their
        futures are cancelled; their records are still leased in the store and return to
        pending at the next start."""
        await self._bridge.close(drain)

    async def label(self, label: str, data: list[str]) -> LabelResult:
        return await self._bridge.submit(label, data)

    # --- the model thread -----------------------------------------------------------------

    def _load(self) -> None:
        import llama_cpp

        route_llama_log()
        llama_cpp.llama_backend_init()
        try:
            self._model = Model(self.model_path, model_params(self.llm))
        except ValueError as e:
            raise UserError(f"llm.model: cannot load {self.model_path} ({e})") from None
        self._ctx = Context(self._model, self.llm)
        try:
            self.chat = PromptRenderer(self.prompt, chat_format(self._model.chat_template(), self.prompt))
            shared = self.chat.shared()
        except ValueError as e:
            raise UserError(f"llm.model: its chat template does not render the prompt ({e})") from None
        if self.prompt.no_digits or self.prompt.from_text:
            self._vocab_classes = vocab_classes(self._model.vocab)
        self._decode_prefix(shared)

    def _free(self) -> None:
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None

    def _decode_prefix(self, shared: str) -> None:
        """The shared prompt part's tokens, decoded once into sequence PREFIX_SEQ."""
        assert self._model is not None and self._ctx is not None  # _load calls this
        self._prefix = shared_prefix(self._model, shared, self.n_ctx_seq)
        self.stats["prefix_tokens"] = len(self._prefix)
        for start in range(0, len(self._prefix), self.llm.n_batch):
            chunk = self._prefix[start:start + self.llm.n_batch]
            self._ctx.clear()
            for offset, token in enumerate(chunk):
                self._ctx.add(token, start + offset, PREFIX_SEQ, False)
            self._decode()

    def _serve(self) -> None:
        free = list(range(self.llm.n_parallel, 0, -1))  # sequence ids; pop() takes 1 first
        active: list[Seq] = []
        stopping = False
        step = self._step_reproducible if self.llm.reproducible else self._step_throughput
        while True:
            # Admit queued records while sequences are free; wait only when nothing runs.
            while free and not stopping:
                try:
                    job = self._bridge.next_job(block=not active)
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                seq = self._admit(job, free[-1])
                if seq is not None:
                    free.pop()
                    active.append(seq)
            if self._bridge.abandoned:
                for seq in active:
                    self._release(seq)
                    seq.job.cancel()
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

    def _admit(self, job: Job, seq_id: int) -> Seq | None:
        """Start a record in sequence seq_id; None when it is already finished (failed)."""
        assert self._model is not None and self._ctx is not None and self.chat is not None  # _load set them
        self.stats["records"] += 1
        try:
            text, truncated = fit_prompt(self.chat, self._model, job.label, job.data, self.llm.max_input_chars,
                                         self.n_ctx_seq)
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
            sampler = new_sampler(self.llm.temperature, self.llm.top_p, record_seed(self.llm.seed, job.label, job.data))
        seq = Seq(job, seq_id, text, truncated, sampler, cached=list(self._prefix))
        if self.prompt.from_text:
            assert self._vocab_classes is not None  # _load finds them when from_text is set
            seq.text_tokens = text_tokens(self._model, self._vocab_classes, job.label, job.data)
            seq.text_words = text_word_set(job.label, job.data)
        # The shared prefix: its cells tagged for this sequence too (one shared cache), or
        # copied into its own stream.
        self._ctx.seq_rm(seq_id, -1)
        self._ctx.seq_cp(PREFIX_SEQ, seq_id)
        next_field(seq, self.prompt, self._model, self._ctx)
        return seq

    def _release(self, seq: Seq) -> None:
        """Empty a record's sequence (idle sequences are empty: reproducible padding rows sit
        at their position 0) and free its sampler."""
        assert self._ctx is not None  # freed only after serving
        self._ctx.seq_rm(seq.seq_id, -1)
        if seq.sampler is not None:
            free_sampler(seq.sampler)
            seq.sampler = None

    def _finish(self, job: Job, result: LabelResult) -> None:
        count_result(self.stats, result)
        job.finish(result)

    # --- decoding -------------------------------------------------------------------------

    def _decode(self) -> None:
        assert self._ctx is not None  # decodes happen between _load and _free
        rc = self._ctx.decode()
        self.stats["decodes"] += 1
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _step_throughput(self, active: list[Seq]) -> list[tuple[Seq, LabelResult]]:
        """One llama_decode of everything that fits; returns the records that finished.

        Generating records first (one token each, so none of them waits), then prompt and key
        tokens of the others in order of arrival, each cut where n_batch ends (the rest comes
        in the next decode). No padding rows: every row is a real token.
        """
        generating = [s for s in active if len(s.pending) == 1]
        filling = [s for s in active if len(s.pending) > 1]
        return self._decode_seqs(generating + filling, pad=[])

    def _step_reproducible(self, active: list[Seq]) -> list[tuple[Seq, LabelResult]]:
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

    def _decode_seqs(self, seqs: list[Seq], pad: list[int]) -> list[tuple[Seq, LabelResult]]:
        assert self._model is not None and self._ctx is not None  # decodes happen between _load and _free
        ctx = self._ctx
        ctx.clear()
        outputs: list[tuple[Seq, int]] = []  # (record, batch row), in batch order as the logits
        for seq in seqs:
            room = self.llm.n_batch - len(pad) - ctx.n_tokens
            if room <= 0:
                break
            take = seq.pending[:room]
            last = len(take) == len(seq.pending)
            for k, token in enumerate(take):
                ctx.add(token, len(seq.cached) + k, seq.seq_id, last and k == len(take) - 1)
            seq.cached += take
            seq.pending = seq.pending[len(take):]
            if last:
                outputs.append((seq, ctx.n_tokens - 1))
            if len(take) > 1:
                self.stats["prompt_tokens"] += len(take)
        # Throw-away rows with logits: in an idle sequence (cleared when a record is admitted)
        # or after the prefix in sequence 0; removed after the decode.
        pad_pos = {seq_id: len(self._prefix) if seq_id == PREFIX_SEQ else 0 for seq_id in pad}
        for seq_id, pos in pad_pos.items():
            ctx.add(self._prefix[-1], pos, seq_id, True)
        try:
            self._decode()
        finally:
            for seq_id, pos in pad_pos.items():
                ctx.seq_rm(seq_id, pos)
        tokens = self._pick(outputs)
        done = []
        for (seq, _), token in zip(outputs, tokens):
            self.stats["tokens"] += 1
            result = accept(seq, self.prompt, self._model, ctx, token)
            if result is not None:
                done.append((seq, result))
        return done

    def _pick(self, outputs: list[tuple[Seq, int]]) -> list[int]:
        """The next token of each output row, the field rules masked in first."""
        assert self._ctx is not None  # decodes happen between _load and _free
        if not outputs:
            return []
        logits = self._ctx.logits(len(outputs))
        if self._vocab_classes is not None:
            names = [list(self.prompt.max_tokens)[seq.field_index] for seq, _ in outputs]
            mask_logits(logits, [seq.text_tokens if name in self.prompt.from_text else None
                                 for (seq, _), name in zip(outputs, names)],
                        [name in self.prompt.no_digits for name in names], self._vocab_classes)
        samplers = [seq.sampler for seq, _ in outputs] if self.llm.temperature > 0 else None
        return pick(logits, self._ctx.ctx, samplers, [row for _, row in outputs])
