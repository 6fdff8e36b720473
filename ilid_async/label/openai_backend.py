"""Labelling on OpenAI-compatible completions servers (vLLM, SGLang, llama.cpp's llama-server,
llama-cpp-python's server): ``llm.backend = "openai"``.

The same prompt continuation as the in-process engine: the chat text, then for each field its
forced key (`{"label_long": "`, `", "label_short": "`, ...) and one completion request that the
server stops at the closing quote. A completions endpoint takes raw text, so the chat format is
the prompt file's ``template`` (or Gemma's turn format), not the served model's own template.

A record's requests all go to one server, so that the server's prefix cache (vLLM's automatic
prefix caching, SGLang's radix cache, llama-server's cache_prompt) reuses the text it has just
seen; records are spread over the servers, the least busy first. Up to ``llm.max_in_flight``
records are in flight over all servers. A request that fails on the way (connection, timeout,
429, 5xx) is retried with backoff, on the next server where there are several; a record whose
retries all fail is ``server_unavailable`` and the store returns it to labelling at the next
run, because the failure says nothing about the record.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import time
from dataclasses import dataclass

import aiohttp
import orjson
from yarl import URL

from ilid_async import reasons
from ilid_async.config import LlmSettings, PromptConfig
from ilid_async.errors import UserError
from ilid_async.label.prompt import VALUE_STOPS, PromptRenderer, chat_format, clean_value, field_prefix, record_seed, value_end
from ilid_async.label.quality import text_word_set
from ilid_async.label.result import LabelResult, answer_result, count_result, new_stats

__all__ = ["PROBE_TIMEOUT", "MAX_RETRY_AFTER", "AVOID_SECONDS", "NO_DIGITS_GRAMMAR", "OpenAIBackend"]

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 15.0  # seconds for the start-up check of one server
MAX_RETRY_AFTER = 60.0  # a server's Retry-After is honoured up to this many seconds
AVOID_SECONDS = 10.0  # a server that failed a request gets no new records for this long
# A value without digits up to its closing quote or line end, where the request's stops end it.
# Whatever follows the quote is allowed: the model likes to close a value with a token such as
# `",` and, refused that, would write on to the token cap instead of a bare `"`.
NO_DIGITS_GRAMMAR = 'root ::= [^0-9"\\n]* (["\\n] .*)?'


class _Failed(Exception):
    """One record's labelling failed; ``reason`` is what the store records."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Server:
    index: int  # position in llm.base_urls, for messages that name the config key
    url: str  # base URL without a trailing slash, e.g. http://10.0.0.5:8000/v1
    model: str | None = None  # sent as "model"; None = left to the server
    llama_cpp: bool = False  # llama-server: ask it to keep the prompt in its cache
    grammar: bool = False  # takes a GBNF "grammar" (llama-server, llama-cpp-python's server)
    in_flight: int = 0  # records on this server now
    avoid_until: float = 0.0  # monotonic time; a failing server gets new records after this
    failing: bool = False  # its last request failed (warned once, not once per request)

    @property
    def shown(self) -> str:
        """The URL for messages: without user and password, should the URL carry them."""
        return str(URL(self.url).with_user(None))


@dataclass
class _Record:
    server: _Server  # where its requests go: one server, for its prefix cache
    word_set: set[str] | None = None  # the record's words, for the from_text rule


class OpenAIBackend:
    def __init__(self, llm: LlmSettings, prompt: PromptConfig):
        self.llm = llm
        self.prompt = prompt
        # Raw completions: the chat format must be the served model's, written in the prompt file.
        self.chat = PromptRenderer(prompt, chat_format(None, prompt))
        self.stats = new_stats()
        self._servers = [_Server(i, url.rstrip("/"), llm.server_model or None)
                         for i, url in enumerate(llm.base_urls)]
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(llm.max_in_flight)
        self._tasks: set[asyncio.Task] = set()
        # Set when a record used up its retries while every server was down; cleared by the
        # next answer. Meanwhile records fail at their first error: the retries are spent once
        # per outage, not once per record, so a run whose servers are gone ends soon (its
        # records are labelled again by the next run).
        self._outage = False

    @property
    def capacity(self) -> int:
        return self.llm.max_in_flight

    @property
    def in_flight(self) -> int:
        """Records on the servers now."""
        return sum(server.in_flight for server in self._servers)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the session and check every server (GET /models): its model name, whether it
        wants an API key. A wrong or missing key and no reachable server are user errors; an
        unreachable server among several is a warning and is tried again later."""
        headers = {}
        if self.llm.api_key_env:
            key = os.environ.get(self.llm.api_key_env, "")
            if not key:
                raise UserError(f"config: key 'llm.api_key_env': environment variable "
                                f"{self.llm.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        # The semaphore bounds the connections; the servers are the user's own, so the crawl's
        # address guard and politeness limits do not apply.
        self._session = aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=self.llm.request_timeout))
        try:
            reachable = [server for server in self._servers if await self._probe(server)]
        except BaseException:
            await self._session.close()
            self._session = None
            raise
        if not reachable:
            await self._session.close()
            self._session = None
            shown = ", ".join(server.shown for server in self._servers)
            raise UserError(f"config: key 'llm.base_urls': no labelling server answers ({shown})")
        for server in self._servers:
            if server.model is None and not self.llm.server_model:
                # Not listed (unreachable now, or no /models): the model the others serve.
                server.model = next((s.model for s in reachable if s.model), None)

    async def _probe(self, server: _Server) -> bool:
        """GET {base}/models: True when the server answers at all."""
        url = f"{server.url}/models"
        assert self._session is not None  # opened by start(), which probes the servers
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(
                    total=min(PROBE_TIMEOUT, self.llm.request_timeout))) as resp:
                status = resp.status
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("labelling server %s does not answer (%s); it is tried again later",
                        server.shown, type(e).__name__)
            server.avoid_until = time.monotonic() + AVOID_SECONDS
            server.failing = True
            return False
        if status in (401, 403):
            if self.llm.api_key_env:
                raise UserError(f"config: key 'llm.api_key_env': {server.shown} refuses the API key "
                                f"in {self.llm.api_key_env} (HTTP {status})")
            raise UserError(f"config: key 'llm.base_urls[{server.index}]': {server.shown} wants an "
                            f"API key (HTTP {status}); name its environment variable in llm.api_key_env")
        if status != 200:
            log.warning("labelling server %s answers HTTP %d on /models", server.shown, status)
            return True
        try:
            listed = orjson.loads(body).get("data") or []
        except (orjson.JSONDecodeError, AttributeError):
            listed = []
        first = listed[0] if listed and isinstance(listed[0], dict) else {}
        if server.model is None and isinstance(first.get("id"), str):
            server.model = first["id"]  # vLLM and SGLang need a model name in each request
        # llama-server lists its model as owned by "llamacpp". Only it gets "cache_prompt":
        # older llama-server versions drop the cached prompt without it, while older vLLM
        # versions refuse unknown fields (HTTP 400) and newer ones log a warning per request.
        server.llama_cpp = first.get("owned_by") == "llamacpp"
        # llama-cpp-python's server lists its models as owned by "me"; both llama.cpp servers
        # constrain sampling by a GBNF grammar (vLLM and SGLang do by other fields, or not).
        server.grammar = first.get("owned_by") in ("llamacpp", "me")
        return True

    async def close(self, drain: bool = True) -> None:
        """Wait for the records in flight, or (drain=False) cancel them: their label() calls end
        cancelled and their records, still leased in the store, return to pending at the next
        start."""
        if self._tasks:
            if not drain:
                for task in self._tasks:
                    task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- one record -----------------------------------------------------------------------

    async def label(self, label: str, data: list[str]) -> LabelResult:
        # A task of our own, so that close(drain=False) can cancel the record.
        task = asyncio.ensure_future(self._label(label, data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await task

    async def _label(self, label: str, data: list[str]) -> LabelResult:
        async with self._slots:
            self.stats["records"] += 1
            text, truncated = self.chat.record(label, data, self.llm.max_input_chars)
            self.stats["truncated"] += truncated
            server = self._least_busy()
            server.in_flight += 1
            record = _Record(server)
            if self.prompt.from_text:
                record.word_set = text_word_set(label, data)
            try:
                fields = await self._fields(record, text, self._seed(label, data))
            except _Failed as failure:
                result = LabelResult(None, failure.reason, truncated)
            else:
                result = answer_result(fields, truncated)
            finally:
                record.server.in_flight -= 1
            count_result(self.stats, result)
            return result

    def _seed(self, label: str, data: list[str]) -> int | None:
        """The engine's per-record seed (sampling only), in the 31 bits every server takes."""
        if self.llm.temperature <= 0:
            return None
        return record_seed(self.llm.seed, label, data) & 0x7FFFFFFF

    async def _fields(self, record: _Record, text: str, seed: int | None) -> dict[str, str | None]:
        fields: dict[str, str | None] = {}
        for index, (name, cap) in enumerate(self.prompt.max_tokens.items()):
            text += field_prefix(index, name)
            body = {"prompt": text, "max_tokens": cap, "stop": VALUE_STOPS,
                    "temperature": self.llm.temperature, "top_p": self.llm.top_p}
            if seed is not None:
                body["seed"] = seed
            # Only the digit rule goes to the server as a grammar: one of the record's words (a
            # grammar of hundreds of alternatives) made llama-server about 13x slower, because it
            # checks the whole vocabulary whenever the model's first choice is refused.
            grammar = NO_DIGITS_GRAMMAR if name in self.prompt.no_digits else None
            value = await self._complete(record, body, grammar)
            # The field rules, as the engine keeps them while generating: the value ends before
            # a digit, the first word over the limit or not in the text, whatever the server sent.
            end = value_end(self.prompt, name, value, record.word_set)
            value = value if end is None else value[:end]
            fields[name] = clean_value(value)
            text += value.rstrip()  # as the engine goes on
        return fields

    async def _complete(self, record: _Record, body: dict, grammar: str | None = None) -> str:
        """One completion: the generated text up to the first stop. Retries on the way.
        ``grammar`` (GBNF) goes to the servers that take one."""
        attempt = 0
        while True:
            server = record.server
            payload = dict(body)
            if server.model:
                payload["model"] = server.model
            if server.llama_cpp:
                payload["cache_prompt"] = True
            if grammar and server.grammar:
                payload["grammar"] = grammar
            retry_after = None
            assert self._session is not None  # opened by start(); records come after it
            try:
                async with self._session.post(f"{server.url}/completions", json=payload) as resp:
                    status = resp.status
                    if status == 200:
                        value = self._value(await resp.read())
                        self._outage = False
                        if server.failing:
                            server.failing = False
                            log.warning("labelling server %s answers again", server.shown)
                        return value
                    retry_after = resp.headers.get("Retry-After")
                    await resp.read()
                problem = f"HTTP {status}"
                if status != 429 and status < 500:
                    raise _Failed(reasons.server_http(status))
                down = status != 429  # a busy server asks to wait: not an outage
            except (aiohttp.ClientError, TimeoutError) as e:
                problem, down = type(e).__name__, True
            if not server.failing:
                server.failing = True
                log.warning("labelling server %s fails (%s): requests are retried, records whose "
                            "retries fail are %s and are labelled again by the next run",
                            server.shown, problem, reasons.SERVER_UNAVAILABLE)
            server.avoid_until = time.monotonic() + AVOID_SECONDS
            all_down = down and all(s.failing for s in self._servers)
            if attempt >= self.llm.retries or (all_down and self._outage):
                if all_down and not self._outage:
                    self._outage = True
                    log.warning("no labelling server answers: records fail at once as %s until one "
                                "answers again", reasons.SERVER_UNAVAILABLE)
                log.info("labelling server %s: %s, no retries left", server.shown, problem)
                raise _Failed(reasons.SERVER_UNAVAILABLE)
            attempt += 1
            delay = self.llm.backoff * 2 ** (attempt - 1) * random.uniform(0.75, 1.25)
            delay = max(delay, _retry_after_seconds(retry_after))
            log.info("labelling server %s: %s, retry %d in %.1f s", server.shown, problem, attempt, delay)
            self._move(record)
            await asyncio.sleep(delay)

    def _value(self, raw: bytes) -> str:
        try:
            answer = orjson.loads(raw)
            choice = answer["choices"][0]
            text = choice["text"]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            raise _Failed(reasons.SERVER_BAD_ANSWER) from None
        if not isinstance(text, str):
            raise _Failed(reasons.SERVER_BAD_ANSWER)
        usage = answer.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.stats["tokens"] += usage["completion_tokens"]
        # Servers differ in whether the text ends with the stop that ended it: cut at the first.
        cut = min((i for i in (text.find(stop) for stop in VALUE_STOPS) if i >= 0), default=len(text))
        return text[:cut]

    # --- choosing servers -----------------------------------------------------------------

    def _least_busy(self) -> _Server:
        """The server with the fewest records, among those that have not just failed."""
        now = time.monotonic()
        return min(self._servers, key=lambda s: (s.avoid_until > now, s.in_flight, s.index))

    def _move(self, record: _Record) -> None:
        """After a failed request: the record goes on on the next server (if there are several)."""
        if len(self._servers) < 2:
            return
        record.server.in_flight -= 1
        record.server = self._servers[(record.server.index + 1) % len(self._servers)]
        record.server.in_flight += 1


def _retry_after_seconds(header: str | None) -> float:
    """Retry-After as seconds (a number or an HTTP date), capped; 0 when absent or unreadable."""
    if not header:
        return 0.0
    try:
        seconds = float(header)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(header).timestamp() - time.time()
        except (TypeError, ValueError):
            return 0.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
