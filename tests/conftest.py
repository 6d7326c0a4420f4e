"""Shared fixtures: the network guard (the test run must never reach the network), tiny models and a
tiny digits dataset, and the one finished demo that every test needing one shares; each built once
per session (per xdist worker: the tests of a shared run are in one xdist group) with the real code.
Shared helpers (not fixtures) are in helpers.py."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import sdi  # noqa: F401  (offline mode for the HF libraries)

sys.path.insert(0, str(Path(__file__).parent / "netguard"))
import sdi_netguard  # noqa: E402
from helpers import SMALL, copy_workflow, edit_config, run_snakemake  # noqa: E402


def pytest_collection_modifyitems(items):
    """``make test`` runs two xdist workers with ``--dist loadgroup``: a test file's tests stay together on
    one worker (its module fixtures, such as a workflow run, are made once), unless a test names its own
    group (``xdist_group("demo")``: the tests of the shared finished demo, across files)."""
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


class NetworkAccessError(RuntimeError):
    pass


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Fail any test that opens an internet socket (unix sockets stay allowed)."""
    sdi_netguard.install(NetworkAccessError)
    yield
    sdi_netguard.uninstall()


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


@pytest.fixture(scope="session")
def finished_demo(tmp_path_factory, tiny_models) -> Path:
    """The one finished demo of the suite: ``snakemake all`` and the SDI export on helpers.SMALL, with the
    models as a user's folders (models.tiny: false; copies of the tiny models, which a test may rewrite).
    Tests that use it are marked ``xdist_group("demo")`` so that one worker runs it once; a test that
    changes the run leaves it as it found it (the weights test goes last: test_workflow_demo.py ends
    with it)."""
    root = tmp_path_factory.mktemp("demo")
    workflow = copy_workflow(root / "wf")
    models = {name: str(shutil.copytree(folder, root / "models" / name)) for name, folder in tiny_models.items()}
    edit_config(workflow, **SMALL, models={"tiny": False, **models})
    run_snakemake(workflow, "--cores", "2", "all", "results/demo/export/sdi")
    return workflow


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


@pytest.fixture
def workflow(tmp_path) -> Path:
    """A fresh copy of the workflow in a temporary working directory."""
    return copy_workflow(tmp_path / "wf")
