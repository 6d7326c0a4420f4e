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

from helpers import (
    SMALL,
    SMALL_METHODS,
    SMALL_RUNS,
    check_artifacts,
    copy_workflow,
    edit_config,
    planned_jobs,
    run_snakemake,
)

# every test here but one reads the suite's shared finished demo (conftest.finished_demo)
pytestmark = pytest.mark.workflow
METHODS, RUNS = SMALL_METHODS, SMALL_RUNS


def test_every_artifact_is_well_formed(finished_demo):
    check_artifacts(finished_demo, RUNS)


def _data_uris(html: str) -> list[tuple[str, bytes]]:
    """[(filename, bytes)] of the base64 data URIs embedded in a Snakemake HTML report."""
    uris = re.findall(r"data:[\w/+.-]+;charset=[\w-]+;filename=([^;\"']+);base64,([A-Za-z0-9+/=]+)", html)
    return [(name, base64.b64decode(data)) for name, data in uris]


def test_summary_and_report(finished_demo):
    res = finished_demo / "results"
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

    run_snakemake(finished_demo, "--report", "report.html")
    html = (finished_demo / "report.html").read_text()
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


def test_only_invalidated_steps_rerun(finished_demo):
    assert planned_jobs(finished_demo) == {}

    # execution-only settings (config/schema.yaml x-execution-only) say how jobs run, not what
    # they compute: changing every one of them plans nothing
    original = yaml.safe_load((finished_demo / "config" / "config.yaml").read_text())
    edit_config(finished_demo, device="cpu", embeddings={"batch_size": 3}, filter={"batch_size": 5},
                  generation={"batch_size": 3, "compile": True}, diagnostics={"batch_size": 7},
                  classifier={"num_workers": 1}, resources={"train_classifier": {"cpus": 1, "mem_mb": 999}},
                  cluster={"account": "lab", "partition": "gpu"})
    assert planned_jobs(finished_demo) == {}
    (finished_demo / "config" / "config.yaml").write_text(yaml.safe_dump(original, sort_keys=False))

    # runs that draw from every generated image (sdi-2x) do not depend on the filter
    edit_config(finished_demo, filter={"keep_ratio": 0.25})
    figures = {"diagnostics": 2, "report_filter_figures": 2, "overview": 1, "training_curves": 1, "summary": 1}
    assert planned_jobs(finished_demo) == {"filter_default": 1, "filter": 1, "train_classifier": 2, **figures, "all": 1}

    edit_config(finished_demo, filter={"keep_ratio": 0.5},
                  samplers={"gauss": {"method": "gauss", "expansion": 3}, "text": {"method": "text", "expansion": 1}})
    assert planned_jobs(finished_demo) == {"sample": 1, "generate": 2, "filter_default": 1, "train_classifier": 4,
                                      "diagnostics": 1, "report_filter_figures": 1, "overview": 1,
                                      "training_curves": 1, "summary": 1, "all": 1}

    edit_config(finished_demo, samplers=SMALL["samplers"])
    assert planned_jobs(finished_demo) == {}


def test_filtered_target_builds_alone(tmp_path):
    workflow = copy_workflow(tmp_path / "wf")
    edit_config(workflow, **SMALL)
    out = run_snakemake(workflow, "-n", "--cores", "2", "results/demo/filtered").stdout
    assert "train_classifier" not in out and "filter_default" in out and "text" not in out.split("Job stats")[1]


def test_rewritten_model_weights_rerun_the_projector_onward(finished_demo):
    """Swapping the weights inside a user's SD folder reruns every job that read them, and no other."""
    assert planned_jobs(finished_demo) == {}
    config = yaml.safe_load((finished_demo / "config" / "config.yaml").read_text())
    weights = next(Path(finished_demo, config["models"]["sd"], "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())  # rewritten in place: same name, new mtime
    jobs = planned_jobs(finished_demo)
    upstream = {"train_projector": 1, "embeddings": 1, "generate": 4, "filter_default": 1, "filter": 1}
    assert upstream.items() <= jobs.items(), jobs
    assert jobs["train_classifier"] == 4  # sdi and sdi-2x, 2 seeds; real and copies read no model
    assert not {"split", "demo_dataset", "tiny_models"} & set(jobs)
