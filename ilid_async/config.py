"""config.toml + shops/*.toml + prompts/*.toml -> typed settings.

Every table is a msgspec Struct whose fields declare their types, bounds (``Meta``) and choices
(``Literal``): that is the one place that says what a setting may be. Unknown keys, wrong types
and values out of bounds are user errors that name the file and the dotted key, because a typo in
a crawl config must never be silently ignored. Checks across keys and files follow the tables.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, field

from ilid_async.errors import UserError
from ilid_async.fields import LABEL_FIELDS, GroundedField, LabelField
from ilid_async.label.quality import first_word_not_from_text, text_word_set

__all__ = [
    "DEMO_PLACEHOLDER", "DEFAULT_MAX_WORDS", "PACKAGED_PROMPT", "LOADED", "STAGES", "AtLeast0", "AtLeast1", "Seconds",
    "Delay", "Rate", "Fraction", "Port", "HeaderText", "FileName", "ServerUrl", "RunSettings", "DemoSettings",
    "HostLimits", "HttpSettings", "LlmSettings", "ImageSettings", "OutputSettings", "FilterSettings", "Selectors",
    "ShopConfig", "PromptExample", "PromptConfig", "Config", "SettingError", "build_settings", "check_setting",
    "load_shop", "load_prompt", "load_config"
]

DEMO_PLACEHOLDER = "{demo}"
# The prompt's own word limits (rules §3): a short label of at most 4 words, a description of at
# most 30; material and finish are short phrases.
DEFAULT_MAX_WORDS = {"label_short": 4, "description": 30, "material": 5, "material_finish": 5}
PACKAGED_PROMPT = Path(__file__).parent / "prompts" / "default.toml"
# Marks fields that the loader fills in; they are not keys of any file.
LOADED = "loaded"
STAGES = ("crawl", "label", "images", "dataset")

# --- what a value may be -------------------------------------------------------------------------
# A bound is worded from its Meta ("must be at least 1", "must be in 1..65535") unless the Meta
# has a description, which is then the whole problem. Besides these, no float may be nan or inf
# and no integer may leave TOML's 64 bits (_check_numbers): nan passes no comparison, so a timeout
# or rate of nan would quietly mean "none" or "never".
AtLeast0 = Annotated[int, Meta(ge=0)]
AtLeast1 = Annotated[int, Meta(ge=1)]
Seconds = Annotated[float, Meta(gt=0)]  # a time limit: 0 or less would be none at all
Delay = Annotated[float, Meta(ge=0)]
Rate = Annotated[float, Meta(ge=0)]  # requests per second; 0 = no limit
Fraction = Annotated[float, Meta(gt=0, le=1)]
Port = Annotated[int, Meta(ge=1, le=65535)]
# Sent as an HTTP header value, where a CR or LF would end the header early.
HeaderText = Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f-\x9f]*\Z",
                                 description="must not contain line breaks or other control characters")]
FileName = Annotated[str, Meta(pattern=r"^(?!\.\.?\Z)[^/\\\x00-\x1f\x7f]+\Z",
                               description="must be a plain file name (not empty, no folders, not . or ..)")]
ServerUrl = Annotated[str, Meta(pattern=r"^https?://", description="must start with http:// or https://")]


class _Table(msgspec.Struct, forbid_unknown_fields=True):
    """One table of a settings file; a key it does not declare is an error, not ignored."""

    def replace(self: _T, **changes: Any) -> _T:
        """A copy with some values changed."""
        return msgspec.structs.replace(self, **changes)


_T = TypeVar("_T", bound=_Table)


class RunSettings(_Table, kw_only=True):
    dir: str = "runs/demo"  # run folder: state.sqlite, dataset file, images/
    dataset: FileName = "ilid.json"  # dataset file name inside the run folder
    shops: list[str] = []  # shop files, relative to the config file
    # Back-pressure: the crawl pauses while this many records wait for labelling.
    max_label_backlog: AtLeast1 = 2000
    # Processes that parse product pages: -1 = one per core but one (the event loop's), 0 = parse
    # in the event loop's process (no pool: fine for small shops).
    extract_workers: Annotated[int, Meta(ge=-1, description="must be -1 (auto), 0 or more")] = -1


class DemoSettings(_Table, kw_only=True):
    enabled: bool = False  # serve the bundled demo shop on loopback during the run
    host: str = "127.0.0.1"
    port: Port = 8642  # fixed, so that image URLs (and so record ids) are the same every run
    products: AtLeast1 = 320
    seed: int = 7


_HOST_RATE = "must be -1 (http.per_host_rate), 0 (no limit) or more"


class HostLimits(_Table, kw_only=True):
    """Per-host override of the default politeness limits; -1 / 0 keep the default."""

    # requests per second; 0 = no limit; -1 = http.per_host_rate
    rate: Annotated[float, Meta(ge=-1, description=_HOST_RATE)] = -1.0
    concurrency: AtLeast0 = 0  # requests in flight; 0 = http.per_host_concurrency


class HttpSettings(_Table, kw_only=True):
    user_agent: HeaderText = "ilid-async/0.1 (language-image dataset crawler)"
    concurrency: AtLeast1 = 32  # requests in flight over all hosts
    per_host_concurrency: AtLeast1 = 4
    per_host_rate: Rate = 4.0  # requests per second per host; 0 = no limit
    hosts: dict[str, HostLimits] = {}  # overrides by host name
    connect_timeout: Seconds = 10.0
    timeout: Seconds = 30.0  # total time for one request, body included
    retries: AtLeast0 = 3  # extra attempts after the first for transient failures
    backoff: Delay = 0.5  # first retry delay in seconds; doubles each time, with jitter
    max_redirects: AtLeast0 = 5
    max_page_bytes: AtLeast1 = 5_000_000
    max_sitemap_bytes: AtLeast1 = 100_000_000  # after gzip decompression
    # Sitemaps per shop and crawl pass, and index levels below the sitemaps the shop file (or
    # its robots.txt) names: generated index chains must not grow the crawl without end.
    max_sitemaps: AtLeast1 = 10_000
    max_sitemap_depth: AtLeast0 = 4
    max_image_bytes: AtLeast1 = 25_000_000
    allow_loopback: bool = False  # fetch from 127.0.0.0/8 and ::1 (demo shop, tests)
    allow_private: bool = False  # fetch from private, link-local and other internal ranges

    def limits_for(self, host: str) -> tuple[float, int]:
        """(requests per second, concurrency) for a host: its override, else the defaults."""
        # Host names are case-insensitive: an override written "Shop.Example" still applies.
        override = self.hosts.get(host) or next(
            (limits for name, limits in self.hosts.items() if name.lower() == host.lower()), HostLimits())
        rate = self.per_host_rate if override.rate < 0 else override.rate
        return rate, override.concurrency or self.per_host_concurrency


class LlmSettings(_Table, kw_only=True):
    # "llama.cpp": the model runs in this process (label/engine.py); "openai": records go to
    # one or more OpenAI-compatible completions servers (label/openai_backend.py).
    backend: Literal["llama.cpp", "openai"] = "llama.cpp"
    model: str = ""  # GGUF file; empty = the small demo model (a warning is printed)
    # Prompt file, relative to the config file; "" = the prompt packaged with ilid-async
    # (ilid_async/prompts/default.toml), so a config in any folder works without its own.
    prompt: str = ""
    # tokens one record may use (prompt + answer); each sequence has its own
    n_ctx: Annotated[int, Meta(ge=256)] = 2048
    n_parallel: AtLeast1 = 8  # records labelled at once (llama.cpp sequences); more suits a GPU
    # -1 = offload every layer
    n_gpu_layers: Annotated[int, Meta(ge=-1, description="must be -1 (every layer), 0 or more")] = 0
    n_threads: AtLeast0 = 0  # 0 = llama.cpp's choice
    n_batch: AtLeast1 = 512  # most tokens per llama_decode, summed over the records in flight
    # llama.cpp's flash attention: on, off, or auto (llama.cpp's choice: on where the device
    # supports it, CPUs included; faster for batched labelling). llm.reproducible turns auto off.
    flash_attn: Literal["auto", "on", "off"] = "auto"
    temperature: Annotated[float, Meta(ge=0)] = 0.0  # 0 = greedy, reproducible
    top_p: Fraction = 1.0
    seed: int = 1234
    debug_fraction: Fraction = 1.0  # label only this fraction of records (0, 1]
    max_input_chars: AtLeast1 = 1500  # longer page text is truncated (and counted)
    # Exact batch-independent labels (in-process engine): each prompt decoded alone, generation
    # steps of one fixed shape, no repacked CPU weights. Slower; off = throughput first.
    reproducible: bool = False
    # The "openai" backend: base URLs such as "http://10.0.0.5:8000/v1" (records are spread
    # over them), the model name sent with each request ("" = the server's default), requests
    # in flight over all servers, the environment variable that holds the API key (the key
    # itself never appears in a config, the store or a log), and retry behaviour.
    base_urls: list[ServerUrl] = []
    server_model: str = ""
    max_in_flight: AtLeast1 = 16
    api_key_env: str = ""
    request_timeout: Seconds = 120.0  # seconds for one completion request
    retries: AtLeast0 = 4  # extra attempts per request on connection errors, 429 and 5xx
    backoff: Delay = 0.5  # first retry delay in seconds; doubles each time, with jitter


class ImageSettings(_Table, kw_only=True):
    width: AtLeast1 = 512
    height: AtLeast1 = 512
    workers: AtLeast0 = 0  # processes for decode/resize/encode; 0 = number of cores
    max_pixels: AtLeast1 = 50_000_000  # decoded size cap, checked from the header before decoding
    format: Literal["png", "jpeg", "webp"] = "png"
    # zlib level: 1 is several times faster, files ~15% larger
    png_compress_level: Annotated[int, Meta(ge=0, le=9)] = 6
    quality: Annotated[int, Meta(ge=1, le=100)] = 90  # JPEG and WebP quality
    # Exact (same downloaded bytes) and near duplicates (perceptual hashes at most
    # near_duplicate_bits apart; -1 = exact copies only): "keep" them all (and count them),
    # "drop" all but the first, or "group" them (the metadata outputs name the first).
    duplicates: Literal["keep", "drop", "group"] = "keep"
    near_duplicate_bits: Annotated[int, Meta(ge=-1, le=16)] = 4


class OutputSettings(_Table, kw_only=True):
    # What the dataset stage writes: "ilid" (the dataset JSON beside images/, as ILID ships),
    # "webdataset" (tar shards of image + JSON for open_clip and webdataset loaders), "jsonl"
    # and "parquet" (one metadata row per image, with hashes and duplicate groups).
    formats: list[Literal["ilid", "webdataset", "jsonl", "parquet"]] = field(default_factory=lambda: ["ilid"])
    shard_size: AtLeast1 = 1000  # samples per WebDataset shard


class FilterSettings(_Table, kw_only=True):
    min_field_length: AtLeast0 = 4
    # Fields whose not-grounded labels (a word the page text lacks) reject the record;
    # default none = count only (label_long, label_short, material, material_finish).
    reject_ungrounded: list[GroundedField] = []


class Selectors(_Table, kw_only=True):
    product: str = ""
    image: str = ""
    label: str = ""
    data: str = ""


class ShopConfig(_Table, kw_only=True):
    source: str = ""
    robots_urls: list[str] = []
    sitemap_urls: list[str] = []
    sitemap_follow: list[str] = []
    sitemap_rules: list[list[str]] = []
    allowed_domains: list[str] = []
    accept_language: HeaderText = "en-US,en"
    obey_robots: bool = True
    image_endings: list[str] = field(default_factory=lambda: [".jpg"])
    tradename_regex: str = ""
    selectors: Selectors = field(default_factory=Selectors)
    # Fill what the selectors miss from the page's schema.org data (JSON-LD, microdata,
    # OpenGraph); a shop without selectors always uses that data.
    structured_fallback: bool = False
    name: Annotated[str, LOADED] = ""  # the file's stem
    path: Annotated[str, LOADED] = ""

    def with_demo_url(self, base_url: str) -> ShopConfig:
        """The same shop with ``{demo}`` replaced by the running demo server's URL."""

        def sub(values: list[str]) -> list[str]:
            return [v.replace(DEMO_PLACEHOLDER, base_url) for v in values]

        return self.replace(robots_urls=sub(self.robots_urls), sitemap_urls=sub(self.sitemap_urls))

    def page_action(self, url: str) -> str | None:
        """rules §1: the first sitemap rule whose regex matches the URL decides; None = not visited."""
        for pattern, action in self._compiled_rules:
            if pattern.search(url):
                return action
        return None

    def follows_sitemap(self, url: str) -> bool:
        return not self._compiled_follow or any(p.search(url) for p in self._compiled_follow)

    @property
    def _compiled_rules(self) -> list[tuple[re.Pattern, str]]:
        return [(re.compile(regex), action) for regex, action in self.sitemap_rules]

    @property
    def _compiled_follow(self) -> list[re.Pattern]:
        return [re.compile(regex) for regex in self.sitemap_follow]


class PromptExample(_Table, kw_only=True):
    """One worked example of a prompt file's [[examples]]: a record as the pre-filter leaves
    it (label, text) and the five answers the model should give for it."""

    label: str = ""
    text: str = ""
    label_long: str = ""
    label_short: str = ""
    description: str = ""
    material: str = ""
    material_finish: str = ""


class PromptConfig(_Table, kw_only=True):
    system: str = ""
    user: str = ""
    # Chat format for models whose file carries none: a Jinja chat template over `messages`
    # (roles system, user, assistant) and `add_generation_prompt`, as in a model's tokenizer
    # config; or a one-turn text with {system} and {user} (no examples then).
    template: str = ""
    # Tokens each field may use; also fixes the order in which the fields are generated.
    max_tokens: dict[str, AtLeast1] = {}
    # Field rules kept while the model writes: a value ends after this many words, and (for
    # the fields in no_digits) no token with a digit is ever chosen.
    max_words: dict[str, AtLeast1] = field(default_factory=lambda: dict(DEFAULT_MAX_WORDS))
    no_digits: list[LabelField] = field(default_factory=lambda: list(LABEL_FIELDS))
    # Fields written only in words of the record's own text (or "none"): what a page states,
    # never a material or finish the model remembers from the examples.
    from_text: list[LabelField] = field(default_factory=lambda: ["material", "material_finish"])
    # Worked examples, shown to the model as earlier turns of the chat before the record.
    examples: list[PromptExample] = []
    path: Annotated[str, LOADED] = ""


class Config(_Table, kw_only=True):
    run: RunSettings = field(default_factory=RunSettings)
    demo: DemoSettings = field(default_factory=DemoSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    llm: LlmSettings = field(default_factory=LlmSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    filters: FilterSettings = field(default_factory=FilterSettings)
    # Loaded from the files named above, not keys of config.toml.
    shops: Annotated[list[ShopConfig], LOADED] = []
    prompt: Annotated[PromptConfig, LOADED] = field(default_factory=PromptConfig)
    path: Annotated[str, LOADED] = ""

    @property
    def run_dir(self) -> Path:
        return Path(self.path).parent / self.run.dir

    @property
    def store_path(self) -> Path:
        return self.run_dir / "state.sqlite"

    @property
    def dataset_path(self) -> Path:
        return self.run_dir / self.run.dataset

    @property
    def images_dir(self) -> Path:
        return self.run_dir / "images"


_ACTIONS = ("product", "ignore")


# --- turning a table into settings ---------------------------------------------------------------


class SettingError(ValueError):
    """A bad value at a dotted key of a settings table; the loader adds the file's name, the
    command line the flag's."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"key '{key}': {problem}")
        self.key = key
        self.problem = problem


def build_settings(cls: type[_T], table: dict[str, Any]) -> _T:
    """The settings ``cls`` from a TOML table (ints widen to float); SettingError for the first
    bad key."""
    for key in table:
        if key in _loaded_fields(cls):
            raise SettingError(key, "unknown key")
    try:
        settings = msgspec.convert(table, cls)
    except msgspec.ValidationError as e:
        raise _explain(cls, table, str(e)) from None
    _check_numbers(table, "")
    return settings


def check_setting(cls: type[_Table], key: str, value: Any) -> Any:
    """``value`` as setting ``key`` of ``cls`` takes it, or SettingError: for command-line flags
    that stand for a setting and so keep its bounds."""
    return getattr(build_settings(cls, {key: value}), key)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


@functools.cache
def _loaded_fields(cls: type) -> frozenset[str]:
    return frozenset(name for name, tp in _hints(cls).items() if LOADED in getattr(tp, "__metadata__", ()))


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _check_numbers(value: Any, key: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _check_numbers(v, _join(key, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_numbers(v, f"{key}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise SettingError(key, f"must be a finite number, not {value}")
    elif isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise SettingError(key, "out of range (TOML integers have 64 bits)")


# A ValidationError ends "- at `$.http.hosts[...].rate`": fields, list indexes, and [...] for
# a table's key, which msgspec does not name.
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")
_TYPE_NAMES = {"object": "a table", "array": "a list"}


def _explain(cls: type, table: dict, message: str) -> SettingError:
    text, _, where = message.partition(" - at `$")
    key, tp, value = _locate(cls, table, where.rstrip("`"))
    if unknown := re.fullmatch(r"Object contains unknown field `(.*)`", text):
        return SettingError(_join(key, unknown[1]), "unknown key")
    return SettingError(key, _problem(text, tp, value))


def _locate(cls: type, table: dict, where: str) -> tuple[str, Any, Any]:
    """The dotted key, declared type and file value at an error's location."""
    value: Any
    key, tp, value = "", cls, table
    for name, index in _STEP.findall(where):
        tp = _unwrap(tp)[0]
        if name:
            tp, value, key = _hints(tp)[name], value[name], _join(key, name)
        elif index:
            tp, value, key = typing.get_args(tp)[0], value[int(index)], f"{key}[{index}]"
        else:  # the table's first entry that the value type refuses is the one meant
            tp = typing.get_args(tp)[1]
            name, value = next(((k, v) for k, v in value.items() if not _fits(v, tp)), ("[...]", None))
            key = _join(key, name)
    return key, tp, value


def _fits(value: Any, tp: Any) -> bool:
    try:
        msgspec.convert(value, tp)
    except msgspec.ValidationError:
        return False
    return True


def _unwrap(tp: Any) -> tuple[Any, tuple]:
    """(type, its Annotated metadata)."""
    if typing.get_origin(tp) is Annotated:
        return tp.__origin__, tp.__metadata__
    return tp, ()


def _problem(text: str, tp: Any, value: Any) -> str:
    """msgspec's message in the words of a settings file."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, not {value}"
    base, metadata = _unwrap(tp)
    if wrong := re.match(r"Expected `(\w+)`, got `(\w+)`", text):
        return f"expected {_TYPE_NAMES.get(wrong[1], wrong[1])}, got {_TYPE_NAMES.get(wrong[2], wrong[2])}"
    if typing.get_origin(base) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(base)))
    for meta in metadata:
        if isinstance(meta, Meta):
            return meta.description or _bounds(meta, base)
    return text[:1].lower() + text[1:]


def _bounds(meta: Meta, base: Any) -> str:
    low = meta.gt if meta.gt is not None else meta.ge
    high = meta.lt if meta.lt is not None else meta.le
    if low is not None and high is not None:
        if base is int and meta.ge is not None and meta.le is not None:
            return f"must be in {low}..{high}"
        return (f"must be in {'(' if meta.gt is not None else '['}{low}, "
                f"{high}{')' if meta.lt is not None else ']'}")
    if meta.gt is not None:
        return f"must be > {meta.gt}"
    if meta.ge is not None:
        return f"must be at least {meta.ge}"
    return f"must be < {meta.lt}" if meta.lt is not None else f"must be at most {meta.le}"


def _key(file: str, dotted: str) -> str:
    return f"{file}: key '{dotted}'"


def _read_toml(path: Path, what: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: {what} file not found") from None
    except UnicodeDecodeError as e:  # TOML files are UTF-8 by definition
        raise UserError(f"{path}: not valid UTF-8 (byte {e.start}); save the {what} file as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read {what} file ({e.strerror})") from None


def _build_file(cls: type[_T], table: dict, file: Path) -> _T:
    """Settings from a whole file; errors read ``file: key 'a.b': problem``."""
    try:
        return build_settings(cls, table)
    except SettingError as e:
        raise UserError(f"{file}: {e}") from None


def load_shop(path: Path) -> ShopConfig:
    shop: ShopConfig = _build_file(ShopConfig, _read_toml(path, "shop"), path)
    shop.name = path.stem
    shop.path = str(path)
    if not shop.source:
        raise UserError(f"{_key(str(path), 'source')}: required (the dataset's source tag)")
    if not shop.robots_urls and not shop.sitemap_urls:
        raise UserError(f"{_key(str(path), 'sitemap_urls')}: give sitemap_urls or robots_urls")
    for i, rule in enumerate(shop.sitemap_rules):
        if len(rule) != 2 or rule[1] not in _ACTIONS:
            raise UserError(
                f"{_key(str(path), f'sitemap_rules[{i}]')}: expected [regex, action] with action "
                f"one of {', '.join(_ACTIONS)}"
            )
    regex_keys = [(f"sitemap_rules[{i}]", r[0]) for i, r in enumerate(shop.sitemap_rules)]
    regex_keys += [(f"sitemap_follow[{i}]", r) for i, r in enumerate(shop.sitemap_follow)]
    regex_keys += [("tradename_regex", shop.tradename_regex)]
    for key, regex in regex_keys:
        try:
            re.compile(regex)
        except re.error as e:
            raise UserError(f"{_key(str(path), key)}: bad regex ({e})") from None
    from ilid_async.crawl.extract import check_selector  # late import: config must load without HTML parsing

    names = ("product", "image", "label", "data")
    # No selectors at all: every field comes from structured data. Some selectors: the rest
    # are required unless the shop asks for structured data to fill them.
    any_selector = any(getattr(shop.selectors, name) for name in names)
    for name in names:
        css = getattr(shop.selectors, name)
        if not css:
            if any_selector and not shop.structured_fallback:
                raise UserError(f"{_key(str(path), 'selectors.' + name)}: required "
                                "(or set structured_fallback = true)")
            continue
        try:
            check_selector(css)
        except ValueError as e:
            raise UserError(f"{_key(str(path), 'selectors.' + name)}: bad CSS selector ({e})") from None
    return shop


def load_prompt(path: Path) -> PromptConfig:
    prompt: PromptConfig = _build_file(PromptConfig, _read_toml(path, "prompt"), path)
    prompt.path = str(path)
    f = str(path)
    for key in ("system", "user"):
        if not getattr(prompt, key):
            raise UserError(f"{_key(f, key)}: required")
    for placeholder in ("{label}", "{text}"):
        if placeholder not in prompt.user:
            raise UserError(f"{_key(f, 'user')}: must contain {placeholder}")
    unknown = set(prompt.max_tokens) - set(LABEL_FIELDS)
    missing = set(LABEL_FIELDS) - set(prompt.max_tokens)
    if unknown:
        raise UserError(f"{_key(f, 'max_tokens.' + sorted(unknown)[0])}: unknown field")
    if missing:
        raise UserError(f"{_key(f, 'max_tokens.' + sorted(missing)[0])}: required")
    for name in prompt.max_words:
        _require(name in LABEL_FIELDS, f, f"max_words.{name}", "unknown field")
    for index, example in enumerate(prompt.examples):
        _check_example(prompt, example, f, f"examples[{index}]")
    _check_template(prompt, f)
    return prompt


_DIGIT = re.compile(r"\d")


def _check_example(prompt: PromptConfig, example: PromptExample, file: str, key: str) -> None:
    """An example teaches the model what an answer looks like: it must be one the rules allow,
    for a record as the pre-filter leaves it (no digits)."""
    for name in ("label", "text"):
        value = getattr(example, name)
        _require(bool(value.strip()), file, f"{key}.{name}", "required")
        _require(not _DIGIT.search(value), file, f"{key}.{name}",
                 "write it as the pre-filter leaves a record: without digits")
    for name in LABEL_FIELDS:
        value = getattr(example, name)
        _require(bool(value.strip()), file, f"{key}.{name}", 'required (write "none" where the text does not say)')
        _require('"' not in value and "\n" not in value and "\\" not in value, file, f"{key}.{name}",
                 "must not contain quotes, backslashes or line breaks (they end a value)")
        if name in prompt.no_digits:
            _require(not _DIGIT.search(value), file, f"{key}.{name}", "must not contain digits (no_digits)")
        limit = prompt.max_words.get(name)
        if limit:
            _require(len(value.split()) <= limit, file, f"{key}.{name}", f"more than {limit} words (max_words)")
        if name in prompt.from_text:
            words = text_word_set(example.label, [example.text])
            _require(first_word_not_from_text(value, words, complete=True) is None, file, f"{key}.{name}",
                     "has words that are not in the example's label or text (from_text)")


def _check_template(prompt: PromptConfig, file: str) -> None:
    if not prompt.template:
        return
    from ilid_async.label.chat_format import ChatFormat  # depends on nothing of ours but Jinja

    try:
        fmt = ChatFormat(prompt.template)
        fmt.render("s", [("u", "a")] if prompt.examples else [], "u")
    except ValueError as e:
        raise UserError(f"{_key(file, 'template')}: {e}") from None


def _require(cond: bool, file: str, key: str, problem: str) -> None:
    if not cond:
        raise UserError(f"{_key(file, key)}: {problem}")


def load_config(path: str | Path) -> Config:
    path = Path(path)
    table = _read_toml(path, "config")
    cfg: Config = _build_file(Config, table, path)
    cfg.path = str(path)
    base = path.parent
    f = str(path)
    # Types, bounds and choices were checked with the tables; these checks span keys or files.
    _require(bool(cfg.run.shops), f, "run.shops", "list at least one shop file")
    if "parquet" in cfg.output.formats:
        _require(importlib.util.find_spec("pyarrow") is not None, f, "output.formats",
                 "parquet needs pyarrow (pip install 'ilid-async[parquet]')")
    _require(cfg.llm.n_batch >= cfg.llm.n_parallel, f, "llm.n_batch",
             "must be at least llm.n_parallel (each decode carries one token of every record)")
    _require(not (cfg.llm.reproducible and cfg.llm.flash_attn == "on"), f, "llm.flash_attn",
             "cannot be on with llm.reproducible (its sums depend on the decode's shape); use auto or off")
    if cfg.llm.backend == "openai":
        _require(bool(cfg.llm.base_urls), f, "llm.base_urls", "list at least one server URL for backend 'openai'")
        if cfg.llm.api_key_env:
            _require(bool(os.environ.get(cfg.llm.api_key_env)), f, "llm.api_key_env",
                     f"environment variable {cfg.llm.api_key_env} is not set")
    if cfg.llm.model and cfg.llm.backend == "llama.cpp":
        model = base / cfg.llm.model
        _require(model.is_file(), f, "llm.model", f"model file not found: {model}")
        cfg.llm.model = str(model)
    cfg.shops = [load_shop(base / shop) for shop in cfg.run.shops]
    _require(len({s.name for s in cfg.shops}) == len(cfg.shops), f, "run.shops",
             "two shop files have the same name")
    cfg.prompt = load_prompt(base / cfg.llm.prompt if cfg.llm.prompt else PACKAGED_PROMPT)
    return cfg
