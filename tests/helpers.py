"""Helpers the tests import: the repository, the prompts, configs written for the test shop, the
CLI as a subprocess. Fixtures live in conftest.py; this is a plain module (``pythonpath =
["tests"]``), so a test imports from here, never from conftest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ilid_async.config import PACKAGED_PROMPT

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PROMPT = PACKAGED_PROMPT  # with worked examples: n_ctx 2048 holds it
# The instruction-only prompt ilid-async shipped before examples and field rules (the quality
# benchmark's peer): a prompt without examples, in the one-turn {system}/{user} template form.
ZERO_SHOT_PROMPT = REPO / "benchmarks" / "prompt_zero_shot.toml"


def write_config(tmp_path: Path, shop_toml: str, **sections: str) -> Path:
    """A config.toml in tmp_path for one shop. Keyword arguments give TOML lines for a table,
    e.g. ``llm="debug_fraction = 0.5"``; a key given there replaces the default one."""
    (tmp_path / "shops").mkdir(exist_ok=True)
    (tmp_path / "shops" / "testshop.toml").write_text(shop_toml)
    tables = {
        "run": 'dir = "run"\nshops = ["shops/testshop.toml"]',
        "http": "allow_loopback = true\nbackoff = 0.05\nper_host_rate = 0\nper_host_concurrency = 8",
        "llm": "n_ctx = 2048",  # no prompt: the packaged one (DEFAULT_PROMPT)
    }
    merged: dict[str, dict[str, str]] = {}
    for name, lines in [*tables.items(), *sections.items()]:
        for line in lines.splitlines():
            if line.strip():
                merged.setdefault(name, {})[line.split("=", 1)[0].strip()] = line
    config = tmp_path / "config.toml"
    config.write_text("".join(f"[{name}]\n" + "\n".join(lines.values()) + "\n"
                              for name, lines in merged.items()))
    return config


def short_prompt(tmp_path: Path) -> Path:
    """The default prompt with small token caps, so that many records label quickly."""
    text = DEFAULT_PROMPT.read_text().split("[max_tokens]")[0]
    path = tmp_path / "prompt.toml"
    path.write_text(text + "[max_tokens]\nlabel_long = 6\nlabel_short = 4\ndescription = 8\n"
                           "material = 3\nmaterial_finish = 3\n")
    return path


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real command in a subprocess, as a user runs it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "ilid_async", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def assert_one_line_exit_2(config: Path, expected: str) -> None:
    """A bad config is a UserError naming the file and key, and the command prints it as one
    line and exits 2."""
    from ilid_async.config import load_config
    from ilid_async.errors import UserError

    with pytest.raises(UserError) as err:
        load_config(config)
    assert expected in str(err.value)
    result = run_cli("run", str(config), timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
