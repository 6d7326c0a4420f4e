"""Shared fixtures: a socket guard (the test run must never reach the network), tiny
models and a tiny digits dataset, each built once per session with the real code."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import sdi  # noqa: F401  (offline mode for the HF libraries)

REPO = Path(__file__).resolve().parents[1]


class NetworkAccessError(RuntimeError):
    pass


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Fail any test that opens an internet socket (unix sockets stay allowed)."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise NetworkAccessError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address, *args)

    def guarded_ex(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise NetworkAccessError(f"test tried to reach the network: {address!r}")
        return real_connect_ex(self, address, *args)

    socket.socket.connect = guarded
    socket.socket.connect_ex = guarded_ex
    yield
    socket.socket.connect = real_connect
    socket.socket.connect_ex = real_connect_ex


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """{'sd': folder, 'clip': folder}: tiny random models saved in the real layouts."""
    from sdi.models.tiny import build_tiny_clip, build_tiny_sd

    root = tmp_path_factory.mktemp("models")
    return {"sd": build_tiny_sd(root / "sd"), "clip": build_tiny_clip(root / "clip")}


@pytest.fixture(scope="session")
def digits_split(tmp_path_factory) -> dict:
    """Split manifests (DataFrames) of a small digits dataset: 6 train / 4 test per class."""
    from sdi.data.demo import write_demo_digits
    from sdi.data.readers.cub import read_cub
    from sdi.data.split import make_split

    root = write_demo_digits(tmp_path_factory.mktemp("digits") / "cub", 6, 4, image_size=64, seed=0)
    return make_split(read_cub(root), val_fraction=0.34, seed=0)


# Every rule that takes its size from config.resources (the schema lists them).
SIZED_RULES = list(yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
                   ["properties"]["resources"]["properties"])
# One thread per job: the small test workflows' jobs are import- and load-bound, so on a 2-core
# machine two of them run at once instead of one job holding both cores (schema defaults: 4-8).
ONE_THREAD_JOBS = {rule: {"cpus": 1} for rule in SIZED_RULES}


@pytest.fixture(scope="module")
def module_tmp(request, tmp_path_factory) -> Iterator[Path]:
    """A folder for a module's shared run, removed after the module when none of its tests
    failed. tmp_path_retention_policy = "failed" (pyproject) does this for tmp_path only, and
    a module's workflow run holds up to 2 GB (ResNet50 checkpoints) until the session ends."""
    failed = request.session.testsfailed
    path = tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_"))
    yield path
    if request.session.testsfailed == failed:
        shutil.rmtree(path, ignore_errors=True)


WORKFLOW_FILES = ("Snakefile", "rules", "workflow_scripts", "config", "envs", "profiles", "report")


def copy_workflow(dest: Path) -> Path:
    """Copy the workflow (not results) into dest, as a user's checkout would look."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900):
    """Run the Snakemake CLI in workdir with the network blocked; returns CompletedProcess."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests" / "netguard"), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture
def workflow(tmp_path) -> Path:
    """A fresh copy of the workflow in a temporary working directory."""
    return copy_workflow(tmp_path / "wf")
