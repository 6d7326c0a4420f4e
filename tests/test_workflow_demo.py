"""The whole demo DAG on a small config: every artifact exists and is well-formed, the summary
and the report are built from the experiment matrix, and a changed parameter reruns only what
it invalidates (asserted on dry-run job lists)."""

import base64
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import ONE_THREAD_JOBS, run_snakemake

SMALL = {
    "demo_data": {"train_per_class": 5, "test_per_class": 3, "image_size": 64, "seed": 0},
    "projector": {"epochs": 1, "batch_size": 8, "checkpoint_every": 1},
    "samplers": {"gauss": {"method": "gauss", "expansion": 2}, "text": {"method": "text", "expansion": 1}},
    "generation": {"shards": 2, "steps": 3, "batch_size": 8},
    "classifier": {"epochs": 1, "batch_size": 16, "resize": 36, "crop": 32, "num_workers": 0},
    "experiments": {"seeds": [0, 1], "methods": {
        "real": {"label": "Real only"},
        "sdi": {"variant": "gauss-g2.0"},
        # the paper protocol (METHOD section 8): a draw from every generated image, and real copies
        "sdi-2x": {"variant": "gauss-g2.0", "pool": "generated", "multiples": 2},
        "copies": {"augment": "cutout", "augment_at": "raw", "real_copies": 3},
    }},
    "resources": ONE_THREAD_JOBS,
}
METHODS = ("real", "sdi", "sdi-2x", "copies")
RUNS = [(m, s) for m in METHODS for s in (0, 1)]
REPLACED = ("samplers", "methods")  # config sections that _write_config replaces instead of merging


def _deep_update(base: dict, new: dict) -> dict:
    for k, v in new.items():
        base[k] = _deep_update(base.get(k, {}), v) if isinstance(v, dict) and k not in REPLACED else v
    return base


def _write_config(workflow, **changes):
    path = workflow / "config" / "config.yaml"
    config = _deep_update(yaml.safe_load(path.read_text()), changes)
    path.write_text(yaml.safe_dump(config, sort_keys=False))  # method order is the table's row order


def planned_jobs(workflow) -> dict[str, int]:
    """{rule: count} that a dry run would execute now."""
    out = run_snakemake(workflow, "-n", "--cores", "2", "all").stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.fixture(scope="module")
def demo_run(module_tmp, tiny_models):
    """The demo on user model folders (models.tiny: false): copies of the tiny models, which a
    test may rewrite."""
    import shutil

    from conftest import copy_workflow

    root = module_tmp
    workflow = copy_workflow(root / "wf")
    models = {name: str(shutil.copytree(folder, root / "models" / name)) for name, folder in tiny_models.items()}
    _write_config(workflow, **SMALL, models={"tiny": False, **models})
    run_snakemake(workflow, "--cores", "2", "all")
    return workflow


@pytest.mark.workflow
def test_every_artifact_is_well_formed(demo_run):
    check_artifacts(demo_run, RUNS)


def check_artifacts(demo_run: Path, runs: list[tuple[str, int]]) -> None:
    """Every artifact of a run of SMALL (with the classifier runs `runs`) exists and is well-formed."""
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


def _data_uris(html: str) -> list[tuple[str, bytes]]:
    """[(filename, bytes)] of the base64 data URIs embedded in a Snakemake HTML report."""
    uris = re.findall(r"data:[\w/+.-]+;charset=[\w-]+;filename=([^;\"']+);base64,([A-Za-z0-9+/=]+)", html)
    return [(name, base64.b64decode(data)) for name, data in uris]


@pytest.mark.workflow
def test_summary_and_report(demo_run):
    res = demo_run / "results"
    top1 = {(m, s): json.loads((res / "demo" / "classifier" / m / f"seed{s}" / "metrics.json").read_text())["top1"]
            for m, s in RUNS}
    table = pd.read_csv(res / "summary.csv").set_index("method")
    assert list(table.index) == list(METHODS) and list(table.label) == ["Real only", *METHODS[1:]]
    assert {"demo", "demo_std", "average", "average_std", "device_hours"} <= set(table.columns)
    for m in METHODS:
        values = [top1[m, 0], top1[m, 1]]
        assert table.loc[m, "demo"] == pytest.approx(sum(values) / 2, abs=1e-3)
        assert table.loc[m, "demo_std"] == pytest.approx(pd.Series(values).std(), abs=1e-3)
        assert table.loc[m, "average"] == pytest.approx(table.loc[m, "demo"], abs=1e-3)
        assert table.loc[m, "device_hours"] > 0
    md = (res / "summary.md").read_text()
    assert "| method | demo | average | device-hours |" in md
    assert "[s1](demo/classifier/sdi/seed1/metrics.json)" in md and md.count("**") >= 4

    run_snakemake(demo_run, "--report", "report.html")
    html = (demo_run / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and html.rstrip().endswith("</html>")
    embedded = _data_uris(html)
    blobs = [data for _, data in embedded]
    for variant in ("gauss-g2.0", "text-g2.0"):
        for figure in ("report/{}/grid.png", "report/{}/scores.png", "diagnostics/{}/projection.png"):
            path = res / "demo" / figure.format(variant)
            assert path.read_bytes() in blobs, f"{path} missing from report.html"
    for path in (res / "summary.html", res / "summary.png", res / "demo" / "report" / "training_curves.png",
                 res / "demo" / "report" / "overview.png"):
        assert path.read_bytes() in blobs, f"{path} missing from report.html"
    assert sum(name == "grid.png" for name, _ in embedded) == 2


@pytest.mark.workflow
def test_only_invalidated_steps_rerun(demo_run):
    assert planned_jobs(demo_run) == {}

    # execution-only settings (config/schema.yaml x-execution-only) say how jobs run, not what
    # they compute: changing every one of them plans nothing
    original = yaml.safe_load((demo_run / "config" / "config.yaml").read_text())
    _write_config(demo_run, device="cpu", embeddings={"batch_size": 3}, filter={"batch_size": 5},
                  generation={"batch_size": 3, "compile": True}, diagnostics={"batch_size": 7},
                  classifier={"num_workers": 1}, resources={"train_classifier": {"cpus": 1, "mem_mb": 999}},
                  cluster={"account": "lab", "partition": "gpu"})
    assert planned_jobs(demo_run) == {}
    (demo_run / "config" / "config.yaml").write_text(yaml.safe_dump(original, sort_keys=False))

    # runs that draw from every generated image (sdi-2x) do not depend on the filter
    _write_config(demo_run, filter={"keep_ratio": 0.25})
    figures = {"diagnostics": 2, "report_filter_figures": 2, "overview": 1, "training_curves": 1, "summary": 1}
    assert planned_jobs(demo_run) == {"filter_default": 1, "filter": 1, "train_classifier": 2, **figures, "all": 1}

    _write_config(demo_run, filter={"keep_ratio": 0.5},
                  samplers={"gauss": {"method": "gauss", "expansion": 3}, "text": {"method": "text", "expansion": 1}})
    assert planned_jobs(demo_run) == {"sample": 1, "generate": 2, "filter_default": 1, "train_classifier": 4,
                                      "diagnostics": 1, "report_filter_figures": 1, "overview": 1,
                                      "training_curves": 1, "summary": 1, "all": 1}

    _write_config(demo_run, samplers=SMALL["samplers"])
    assert planned_jobs(demo_run) == {}


@pytest.mark.workflow
def test_filtered_target_builds_alone(tmp_path):
    from conftest import copy_workflow

    workflow = copy_workflow(tmp_path / "wf")
    _write_config(workflow, **SMALL)
    out = run_snakemake(workflow, "-n", "--cores", "2", "results/demo/filtered").stdout
    assert "train_classifier" not in out and "filter_default" in out and "text" not in out.split("Job stats")[1]


@pytest.mark.workflow
def test_rewritten_model_weights_rerun_the_projector_onward(demo_run):
    """Swapping the weights inside a user's SD folder reruns every job that read them, and no other."""
    assert planned_jobs(demo_run) == {}
    config = yaml.safe_load((demo_run / "config" / "config.yaml").read_text())
    weights = next(Path(config["models"]["sd"], "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())  # rewritten in place: same name, new mtime
    jobs = planned_jobs(demo_run)
    upstream = {"train_projector": 1, "embeddings": 1, "generate": 4, "filter_default": 1, "filter": 1}
    assert upstream.items() <= jobs.items(), jobs
    assert jobs["train_classifier"] == 4  # sdi and sdi-2x, 2 seeds; real and copies read no model
    assert not {"split", "demo_dataset", "tiny_models"} & set(jobs)
