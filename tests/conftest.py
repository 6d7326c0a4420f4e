"""Shared fixtures: the network guard (the test run must never reach the network), tiny models and a
tiny digits dataset, and the one finished demo that every test needing one shares; each built once
per session (per xdist worker: see pytest_xdist_make_scheduler) with the real code.
Shared helpers (not fixtures) are in helpers.py."""

from __future__ import annotations

import os

# make test runs more torch threads than the machine has cores (3 workers, the science workflow's jobs), and
# OpenMP's threads spin while they wait for work: passive waiting gives those cycles to the other processes.
# It changes no number (the same threads split the same work): the science judge beside two busy processes
# trained in 69.5 s instead of 165.9 s, to the same weights. Set before anything loads OpenMP; the
# workflows' jobs inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import sdi  # noqa: F401  (offline mode for the HF libraries)

sys.path.insert(0, str(Path(__file__).parent / "netguard"))
import sdi_netguard  # noqa: E402
from helpers import SMALL, copy_run, copy_workflow, edit_config, run_snakemake  # noqa: E402

# The tests of the shared finished demo (fixture finished_demo), which one worker runs in this order.
SHARED_DEMO_FILES = ("test_export.py", "test_workflow_demo.py")


# The files that take longest, started first so that no worker is left with one at the end; the other
# files keep their order. make test passes --no-loadscope-reorder, without which pytest-xdist would order
# the files by their number of tests instead.
LONGEST_FIRST = ("test_science.py", *SHARED_DEMO_FILES, "test_messy_inputs.py", "test_slurm.py", "test_protocols.py",
                 "test_resume.py", "test_fullsize.py", "test_mini_world.py", "test_workflow_config.py")


# The fixtures that run a workflow: every test that uses one, directly or through another fixture (pytest's
# fixture closure), is marked `workflow` here, which make check leaves out. A test that starts Snakemake itself
# carries the marker (or its file's pytestmark); helpers.snakemake_env fails one that does not under make check.
WORKFLOW_FIXTURES = ("demo_upstream", "finished_demo")


def pytest_collection_modifyitems(items):
    for item in items:
        if any(name in item.fixturenames for name in WORKFLOW_FIXTURES):
            item.add_marker(pytest.mark.workflow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable


def pytest_xdist_make_scheduler(config, log):
    """``make test`` runs pytest-xdist workers. Each test file runs whole on one worker (its module
    fixtures, such as a workflow run, are made once), and the files of the shared finished demo run
    together on one, so that the demo is built once."""
    from xdist.scheduler import LoadFileScheduling

    class ByFile(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "shared finished demo" if Path(path).name in SHARED_DEMO_FILES else path

    return ByFile(config, log)


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


# What the demo's upstream builds (split, projector, embeddings, both variants' samples, shards and filters).
UPSTREAM_TARGETS = ("results/demo/filtered", "results/demo/sei/text-g2.0/filtered")


@pytest.fixture(scope="session")
def demo_upstream(tmp_path_factory, worker_id) -> Path:
    """The demo's upstream (UPSTREAM_TARGETS) on helpers.SMALL, with the tiny models as a user's folders inside
    the working directory (models.tiny: false, models.sd: models/sd), so that a copy of the folder
    (:func:`helpers.copy_run`) is a finished upstream of its own that Snakemake goes on from. Built once per
    session: by the first xdist worker that needs it, under a file lock, in the folder the workers share."""
    from filelock import FileLock

    from sdi.models.tiny import build_tiny_clip, build_tiny_sd

    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent
    root, done = shared / "demo-upstream", shared / "demo-upstream.done"
    with FileLock(str(shared / "demo-upstream.lock")):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)  # a build that failed in another worker
            workflow = copy_workflow(root)
            build_tiny_sd(workflow / "models" / "sd")
            build_tiny_clip(workflow / "models" / "clip")
            edit_config(workflow, **SMALL, models={"tiny": False, "sd": "models/sd", "clip": "models/clip"})
            run_snakemake(workflow, "--cores", "2", *UPSTREAM_TARGETS)
            done.touch()
    return root


@pytest.fixture(scope="session")
def finished_demo(tmp_path_factory, demo_upstream) -> Path:
    """The one finished demo of the suite: ``snakemake all`` and the SDI export on helpers.SMALL, gone on from
    a copy of the shared upstream (its own copy of the models, as a user's folders, which a test may rewrite).
    Only SHARED_DEMO_FILES use it (one xdist worker runs them, in that order); a test that changes the
    run leaves it as it found it, but for the weights test, which goes last: test_workflow_demo.py ends
    with it."""
    workflow = copy_run(demo_upstream, tmp_path_factory.mktemp("demo") / "wf")
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
