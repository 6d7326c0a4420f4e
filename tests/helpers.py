"""What the tests share: the workflow copied into a working directory, the Snakemake CLI run with the
network blocked, the one writer of test configs, the small demo configuration and its artifact checks,
the one fixture image writer and the one file digest. Fixtures live in conftest.py; test files import these,
not each other."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "rules", "workflow_scripts", "config", "envs", "profiles", "report")

# Every rule that takes its size from config.resources (the schema lists them).
SIZED_RULES = list(yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
                   ["properties"]["resources"]["properties"])
# One thread per job: the small test workflows' jobs are import- and load-bound, so on a 2-core
# machine two of them run at once instead of one job holding both cores (schema defaults: 4-8).
ONE_THREAD_JOBS = {rule: {"cpus": 1} for rule in SIZED_RULES}


# --------------------------------------------------------------------------- the workflow
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


def copy_run(src: Path, dest: Path) -> Path:
    """A copy of the working directory src with its results and Snakemake's records (less its locks), the
    files' times kept: Snakemake in dest finds src's finished jobs done and goes on from them."""
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns("locks", "incomplete"))
    return dest


# Set by `make check`, the fast tier: the tests not marked `workflow` (pyproject's pytest markers).
FAST_TIER = "SDI_FAST_TIER"


class FastTierError(RuntimeError):
    """A test of the fast tier (make check) started Snakemake: it lacks the `workflow` marker."""


def snakemake_env() -> dict[str, str]:
    """This environment with the network blocked for Snakemake and its jobs (tests/netguard on PYTHONPATH).
    Every Snakemake that the tests start gets its environment here (run_snakemake, BackgroundSnakemake), so
    this is where the fast tier refuses one: a test that starts Snakemake must be marked `workflow`."""
    if os.environ.get(FAST_TIER):
        test = os.environ.get("PYTEST_CURRENT_TEST", "this test").rsplit(" ", 1)[0]
        raise FastTierError(f"{test} starts Snakemake, but {FAST_TIER} is set (make check runs only the tests "
                            "that start no workflow): mark the test @pytest.mark.workflow, or its file "
                            "pytestmark = pytest.mark.workflow, so that make check leaves it to make test")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests" / "netguard"), env.get("PYTHONPATH")]))
    return env


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900):
    """Run the Snakemake CLI in workdir with the network blocked (tests/netguard); returns CompletedProcess."""
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=snakemake_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


class BackgroundSnakemake:
    """The Snakemake CLI started in workdir (network blocked) and left running while the test does other
    work; :meth:`wait` returns when it has finished and fails naming its log unless it succeeded."""

    def __init__(self, workdir: Path, *args: str, log: Path):
        self.log, self.args = log, args
        with log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=snakemake_env(),
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: int) -> None:
        if self.proc.wait(timeout=timeout) != 0:
            raise AssertionError(f"snakemake {' '.join(self.args)} failed ({self.proc.returncode}); "
                                 f"{self.log}:\n{self.log.read_text()[-8000:]}")

    def stop(self) -> None:
        """Stop Snakemake and its jobs (its process group) if it still runs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait()


def planned_jobs(workflow: Path, target: str = "all") -> dict[str, int]:
    """{rule: count} that a dry run would execute now."""
    out = run_snakemake(workflow, "-n", "--cores", "2", target).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


# --------------------------------------------------------------------------- configs
REPLACED = ("samplers", "methods")  # sections that edit_config replaces instead of merging


def _deep_update(base: dict, new: dict) -> dict:
    for k, v in new.items():
        base[k] = _deep_update(base.get(k) or {}, v) if isinstance(v, dict) and k not in REPLACED else v
    return base


def edit_config(workflow: Path, edit: Callable[[dict], None] | None = None, /, **changes) -> dict:
    """The one writer of test configs: ``workflow/config/config.yaml`` with ``changes`` merged in (dicts
    deep-merged, except the sections of REPLACED) and then ``edit(config)`` applied; returns the config.
    Key order is kept (the methods' order is the summary's row order)."""
    path = workflow / "config" / "config.yaml"
    config = _deep_update(yaml.safe_load(path.read_text()), copy.deepcopy(changes))
    if edit is not None:
        edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config


# The demo on a small budget: what the shared finished demo (conftest.finished_demo) and the SLURM
# test run. Methods: real only, SDI, the paper protocol (a draw from every generated image,
# docs/method.md section 8) and an augmentation baseline on real copies.
SMALL = {
    "demo_data": {"train_per_class": 5, "test_per_class": 3, "image_size": 64, "seed": 0},
    "projector": {"epochs": 1, "batch_size": 8, "checkpoint_every": 1},
    "samplers": {"gauss": {"method": "gauss", "expansion": 2}, "text": {"method": "text", "expansion": 1}},
    "generation": {"shards": 2, "steps": 3, "batch_size": 8},
    "classifier": {"epochs": 1, "batch_size": 16, "resize": 36, "crop": 32, "num_workers": 0},
    "experiments": {"seeds": [0, 1], "methods": {
        "real": {"label": "Real only"},
        "sdi": {"variant": "gauss-g2.0"},
        "sdi-2x": {"variant": "gauss-g2.0", "pool": "generated", "multiples": 2},
        "copies": {"augment": "cutout", "augment_at": "raw", "real_copies": 3},
    }},
    "export": {"webdataset": True, "shard_size": 16},
    "resources": ONE_THREAD_JOBS,
}
SMALL_METHODS = tuple(SMALL["experiments"]["methods"])
SMALL_RUNS = [(m, s) for m in SMALL_METHODS for s in SMALL["experiments"]["seeds"]]


def check_artifacts(demo_run: Path, runs: list[tuple[str, int]]) -> None:
    """Every artifact of a run of SMALL (with the classifier runs `runs`) exists and is well-formed."""
    import pandas as pd

    res = demo_run / "results" / "demo"
    split = {p: pd.read_parquet(res / "split" / f"{p}.parquet") for p in ("train", "val", "test")}
    assert len(split["train"]) + len(split["val"]) == 50 and len(split["test"]) == 30

    assert (res / "projector" / "final" / "config.json").exists()
    assert len(pd.read_csv(res / "projector" / "loss.csv")) > 0

    emb = pd.read_parquet(res / "embeddings.parquet")
    assert sorted(emb.image_id) == sorted(split["train"].image_id)

    samples = pd.read_parquet(res / "samples" / "gauss.parquet")
    n_c = split["train"].groupby("label").size()
    assert samples.groupby("label").size().to_dict() == (2 * n_c).to_dict()

    for variant, kept_dir, n_expected in (("gauss-g2.0", res / "filtered", 2 * len(split["train"])),
                                          ("text-g2.0", res / "sei" / "text-g2.0" / "filtered", len(split["train"]))):
        shards = [pd.read_parquet(res / "sei" / variant / "shards" / f"{i}.parquet") for i in range(2)]
        generated = pd.concat(shards)
        assert len(generated) == n_expected and generated.sample_id.is_unique
        for path in generated.path:
            with Image.open(demo_run / path) as img:
                assert img.size == (64, 64)
        manifest = pd.read_parquet(kept_dir / "manifest.parquet")
        assert len(manifest) == n_expected
        per_class = manifest.groupby("label")
        assert (per_class.kept.sum() == (per_class.size() * 0.5).astype(int)).all()
        assert (kept_dir / "counts.csv").exists() and (kept_dir / "grid.png").exists()

    for method, seed in runs:
        run = res / "classifier" / method / f"seed{seed}"
        metrics = json.loads((run / "metrics.json").read_text())
        assert 0 <= metrics["top1"] <= 100 and 0 <= metrics["balanced"] <= 100
        assert len(metrics["per_class"]) == 10 and metrics["params"]["seed"] == seed
        assert metrics["wall_time_s"] > 0 and metrics["device"] == "cpu"
        assert len(pd.read_csv(run / "log.csv")) == 1
        snapshot = yaml.safe_load((run / "config.yaml").read_text())
        assert (snapshot["method"], snapshot["seed"]) == (method, seed)
        assert (demo_run / "benchmarks" / "demo" / "classifier" / method / f"seed{seed}.tsv").exists()
    if ("sdi", 0) in runs:
        metrics = json.loads((res / "classifier" / "sdi" / "seed0" / "metrics.json").read_text())
        assert metrics["n_train_synthetic"] == len(split["train"])  # half of 2x was kept

    # the exact training sets, read back from each run's train_set.parquet
    kept = pd.read_parquet(res / "filtered" / "manifest.parquet")
    for seed in [s for m, s in runs if m == "sdi-2x"]:
        drawn = pd.read_parquet(res / "classifier" / "sdi-2x" / f"seed{seed}" / "train_set.parquet")
        per_class = drawn.groupby(["label", "source"]).size().unstack(fill_value=0)
        assert per_class["real"].to_dict() == n_c.to_dict()
        assert per_class["synthetic"].to_dict() == (2 * n_c).to_dict()
        assert not kept.set_index("path").loc[drawn[drawn.source == "synthetic"].path, "kept"].all()  # dropped too
    for seed in [s for m, s in runs if m == "copies"]:
        copies = pd.read_parquet(res / "classifier" / "copies" / f"seed{seed}" / "train_set.parquet")
        assert copies.groupby("label").size().to_dict() == (4 * n_c).to_dict()
        assert copies.source.value_counts().to_dict() == {"real_copy": 3 * len(split["train"]),
                                                           "real": len(split["train"])}
        metrics = json.loads((res / "classifier" / "copies" / f"seed{seed}" / "metrics.json").read_text())
        n = len(split["train"])
        assert (metrics["n_real"], metrics["n_real_copies"], metrics["n_synthetic"]) == (n, 3 * n, 0)
        assert metrics["steps_per_epoch"] == -(-4 * n // 16)  # ceil(4 n / batch 16)
    for log in ("split", "train_projector", "embeddings", "filter", "classifier/real/seed0"):
        assert (demo_run / "logs" / "demo" / f"{log}.log").exists(), log

    gauss = pd.read_csv(res / "diagnostics" / "gauss-g2.0" / "per_class.csv")
    assert gauss.groupby("space").size().to_dict() == {"clip_image": 10, "conditioning": 10}
    for _, space in gauss.groupby("space"):
        assert space.set_index("label").n_real.to_dict() == n_c.to_dict()
    text = json.loads((res / "diagnostics" / "text-g2.0" / "summary.json").read_text())
    text_kept = pd.read_parquet(res / "sei" / "text-g2.0" / "filtered" / "manifest.parquet").kept.sum()
    assert list(text["spaces"]) == ["clip_image"] and text["n_kept"] == text_kept
    dup = pd.read_csv(res / "diagnostics" / "gauss-g2.0" / "near_duplicates.csv")
    assert len(dup) == len(split["train"]) and dup.train_cosine.between(-1, 1).all()


# --------------------------------------------------------------------------- digests
def sha256(path: Path | str) -> str:
    """The sha256 (hex) of the file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(root: Path) -> dict[str, str]:
    """{path relative to root: sha256} of every file under root: equal only if the same files hold the same
    bytes (the folders a test must leave unchanged, or two runs that must be byte-identical)."""
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- fixture images
def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (12, 10), mode: str = "RGB") -> Path:
    """The one fixture image writer: random RGB pixels of ``size`` (width, height) from ``seed``, converted to
    ``mode``, saved at ``path`` in the format its suffix names (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(rgb, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


def make_medmnist(root: Path, flag="pathmnist", size=28, counts=(18, 9, 9), compressed=True, drop=None) -> Path:
    """A MedMNIST release file (``<flag>.npz`` or ``<flag>_<size>.npz``) of random images; ``drop``: an array
    left out."""
    from sdi.data.readers.medmnist import MEDMNIST_LABELS

    n_classes = len(MEDMNIST_LABELS[flag])
    rng = np.random.default_rng(0)
    arrays = {}
    for subset, n in zip(("train", "val", "test"), counts, strict=True):
        shape = (n, size, size, 3) if flag == "pathmnist" else (n, size, size)
        arrays[f"{subset}_images"] = rng.integers(0, 255, shape, dtype=np.uint8)
        arrays[f"{subset}_labels"] = (np.arange(n) % n_classes).astype(np.uint8)[:, None]
    if drop:
        del arrays[drop]
    root.mkdir(parents=True, exist_ok=True)
    name = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    (np.savez_compressed if compressed else np.savez)(root / name, **arrays)
    return root
