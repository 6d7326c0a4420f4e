"""The demo workflow through profiles/slurm on a real single-node SLURM (Debian's packages,
brought up on localhost by slurm_cluster.LocalSlurm): every job but the localrules (figures and
the summary) goes through sbatch, GPU rules are given a GPU and CPU rules are not, a failing job
is resubmitted with more memory, and the artifacts are those of a local run (split manifests
byte for byte)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from helpers import SIZED_RULES, SMALL, check_artifacts, copy_workflow, edit_config, run_snakemake
from slurm_cluster import MIN_JOB_AGE, PARTITION, LocalSlurm, unavailable_reason

pytestmark = pytest.mark.workflow

GPU_RULES = {"train_projector", "embeddings", "generate", "filter_default", "filter", "train_classifier",
             "diagnostics"}
CPU_RULES = {"demo_dataset", "tiny_models", "split", "sample"}
LOCAL_RULES = {"report_filter_figures", "training_curves", "summary"}  # localrules: run on the submit host
INIT_SECONDS = 2  # plugin's first status check; MinJobAge must be >= 3x this (else it uses sacct)
assert MIN_JOB_AGE >= 3 * INIT_SECONDS

# The site overlay a user would write (profiles/slurm/site.yaml), sized for a 2-CPU node.
SITE = {
    "cluster": {"partition": PARTITION, "gpu_partition": PARTITION},
    "resources": {rule: {"cpus": 1, "mem_mb": 1000, "runtime": 30} for rule in SIZED_RULES},
}

# The demo's small config with one classifier run per kind of training set (real only, real +
# kept images): SLURM runs every rule, and the matrix itself is test_workflow_demo's.
SLURM_RUNS = [("real", 0), ("sdi", 0)]
CONFIG = {**SMALL, "experiments": {"seeds": [0], "methods": {m: SMALL["experiments"]["methods"][m]
                                                                    for m, _ in SLURM_RUNS}}}

# A test-only rule that fails on its first attempt and records the memory it was given.
FLAKY = '''include: "Snakefile"


rule flaky:
    output:
        "flaky/done.txt",
    log:
        "logs/flaky.log",
    resources:
        mem_mb=job_resources("sample")["mem_mb"],
        runtime=5,
    shell:
        "mkdir -p flaky && echo {resources.mem_mb} >> flaky/mem_mb.txt; "
        "if [ ! -e flaky/failed_once ]; then touch flaky/failed_once; exit 1; fi; "
        "echo done > {output} 2> {log}"
'''


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no local SLURM: {reason}")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def slurm_run(slurm, module_tmp):
    """The demo's `all` plus the flaky rule, in one Snakemake run through profiles/slurm."""
    workflow = copy_workflow(module_tmp / "wf")
    edit_config(workflow, **CONFIG)
    (workflow / "site-test.yaml").write_text(yaml.safe_dump(SITE))
    (workflow / "Snakefile.slurmtest").write_text(FLAKY)
    proc = run_snakemake(
        workflow, "-s", "Snakefile.slurmtest", "--profile", "profiles/slurm", "--configfile", "site-test.yaml",
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", str(INIT_SECONDS),
        "--slurm-keep-successful-logs", "--latency-wait", "5", "--jobs", "4", "all", "flaky/done.txt",
        check=False, timeout=1200)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{output[-8000:]}\n{slurm.daemon_logs()}"
    return workflow, output


def _slurm_logs(workflow: Path) -> dict[str, list[Path]]:
    """{rule: [per-job SLURM log]} from the plugin's .snakemake/slurm_logs/rule_<rule>/."""
    root = workflow / ".snakemake" / "slurm_logs"
    return {d.name.removeprefix("rule_"): sorted(d.rglob("*.log")) for d in root.glob("rule_*")}


def test_jobs_went_through_slurm(slurm_run, slurm):
    workflow, output = slurm_run
    job_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    logs = _slurm_logs(workflow)
    assert CPU_RULES | GPU_RULES | {"flaky"} <= set(logs), sorted(logs)
    assert not LOCAL_RULES & set(logs), sorted(logs)
    for rule in LOCAL_RULES:
        assert re.search(rf"^localrule {rule}:", output, re.M), f"{rule} did not run on the submit host"
    logged_ids = {p.stem for paths in logs.values() for p in paths}
    assert set(job_ids) == logged_ids and len(job_ids) >= 16
    for rule, paths in logs.items():
        for path in paths:
            info = slurm.job_info(path.stem)
            assert info["Partition"] == PARTITION and info["JobState"] in ("COMPLETED", "FAILED"), (rule, info)
            if rule in GPU_RULES | CPU_RULES:  # sized by SITE's resources
                assert info["NumCPUs"] == "1" and info["MinMemoryNode"] == "1000M", (rule, info)


def test_gpu_rules_get_a_gpu_and_cpu_rules_do_not(slurm_run, slurm):
    workflow, _ = slurm_run
    for rule, paths in _slurm_logs(workflow).items():
        if rule not in GPU_RULES | CPU_RULES:
            continue
        for path in paths:
            env = re.search(r"job environment: (.*)", path.read_text())
            assert env, f"{path} has no job environment line"
            tres = slurm.job_info(path.stem).get("TresPerJob", "")
            if rule in GPU_RULES:
                assert re.search(r"CUDA_VISIBLE_DEVICES=\d", env[1]) and "gpu:1" in tres, (rule, env[1], tres)
            else:
                assert "CUDA_VISIBLE_DEVICES" not in env[1] and "gpu" not in tres, (rule, env[1], tres)


def test_failed_job_is_retried_with_more_memory(slurm_run, slurm):
    workflow, _ = slurm_run
    base = SITE["resources"]["sample"]["mem_mb"]
    assert (workflow / "flaky" / "mem_mb.txt").read_text().split() == [str(base), str(2 * base)]
    attempts = sorted(_slurm_logs(workflow)["flaky"], key=lambda p: int(p.stem))
    granted = [slurm.job_info(p.stem) for p in attempts]
    assert [g["JobState"] for g in granted] == ["FAILED", "COMPLETED"]
    assert [g["MinMemoryNode"] for g in granted] == [f"{base}M", f"{2 * base}M"]


def test_artifacts_match_a_local_run(slurm_run, tmp_path):
    workflow, _ = slurm_run
    check_artifacts(workflow, SLURM_RUNS)
    local = copy_workflow(tmp_path / "local")
    edit_config(local, **CONFIG)
    run_snakemake(local, "--cores", "1", "results/demo/split")
    for part in ("train", "val", "test"):
        name = f"results/demo/split/{part}.parquet"
        assert (workflow / name).read_bytes() == (local / name).read_bytes(), name
