"""The whole demo DAG on a small config: every artifact exists and is well-formed, and a
changed parameter reruns only what it invalidates (asserted on dry-run job lists)."""

import json
import re

import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import run_snakemake

SMALL = {
    "demo_data": {"train_per_class": 5, "test_per_class": 3, "image_size": 64, "seed": 0},
    "projector": {"epochs": 1, "batch_size": 8, "checkpoint_every": 1},
    "samplers": {"gauss": {"method": "gauss", "expansion": 2}, "text": {"method": "text", "expansion": 1}},
    "generation": {"shards": 2, "steps": 3, "batch_size": 8},
    "classifier": {"runs": ["real", "gauss-g2.0"], "epochs": 1, "batch_size": 16, "resize": 36, "crop": 32,
                   "num_workers": 0},
}


def _deep_update(base: dict, new: dict) -> dict:
    for k, v in new.items():
        base[k] = _deep_update(base.get(k, {}), v) if isinstance(v, dict) and k != "samplers" else v
    return base


def _write_config(workflow, **changes):
    path = workflow / "config" / "config.yaml"
    config = _deep_update(yaml.safe_load(path.read_text()), changes)
    path.write_text(yaml.safe_dump(config))


def planned_jobs(workflow) -> dict[str, int]:
    """{rule: count} that a dry run would execute now."""
    out = run_snakemake(workflow, "-n", "--cores", "2", "all").stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from conftest import copy_workflow

    workflow = copy_workflow(tmp_path_factory.mktemp("demo") / "wf")
    _write_config(workflow, **SMALL)
    run_snakemake(workflow, "--cores", "2", "all")
    return workflow


@pytest.mark.workflow
def test_every_artifact_is_well_formed(demo_run):
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

    for run in ("real", "gauss-g2.0"):
        metrics = json.loads((res / "classifier" / run / "metrics.json").read_text())
        assert 0 <= metrics["top1"] <= 100 and 0 <= metrics["balanced"] <= 100
        assert len(metrics["per_class"]) == 10
        assert len(pd.read_csv(res / "classifier" / run / "log.csv")) == 1
    synthetic = json.loads((res / "classifier" / "gauss-g2.0" / "metrics.json").read_text())["n_train_synthetic"]
    assert synthetic == len(split["train"])  # half of 2x was kept
    for log in ("split", "train_projector", "embeddings", "filter", "classifier_real"):
        assert (demo_run / "logs" / "demo" / f"{log}.log").exists(), log


@pytest.mark.workflow
def test_only_invalidated_steps_rerun(demo_run):
    assert planned_jobs(demo_run) == {}

    _write_config(demo_run, filter={"keep_ratio": 0.25})
    assert planned_jobs(demo_run) == {"filter_default": 1, "filter": 1, "train_classifier": 1, "all": 1}

    _write_config(demo_run, filter={"keep_ratio": 0.5},
                  samplers={"gauss": {"method": "gauss", "expansion": 3}, "text": {"method": "text", "expansion": 1}})
    assert planned_jobs(demo_run) == {"sample": 1, "generate": 2, "filter_default": 1, "train_classifier": 1,
                                      "all": 1}

    _write_config(demo_run, samplers=SMALL["samplers"])
    assert planned_jobs(demo_run) == {}


@pytest.mark.workflow
def test_filtered_target_builds_alone(tmp_path):
    from conftest import copy_workflow

    workflow = copy_workflow(tmp_path / "wf")
    _write_config(workflow, **SMALL)
    out = run_snakemake(workflow, "-n", "--cores", "2", "results/demo/filtered").stdout
    assert "train_classifier" not in out and "filter_default" in out and "text" not in out.split("Job stats")[1]
