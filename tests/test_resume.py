"""Kill-and-resume of the real workflow, at exact moments: a run is SIGKILLed (Snakemake and its
job, as a lost node or a cancelled job would be) at each kill point of sdi.io.faults in turn, and
after each kill the plain command (`snakemake --unlock`, then the same `snakemake --cores 1
<target>`) goes on. The finished run is byte-identical to an uninterrupted one and leaves no
temporary file behind. Kill points make the moments exact, so nothing here depends on timing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import BackgroundSnakemake, copy_workflow, edit_config, run_snakemake, snakemake_env, tree_digest

TARGET = "results/demo/filtered"  # everything up to filtering of the default variant
CONFIG = {
    "demo_data": {"train_per_class": 4, "test_per_class": 2, "image_size": 64, "seed": 0},
    "projector": {"epochs": 2, "batch_size": 4, "checkpoint_every": 1},
    "samplers": {"gauss": {"method": "gauss", "expansion": 2}, "text": {"method": "text", "expansion": 1}},
    # two shards of several batches: kills land between batches, between and inside PNG writes
    "generation": {"shards": 2, "steps": 3, "batch_size": 4},
    "tracking": {"tensorboard": False},  # event files are named after the time they were opened
}
# (kill point, n-th visit): in the order a run reaches them; each run resumes the previous one.
KILLS = [("projector_checkpoint", 1), ("model_loading", 1), ("mid_shard", 1), ("png_write", 3),
         ("after_manifest", 1), ("filtering", 1)]


def _workflow(root: Path) -> Path:
    workflow = copy_workflow(root)
    edit_config(workflow, **CONFIG)
    return workflow


def _env(**extra: str) -> dict[str, str]:
    """helpers.snakemake_env (the network guard) and extra."""
    return {**snakemake_env(), **extra}


def _killed_run(workflow: Path, point: str, nth: int, log: Path) -> None:
    """Run Snakemake in a session of its own with SDI_KILL_AT; it must die by SIGKILL at the point.

    Its TMPDIR is a folder beside the log: a killed Snakemake leaves its temporary folder behind,
    and there it goes with the test's tmp_path instead of staying in /tmp.
    """
    tmp = log.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    env = _env(SDI_KILL_AT=f"{point}:{nth}", TMPDIR=str(tmp))
    with log.open("w") as out:
        proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", TARGET], cwd=workflow, env=env,
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True, timeout=600)
    assert proc.returncode == -9, f"not killed at {point} (exit {proc.returncode}):\n{log.read_text()[-3000:]}"
    run_snakemake(workflow, "--unlock", TARGET)


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".") and (".tmp" in p.name or ".old-" in p.name)]


@pytest.mark.workflow
def test_killed_run_resumes_byte_identical(tmp_path, request):
    # the uninterrupted run goes on beside the killed ones (each uses one core); stopped with its
    # jobs if the test fails first
    reference = _workflow(tmp_path / "reference")
    uninterrupted = BackgroundSnakemake(reference, "--cores", "1", TARGET, log=tmp_path / "reference.log")
    request.addfinalizer(uninterrupted.stop)

    workflow = _workflow(tmp_path / "killed")
    results = workflow / "results" / "demo"
    images = results / "sei" / "gauss-g2.0" / "images"
    for point, nth in KILLS:
        _killed_run(workflow, point, nth, tmp_path / f"{point}.log")
        if point == "projector_checkpoint":
            assert (results / "projector/checkpoints/checkpoint-epoch1").is_dir()
            assert not (results / "projector/final").exists()
        if point == "png_write":  # killed between writing a PNG and renaming it into place
            assert [p for p in images.rglob(".*.tmp")], "the killed PNG write left no temporary file"
        if point == "after_manifest":  # the manifest exists, but Snakemake never marked the job done
            assert list((results / "sei/gauss-g2.0/shards").glob("*.parquet"))
    assert not (results / "filtered" / "counts.csv").exists()  # filtering was killed half-way

    proc = run_snakemake(workflow, "--cores", "1", TARGET)  # the plain command, no extra flag
    assert "IncompleteFilesException" not in proc.stdout + proc.stderr

    assert _temp_files(workflow / "results") == []
    uninterrupted.wait(timeout=900)
    expected, got = tree_digest(reference / "results"), tree_digest(workflow / "results")
    assert sorted(got) == sorted(expected)
    differ = [name for name in expected if got[name] != expected[name]]
    assert differ == [], f"{len(differ)} file(s) differ from an uninterrupted run, e.g. {differ[:5]}"
