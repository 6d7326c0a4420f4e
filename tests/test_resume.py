"""Kill-and-resume of the real workflow: Snakemake is killed (SIGKILL to its process group, as a
lost node or a cancelled job would be) first while the projector trains, then in the middle of
generation; rerunning the same command finishes the run from the last projector checkpoint,
without redoing finished shards, reusing the intact images of the interrupted shard and
regenerating a truncated one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import REPO, copy_workflow, run_snakemake

TARGET = "results/demo/filtered"  # everything up to filtering of the default variant
VARIANT = Path("results/demo/sei/gauss-g2.0")
CONFIG = {
    "demo_data": {"train_per_class": 5, "test_per_class": 2, "image_size": 64, "seed": 0},
    # small batches, several epochs: each epoch takes long enough to be caught between checkpoints
    "projector": {"epochs": 3, "batch_size": 2, "checkpoint_every": 1},
    "samplers": {"gauss": {"method": "gauss", "expansion": 2}, "text": {"method": "text", "expansion": 1}},
    # several shards of several small batches: generation takes some seconds and writes as it goes
    "generation": {"shards": 3, "steps": 20, "batch_size": 2},
}
SNAKEMAKE = ("--cores", "1", TARGET)


def _start(workflow: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests" / "netguard"), env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", "snakemake", *SNAKEMAKE, *extra], cwd=workflow, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 240) -> None:
    """SIGKILL the process group of proc (Snakemake and its job) as soon as ready() is true."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"Snakemake ended ({proc.returncode}) before {what}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {timeout} s")
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _rerun(workflow: Path) -> str:
    """The same command again, as after a crash: the stale lock is removed, incomplete outputs redone."""
    run_snakemake(workflow, "--unlock", *SNAKEMAKE)
    proc = run_snakemake(workflow, *SNAKEMAKE, "--rerun-incomplete")
    return proc.stdout + proc.stderr


def _jobs(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.workflow
def test_killed_run_resumes(tmp_path):
    workflow = copy_workflow(tmp_path / "wf")
    path = workflow / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    for key, value in CONFIG.items():
        config[key] = value if key == "samplers" else {**config[key], **value}
    path.write_text(yaml.safe_dump(config))

    # --- 1. killed while the projector trains, after its first checkpoint
    checkpoints = workflow / "results/demo/projector/checkpoints"
    final = workflow / "results/demo/projector/final"
    proc = _start(workflow, tmp_path / "run1.log")
    _kill_when(proc, lambda: (checkpoints / "checkpoint-epoch1" / "training_state.pt").exists(),
               "projector checkpoint")
    done = sorted(int(p.name.removeprefix("checkpoint-epoch")) for p in checkpoints.glob("checkpoint-epoch*"))
    assert done and done[-1] < 3 and not final.exists(), f"killed too late: checkpoints {done}"

    # --- 2. the same command again: training resumes; killed again in the middle of generation
    run_snakemake(workflow, "--unlock", *SNAKEMAKE)
    shards = workflow / VARIANT / "shards"
    images = workflow / VARIANT / "images"
    samples_path = workflow / "results/demo/samples/gauss.parquet"

    def unfinished_shard_started() -> bool:
        finished = {int(p.stem) for p in shards.glob("*.parquet")} if shards.is_dir() else set()
        if not finished or not images.is_dir():
            return False
        shard_of = pd.read_parquet(samples_path, columns=["sample_id", "shard"]).set_index("sample_id").shard
        started = pd.Series([int(shard_of[p.stem]) for p in images.rglob("*.png") if p.stem in shard_of.index])
        return bool((started[~started.isin(finished)].value_counts() >= 3).any())  # >= 3 images of a shard

    proc = _start(workflow, tmp_path / "run2.log", "--rerun-incomplete")
    _kill_when(proc, unfinished_shard_started, "partially generated shard")
    log2 = (tmp_path / "run2.log").read_text()
    train_log = (workflow / "logs/demo/train_projector.log").read_text()
    assert f"resuming from results/demo/projector/checkpoints/checkpoint-epoch{done[-1]}" in train_log, log2[-3000:]
    loss = pd.read_csv(workflow / "results/demo/projector/loss.csv")
    steps_per_epoch = (loss.epoch == 1).sum()
    assert loss.step.tolist() == list(range(1, 3 * steps_per_epoch + 1))  # continuous across the kill
    assert loss.epoch.tolist() == [e for e in (1, 2, 3) for _ in range(steps_per_epoch)]

    # state at the second kill
    finished = {int(p.stem): p.stat().st_mtime_ns for p in shards.glob("*.parquet")}
    shard_of = pd.read_parquet(samples_path, columns=["sample_id", "shard"]).set_index("sample_id").shard
    partial = {p: p.stat().st_mtime_ns for p in images.rglob("*.png") if int(shard_of[p.stem]) not in finished}
    assert finished and len(partial) >= 3 and len(finished) < 3
    truncated = sorted(partial)[0]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    kept = {p: m for p, m in partial.items() if p != truncated}
    finished_images = {p: p.stat().st_mtime_ns for p in images.rglob("*.png")
                       if int(shard_of[p.stem]) in finished}

    # --- 3. the same command again finishes the run
    output = _rerun(workflow)
    jobs = _jobs(output)
    assert jobs.pop("generate") == 3 - len(finished) and jobs.pop("filter_default") == 1, output
    assert jobs == {}, f"earlier stages redone: {jobs}"
    redone = {int(s) for block in re.findall(r"rule generate:\n((?:[ \t]+.*\n)+)", output)
              for s in re.findall(r"output: \S+/shards/(\d+)\.parquet", block)}
    assert len(redone) == 3 - len(finished), output
    assert not redone & set(finished), f"finished shards {sorted(finished)} redone: {sorted(redone)}"
    assert {int(p.stem): p.stat().st_mtime_ns for p in shards.glob("*.parquet") if int(p.stem) in finished} == finished
    assert {p: p.stat().st_mtime_ns for p in finished_images} == finished_images
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "intact images of the killed shard were redone"
    assert truncated.stat().st_mtime_ns != partial[truncated]

    # --- everything well-formed
    samples = pd.read_parquet(samples_path)
    manifests = pd.concat([pd.read_parquet(shards / f"{i}.parquet") for i in range(3)])
    assert sorted(manifests.sample_id) == sorted(samples.sample_id)
    for rel in manifests.path:
        with Image.open(workflow / rel) as img:
            img.load()  # decodes fully: the truncated file was regenerated
            assert img.size == (64, 64)
    assert len(list(images.rglob("*.png"))) == len(samples)
    filtered = pd.read_parquet(workflow / TARGET / "manifest.parquet")
    assert len(filtered) == len(samples) and filtered.kept.sum() == len(samples) // 2
    assert not list(workflow.glob("results/**/.tmp*")) and not list(images.rglob(".*"))
