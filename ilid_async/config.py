"""config.toml + shops/*.toml + prompts/*.toml -> typed settings.

Every table is a dataclass; every key has a default unless marked required. Unknown keys and
wrong types are user errors that name the file and the dotted key, because a typo in a crawl
config must never be silently ignored.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .label.quality import GROUNDED_FIELDS, first_word_not_from_text, text_word_set

DEMO_PLACEHOLDER = "{demo}"
LABEL_FIELDS = ("label_long", "label_short", "description", "material", "material_finish")
# The prompt's own word limits (SPEC 3): a short label of at most 4 words, a description of at
# most 30; material and finish are short phrases.
DEFAULT_MAX_WORDS = {"label_short": 4, "description": 30, "material": 5, "material_finish": 5}
PACKAGED_PROMPT = Path(__file__).parent / "prompts" / "default.toml"
# Marks fields that the loader fills in; they are not keys of any file.
LOADED = {"loaded": True}
STAGES = ("crawl", "label", "images", "dataset")


@dataclass
class RunSettings:
    dir: str = "runs/demo"  # run folder: state.sqlite, dataset file, images/
    dataset: str = "ilid.json"  # dataset file name inside the run folder
    shops: list[str] = field(default_factory=list)  # shop files, relative to the config file
    # Back-pressure: the crawl pauses while this many records wait for labelling.
    max_label_backlog: int = 2000
    # Processes that parse product pages: -1 = one per core but one (the event loop's), 0 = parse
    # in the event loop's process (no pool: fine for small shops).
    extract_workers: int = -1


@dataclass
class DemoSettings:
    enabled: bool = False  # serve the bundled demo shop on loopback during the run
    host: str = "127.0.0.1"
    port: int = 8642  # fixed, so that image URLs (and so record ids) are the same every run
    products: int = 320
    seed: int = 7


@dataclass
class HostLimits:
    """Per-host override of the default politeness limits; -1 / 0 keep the default."""

    rate: float = -1.0  # requests per second; 0 = no limit; -1 = http.per_host_rate
    concurrency: int = 0  # requests in flight; 0 = http.per_host_concurrency


@dataclass
class HttpSettings:
    user_agent: str = "ilid-async/0.1 (language-image dataset crawler)"
    concurrency: int = 32  # requests in flight over all hosts
    per_host_concurrency: int = 4
    per_host_rate: float = 4.0  # requests per second per host; 0 = no limit
    hosts: dict[str, HostLimits] = field(default_factory=dict)  # overrides by host name
    connect_timeout: float = 10.0
    timeout: float = 30.0  # total time for one request, body included
    retries: int = 3  # extra attempts after the first for transient failures
    backoff: float = 0.5  # first retry delay in seconds; doubles each time, with jitter
    max_redirects: int = 5
    max_page_bytes: int = 5_000_000
    max_sitemap_bytes: int = 100_000_000  # after gzip decompression
    # Sitemaps per shop and crawl pass, and index levels below the sitemaps the shop file (or
    # its robots.txt) names: generated index chains must not grow the crawl without end.
    max_sitemaps: int = 10_000
    max_sitemap_depth: int = 4
    max_image_bytes: int = 25_000_000
    allow_loopback: bool = False  # fetch from 127.0.0.0/8 and ::1 (demo shop, tests)
    allow_private: bool = False  # fetch from private, link-local and other internal ranges

    def limits_for(self, host: str) -> tuple[float, int]:
        """(requests per second, concurrency) for a host: its override, else the defaults."""
        override = self.hosts.get(host, HostLimits())
        rate = self.per_host_rate if override.rate < 0 else override.rate
        return rate, override.concurrency or self.per_host_concurrency


@dataclass
class LlmSettings:
    # "llama.cpp": the model runs in this process (label/engine.py); "openai": records go to
    # one or more OpenAI-compatible completions servers (label/openai_backend.py).
    backend: str = "llama.cpp"
    model: str = ""  # GGUF file; empty = the small demo model (a warning is printed)
    # Prompt file, relative to the config file; "" = the prompt packaged with ilid-async
    # (ilid_async/prompts/default.toml), so a config in any folder works without its own.
    prompt: str = ""
    n_ctx: int = 2048  # tokens one record may use (prompt + answer); each sequence has its own
    n_parallel: int = 8  # records labelled at once (llama.cpp sequences); more suits a GPU
    n_gpu_layers: int = 0  # -1 = offload every layer
    n_threads: int = 0  # 0 = llama.cpp's choice
    n_batch: int = 512  # most tokens per llama_decode, summed over the records in flight
    # llama.cpp's flash attention: on, off, or auto (llama.cpp's choice: on where the device
    # supports it, CPUs included; faster for batched labelling). llm.reproducible turns auto off.
    flash_attn: str = "auto"
    temperature: float = 0.0  # 0 = greedy, reproducible
    top_p: float = 1.0
    seed: int = 1234
    debug_fraction: float = 1.0  # label only this fraction of records (0, 1]
    max_input_chars: int = 1500  # longer page text is truncated (and counted)
    # Exact batch-independent labels (in-process engine): each prompt decoded alone, generation
    # steps of one fixed shape, no repacked CPU weights. Slower; off = throughput first.
    reproducible: bool = False
    # The "openai" backend: base URLs such as "http://10.0.0.5:8000/v1" (records are spread
    # over them), the model name sent with each request ("" = the server's default), requests
    # in flight over all servers, the environment variable that holds the API key (the key
    # itself never appears in a config, the store or a log), and retry behaviour.
    base_urls: list[str] = field(default_factory=list)
    server_model: str = ""
    max_in_flight: int = 16
    api_key_env: str = ""
    request_timeout: float = 120.0  # seconds for one completion request
    retries: int = 4  # extra attempts per request on connection errors, 429 and 5xx
    backoff: float = 0.5  # first retry delay in seconds; doubles each time, with jitter


@dataclass
class ImageSettings:
    width: int = 512
    height: int = 512
    workers: int = 0  # processes for decode/resize/encode; 0 = number of cores
    max_pixels: int = 50_000_000  # decoded size cap, checked from the header before decoding
    format: str = "png"  # png, jpeg or webp
    png_compress_level: int = 6  # zlib level 0-9: 1 is several times faster, files ~15% larger
    quality: int = 90  # JPEG and WebP quality, 1-100
    # Exact (same downloaded bytes) and near duplicates (perceptual hashes at most
    # near_duplicate_bits apart; -1 = exact copies only): "keep" them all (and count them),
    # "drop" all but the first, or "group" them (the metadata outputs name the first).
    duplicates: str = "keep"
    near_duplicate_bits: int = 4


@dataclass
class OutputSettings:
    # What the dataset stage writes: "ilid" (the dataset JSON beside images/, as ILID ships),
    # "webdataset" (tar shards of image + JSON for open_clip and webdataset loaders), "jsonl"
    # and "parquet" (one metadata row per image, with hashes and duplicate groups).
    formats: list[str] = field(default_factory=lambda: ["ilid"])
    shard_size: int = 1000  # samples per WebDataset shard


@dataclass
class FilterSettings:
    min_field_length: int = 4
    # Fields whose not-grounded labels (a word the page text lacks) reject the record;
    # default none = count only (label_long, label_short, material, material_finish).
    reject_ungrounded: list[str] = field(default_factory=list)


@dataclass
class Selectors:
    product: str = ""
    image: str = ""
    label: str = ""
    data: str = ""


@dataclass
class ShopConfig:
    source: str = ""
    robots_urls: list[str] = field(default_factory=list)
    sitemap_urls: list[str] = field(default_factory=list)
    sitemap_follow: list[str] = field(default_factory=list)
    sitemap_rules: list[list[str]] = field(default_factory=list)
    allowed_domains: list[str] = field(default_factory=list)
    accept_language: str = "en-US,en"
    obey_robots: bool = True
    image_endings: list[str] = field(default_factory=lambda: [".jpg"])
    tradename_regex: str = ""
    selectors: Selectors = field(default_factory=Selectors)
    # Fill what the selectors miss from the page's schema.org data (JSON-LD, microdata,
    # OpenGraph); a shop without selectors always uses that data.
    structured_fallback: bool = False
    name: str = field(default="", metadata=LOADED)  # the file's stem
    path: str = field(default="", metadata=LOADED)

    def with_demo_url(self, base_url: str) -> ShopConfig:
        """The same shop with ``{demo}`` replaced by the running demo server's URL."""

        def sub(values: list[str]) -> list[str]:
            return [v.replace(DEMO_PLACEHOLDER, base_url) for v in values]

        return dataclasses.replace(
            self, robots_urls=sub(self.robots_urls), sitemap_urls=sub(self.sitemap_urls)
        )

    def page_action(self, url: str) -> str | None:
        """SPEC 1: the first sitemap rule whose regex matches the URL decides; None = not visited."""
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


@dataclass
class PromptExample:
    """One worked example of a prompt file's [[examples]]: a record as the pre-filter leaves
    it (label, text) and the five answers the model should give for it."""

    label: str = ""
    text: str = ""
    label_long: str = ""
    label_short: str = ""
    description: str = ""
    material: str = ""
    material_finish: str = ""


@dataclass
class PromptConfig:
    system: str = ""
    user: str = ""
    # Chat format for models whose file carries none: a Jinja chat template over `messages`
    # (roles system, user, assistant) and `add_generation_prompt`, as in a model's tokenizer
    # config; or a one-turn text with {system} and {user} (no examples then).
    template: str = ""
    # Tokens each field may use; also fixes the order in which the fields are generated.
    max_tokens: dict[str, int] = field(default_factory=dict)
    # Field rules kept while the model writes: a value ends after this many words, and (for
    # the fields in no_digits) no token with a digit is ever chosen.
    max_words: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_WORDS))
    no_digits: list[str] = field(default_factory=lambda: list(LABEL_FIELDS))
    # Fields written only in words of the record's own text (or "none"): what a page states,
    # never a material or finish the model remembers from the examples.
    from_text: list[str] = field(default_factory=lambda: ["material", "material_finish"])
    # Worked examples, shown to the model as earlier turns of the chat before the record.
    examples: list[PromptExample] = field(default_factory=list)
    path: str = field(default="", metadata=LOADED)


@dataclass
class Config:
    run: RunSettings = field(default_factory=RunSettings)
    demo: DemoSettings = field(default_factory=DemoSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    llm: LlmSettings = field(default_factory=LlmSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    filters: FilterSettings = field(default_factory=FilterSettings)
    # Loaded from the files named above, not keys of config.toml.
    shops: list[ShopConfig] = field(default_factory=list, metadata=LOADED)
    prompt: PromptConfig = field(default_factory=PromptConfig, metadata=LOADED)
    path: str = field(default="", metadata=LOADED)

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


IMAGE_FORMATS = ("png", "jpeg", "webp")
DUPLICATE_MODES = ("keep", "drop", "group")
OUTPUT_FORMATS = ("ilid", "webdataset", "jsonl", "parquet")
LLM_BACKENDS = ("llama.cpp", "openai")
_ACTIONS = ("product", "ignore")


class _KeyProblem(Exception):
    """A problem at a dotted key, turned into a UserError naming the file by _build_file."""

    def __init__(self, key: str, problem: str):
        super().__init__(problem)
        self.key = key
        self.problem = problem


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Check one TOML value against a dataclass field type; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _KeyProblem(key, "expected a table")
        return _build(tp, value, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise _KeyProblem(key, f"expected a list, got {type(value).__name__}")
        return [_check_value(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise _KeyProblem(key, "expected a table")
        return {k: _check_value(v, val_tp, _join(key, k)) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (tp is int and isinstance(value, bool)) or not isinstance(value, tp):
        raise _KeyProblem(key, f"expected {_type_name(tp)}, got {type(value).__name__}")
    return value


def _build(cls: type, table: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("loaded")}
    values = {}
    for key, value in table.items():
        if key not in known:
            raise _KeyProblem(_join(prefix, key), "unknown key")
        values[key] = _check_value(value, hints[key], _join(prefix, key))
    return cls(**values)


def _key(file: str, dotted: str) -> str:
    return f"{file}: key '{dotted}'"


def _read_toml(path: Path, what: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: {what} file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read {what} file ({e.strerror})") from None


def _build_file(cls: type, table: dict, file: Path) -> Any:
    """Build a dataclass from a whole file; errors read ``file: key 'a.b': problem``."""
    try:
        return _build(cls, table, "")
    except _KeyProblem as e:
        raise UserError(f"{_key(str(file), e.key)}: {e.problem}") from None


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
    from .extract import check_selector  # late import: config must load without HTML parsing

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
    for name, words in prompt.max_words.items():
        _require(name in LABEL_FIELDS, f, f"max_words.{name}", "unknown field")
        _require(words >= 1, f, f"max_words.{name}", "must be at least 1")
    for key in ("no_digits", "from_text"):
        for index, name in enumerate(getattr(prompt, key)):
            _require(name in LABEL_FIELDS, f, f"{key}[{index}]", f"unknown field (one of {', '.join(LABEL_FIELDS)})")
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
    from .label.chat_format import ChatFormat  # depends on nothing of ours but Jinja

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
    _require(bool(cfg.run.shops), f, "run.shops", "list at least one shop file")
    _require(0 < cfg.llm.debug_fraction <= 1, f, "llm.debug_fraction", "must be in (0, 1]")
    _require(cfg.images.width > 0 and cfg.images.height > 0, f, "images.width", "must be > 0")
    _require(cfg.http.concurrency > 0, f, "http.concurrency", "must be > 0")
    _require(cfg.run.extract_workers >= -1, f, "run.extract_workers", "must be -1 (auto), 0 or more")
    _require(cfg.http.per_host_concurrency > 0, f, "http.per_host_concurrency", "must be > 0")
    _require(cfg.http.per_host_rate >= 0, f, "http.per_host_rate", "must be >= 0")
    for host, limits in cfg.http.hosts.items():
        _require(limits.concurrency >= 0, f, f"http.hosts.{host}.concurrency", "must be >= 0")
    _require(0 <= cfg.images.png_compress_level <= 9, f, "images.png_compress_level", "0..9")
    _require(cfg.images.format in IMAGE_FORMATS, f, "images.format", f"one of {', '.join(IMAGE_FORMATS)}")
    _require(1 <= cfg.images.quality <= 100, f, "images.quality", "1..100")
    _require(cfg.images.duplicates in DUPLICATE_MODES, f, "images.duplicates",
             f"one of {', '.join(DUPLICATE_MODES)}")
    _require(-1 <= cfg.images.near_duplicate_bits <= 16, f, "images.near_duplicate_bits", "-1..16")
    for index, name in enumerate(cfg.output.formats):
        _require(name in OUTPUT_FORMATS, f, f"output.formats[{index}]", f"one of {', '.join(OUTPUT_FORMATS)}")
    _require(cfg.output.shard_size > 0, f, "output.shard_size", "must be > 0")
    for index, name in enumerate(cfg.filters.reject_ungrounded):
        _require(name in GROUNDED_FIELDS, f, f"filters.reject_ungrounded[{index}]",
                 f"one of {', '.join(GROUNDED_FIELDS)}")
    if "parquet" in cfg.output.formats:
        _require(importlib.util.find_spec("pyarrow") is not None, f, "output.formats",
                 "parquet needs pyarrow (pip install 'ilid-async[parquet]')")
    _require(cfg.llm.n_ctx >= 256, f, "llm.n_ctx", "must be at least 256")
    _require(cfg.llm.n_parallel >= 1, f, "llm.n_parallel", "must be at least 1")
    _require(cfg.llm.n_batch >= cfg.llm.n_parallel, f, "llm.n_batch",
             "must be at least llm.n_parallel (each decode carries one token of every record)")
    _require(cfg.llm.flash_attn in ("auto", "on", "off"), f, "llm.flash_attn", "one of auto, on, off")
    _require(not (cfg.llm.reproducible and cfg.llm.flash_attn == "on"), f, "llm.flash_attn",
             "cannot be on with llm.reproducible (its sums depend on the decode's shape); use auto or off")
    _require(cfg.llm.backend in LLM_BACKENDS, f, "llm.backend", f"one of {', '.join(LLM_BACKENDS)}")
    if cfg.llm.backend == "openai":
        _require(bool(cfg.llm.base_urls), f, "llm.base_urls", "list at least one server URL for backend 'openai'")
        for index, url in enumerate(cfg.llm.base_urls):
            _require(url.startswith(("http://", "https://")), f, f"llm.base_urls[{index}]",
                     "must start with http:// or https://")
        _require(cfg.llm.max_in_flight >= 1, f, "llm.max_in_flight", "must be at least 1")
        _require(cfg.llm.request_timeout > 0, f, "llm.request_timeout", "must be > 0")
        _require(cfg.llm.retries >= 0, f, "llm.retries", "must be >= 0")
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
