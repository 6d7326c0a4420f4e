"""The experiment matrix and the Table 2 summary, on metrics files with known numbers."""

import json

import numpy as np
import pandas as pd
import pytest

from sdi.config.experiments import experiment_errors, methods, run_snapshot
from sdi.evaluation.summary import collect_runs, ranks, summary_table, write_summary

TOP1 = {  # (dataset, method) -> top-1 per seed
    ("cub", "real"): [10.0, 14.0], ("cub", "sdi"): [60.0, 62.0], ("cub", "text"): [30.0, 40.0],
    ("pets", "real"): [5.0, 7.0], ("pets", "sdi"): [70.0, 80.0], ("pets", "text"): [75.0, 77.0],
}


def _write_runs(root):
    runs = []
    for (dataset, method), values in TOP1.items():
        for seed, top1 in enumerate(values):
            folder = root / "results" / dataset / "classifier" / method / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps(
                {"top1": top1, "balanced": top1 - 1, "wall_time_s": 360.0, "device": "cuda"}))
            (folder / "config.yaml").write_text(f"seed: {seed}\n")
            runs.append({"dataset": dataset, "method": method, "seed": seed, "metrics": str(folder / "metrics.json")})
    return runs


def test_table_has_methods_as_rows_datasets_and_average_as_columns(tmp_path):
    runs = collect_runs(_write_runs(tmp_path))
    table = summary_table(runs, ["cub", "pets"], ["real", "text", "sdi"])
    assert list(table.index) == ["real", "text", "sdi"]
    assert table.loc["sdi", "cub"] == 61.0 and table.loc["sdi", "cub_std"] == pytest.approx(np.std([60, 62], ddof=1))
    assert table.loc["text", "pets"] == 76.0 and table.loc["real", "pets_n"] == 2
    assert table.loc["sdi", "average"] == pytest.approx((61 + 75) / 2)
    # per-seed averages of sdi: (60+70)/2 = 65, (62+80)/2 = 71
    assert table.loc["sdi", "average_std"] == pytest.approx(np.std([65, 71], ddof=1))
    assert list(ranks(table["pets"])) == [0, 1, 2]  # text 76 best, sdi 75 second
    assert list(ranks(pd.Series([3.0, 3.0, 1.0, np.nan]))) == [1, 1, 2, 0]


def test_write_summary_marks_best_links_runs_and_counts_hours(tmp_path):
    runs = collect_runs(_write_runs(tmp_path))
    bench = tmp_path / "benchmarks" / "generate.tsv"
    bench.parent.mkdir()
    bench.write_text("s\th:m:s\n1800.0\t0:30:00\n")
    res = tmp_path / "results"
    out = {ext: str(res / f"summary.{ext}") for ext in ("csv", "md", "html", "png")}
    write_summary(runs, ["cub", "pets"], {"real": "Real only", "text": "SD", "sdi": "SDI"}, out,
                  stage_benchmarks={"sdi": [str(bench), str(tmp_path / "missing.tsv")]})

    csv = pd.read_csv(out["csv"]).set_index("method")
    assert list(csv.index) == ["real", "text", "sdi"] and list(csv.label) == ["Real only", "SD", "SDI"]
    assert {"cub", "cub_std", "pets", "pets_std", "average", "average_std", "device_hours"} <= set(csv.columns)
    assert csv.loc["real", "cub"] == 12.0
    # 4 classifier runs x 360 s = 0.4 h; sdi also 0.5 h of generation from its (existing) benchmark file
    assert csv.loc["real", "device_hours"] == pytest.approx(0.4)
    assert csv.loc["sdi", "device_hours"] == pytest.approx(0.9) and csv.loc["sdi", "devices"] == "cuda"

    md = (res / "summary.md").read_text().splitlines()
    row = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in md
           if line.startswith("| ") and not line.startswith("| method")}
    assert row["SDI"][0].startswith("**61.0 ± 1.4**") and row["SD"][0].startswith("<u>35.0 ± 7.1</u>")
    assert row["SD"][1].startswith("**76.0 ± 1.4**") and row["SDI"][1].startswith("<u>75.0 ± 7.1</u>")
    assert row["SDI"][2] == "**68.0 ± 4.2**"
    assert "[s0](cub/classifier/sdi/seed0/metrics.json) [cfg](cub/classifier/sdi/seed0/config.yaml)" in row["SDI"][0]
    for line in md:  # every link resolves relative to summary.md
        for target in pd.Series([line]).str.extractall(r"\]\(([^)]+)\)")[0]:
            assert (res / target).is_file(), target
    page = (res / "summary.html").read_text()
    assert "<b>61.0 ± 1.4</b>" in page and page.count("<tr>") == 5  # header, protocol title, 3 methods
    assert (res / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_matrix_config_resolves_methods_and_names_bad_references():
    config = {"variants": {"gauss-g2.0": {"sampler": "gauss"}}, "classifier": {"augment": "none"},
              "experiments": {"seeds": [0], "methods": {"real": None, "ra": {"augment": "randaugment"},
                                                        "sdi": {"variant": "gauss-g2.0", "label": "SDI"}}}}
    defaults = {"augment_at": "crop", "multiples": None, "real_copies": 0, "keep_ratio": None, "draw_seed": 0,
                "protocol": "scratch"}
    assert methods(config) == {
        "real": {"variant": None, "augment": "none", "label": "real", "pool": None, **defaults},
        "ra": {"variant": None, "augment": "randaugment", "label": "ra", "pool": None, **defaults},
        "sdi": {"variant": "gauss-g2.0", "augment": "none", "label": "SDI", "pool": "kept", **defaults}}
    assert experiment_errors(config) == []
    config["experiments"]["methods"]["bad"] = {"variant": "gmm9"}
    (error,) = experiment_errors(config)
    assert "config.experiments.methods.bad.variant" in error and "gmm9" in error


def test_run_snapshot_holds_only_what_the_run_depends_on():
    config = {"datasets": {"a": {"root": "x"}, "b": {"root": "y"}}, "split": {"seed": 0},
              "classifier": {"epochs": 3, "augment": "none"}, "variants": {"v": {"sampler": "g"}},
              "samplers": {"g": {"method": "gauss"}}, "models": {"tiny": True}, "projector": {"epochs": 1},
              "generation": {"seed": 0},
              "experiments": {"methods": {"real": {}, "sdi": {"variant": "v"}}, "seeds": [0]}}
    real = run_snapshot(config, "a", "real", 1, None)
    assert real["datasets"] == {"a": {"root": "x"}} and real["classifier"]["seed"] == 1
    assert "projector" not in real and "variant" not in real
    sdi = run_snapshot(config, "a", "sdi", 0, {"sampler": "g", "keep_ratio": 0.5})
    assert sdi["variant"] == "v" and sdi["sampler"] == {"method": "gauss"} and sdi["projector"] == {"epochs": 1}


def test_rows_of_different_protocols_are_never_ranked_against_each_other(tmp_path):
    runs = collect_runs(_write_runs(tmp_path))
    res = tmp_path / "results"
    out = {ext: str(res / f"summary.{ext}") for ext in ("csv", "md", "html", "png")}
    write_summary(runs, ["cub", "pets"], {"real": "Real only", "text": "SD", "sdi": "SDI"}, out,
                  protocols={"real": "scratch", "text": "linear_probe", "sdi": "scratch"})
    csv = pd.read_csv(out["csv"]).set_index("method")
    assert csv.protocol.to_dict() == {"real": "scratch", "text": "linear_probe", "sdi": "scratch"}
    md = (res / "summary.md").read_text()
    scratch, probe = md.split("### Protocol linear_probe")
    assert "### Protocol scratch" in scratch and "| Real only |" in scratch and "| SDI |" in scratch
    assert "| SD |" in probe and "| SDI |" not in probe
    # within scratch, SDI is best on pets (75) and Real only second; SD (76) is alone in its own table
    row = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "**75.0 ± 7.1**" in row["SDI"] and "<u>6.0 ± 1.4</u>" in row["Real only"]
    assert "**76.0 ± 1.4**" in row["SD"]
