"""The augmented dataset as a product (issue 14): the export rule writes a method's exact training set
as a folder that Hugging Face datasets, torchvision and WebDataset read as it is; training writes
TensorBoard events; the Python API is light to import and the README's example runs.

The suite's shared finished demo (its export of the `sdi` method and its classifier runs); the other
exports go through the Python API on that run's files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO, run_snakemake

# the suite's shared finished demo (conftest.finished_demo: helpers.SMALL, with results/demo/export/sdi)
pytestmark = pytest.mark.workflow
SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}  # export folder -> Hugging Face split


@pytest.fixture
def run(finished_demo) -> Path:
    return finished_demo


def _metadata(export: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(export / s / "metadata.csv").assign(split=s) for s in SPLIT_NAMES],
                     ignore_index=True)


def _sources(run: Path, metadata: pd.DataFrame) -> list[Path]:
    """The image each export file stands for: real ones by image id (split manifests), synthetic by sample id."""
    res = run / "results" / "demo"
    real = pd.concat([pd.read_parquet(res / "split" / f"{s}.parquet") for s in SPLIT_NAMES])
    real_path = {f"real-{i}": p for i, p in zip(real.image_id, real.path, strict=True)}
    generated = pd.concat([pd.read_parquet(p) for p in (res / "sei" / "gauss-g2.0" / "shards").glob("*.parquet")])
    synthetic_path = dict(zip(generated.sample_id, generated.path, strict=True))
    out = []
    for row in metadata.itertuples():
        stem = Path(row.file_name).stem
        out.append(run / (real_path[stem] if row.source == "real" else synthetic_path[row.sample_id]))
    return out


def test_export_is_the_runs_training_set(run):
    res = run / "results" / "demo"
    export = res / "export" / "sdi"
    metadata = _metadata(export)
    train_set = pd.read_parquet(res / "classifier" / "sdi" / "seed0" / "train_set.parquet")
    exported = metadata[metadata.split == "train"].groupby(["label", "source"]).size()
    assert exported.to_dict() == train_set.groupby(["label", "source"]).size().to_dict()
    for name in ("val", "test"):
        split = pd.read_parquet(res / "split" / f"{name}.parquet")
        rows = metadata[metadata.split == name]
        assert (rows.source == "real").all()
        assert rows.groupby("label").size().to_dict() == split.groupby("label").size().to_dict()

    # the kept images, with the filter's provenance; file names say what they are and are unique
    kept = pd.read_parquet(res / "filtered" / "manifest.parquet").query("kept").set_index("sample_id")
    synthetic = metadata[metadata.source == "synthetic"].set_index("sample_id")
    assert sorted(synthetic.index) == sorted(kept.index)
    assert (synthetic.seed == kept.seed.loc[synthetic.index]).all()
    assert (synthetic.vector_sha256 == kept.vector_sha256.loc[synthetic.index]).all()
    assert synthetic.clip_score.to_numpy() == pytest.approx(kept.score.loc[synthetic.index].to_numpy(), abs=1e-3)
    assert (synthetic.variant == "gauss-g2.0").all()
    for split, rows in metadata.groupby("split"):
        assert rows.file_name.is_unique
        assert rows.apply(lambda r: Path(r.file_name).name.startswith(f"{r.source}-"), axis=1).all()
        assert sorted(str(p.relative_to(export / split)) for p in (export / split).rglob("*.png")) == \
            sorted(rows.file_name)

    readme = (export / "README.md").read_text()
    assert "snakemake --cores all results/demo/export/sdi" in readme
    assert "| | **total** | 40 | 40 | 10 | 30 |" in readme and "variant: gauss-g2.0" in readme
    info = json.loads((export / "export.json").read_text())
    assert info["files"] == {"train": 80, "val": 10, "test": 30} and info["method"] == "sdi"


def test_files_are_copies_of_the_sources(run):
    """export.link's default: each file has its source's bytes, in a file of its own."""
    export = run / "results" / "demo" / "export" / "sdi"
    metadata = _metadata(export)
    info = json.loads((export / "export.json").read_text())
    assert info["link"] == "copy" and info["links"] == {"copy": len(metadata)}
    for row, source in zip(metadata.itertuples(), _sources(run, metadata), strict=True):
        placed = export / row.split / row.file_name
        assert placed.stat().st_ino != source.stat().st_ino and not placed.is_symlink(), row.file_name
        assert placed.read_bytes() == source.read_bytes(), row.file_name


def test_huggingface_datasets_loads_it_with_the_right_labels(run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from datasets import load_dataset

    export = run / "results" / "demo" / "export" / "sdi"
    ds = load_dataset("imagefolder", data_dir=str(export), cache_dir=str(tmp_path / "hf"))
    assert set(ds) == set(SPLIT_NAMES.values())
    for folder, name in SPLIT_NAMES.items():
        metadata = pd.read_csv(export / folder / "metadata.csv")
        got = ds[name].remove_columns("image").to_pandas()
        assert got.label.tolist() == metadata.label.tolist()
        assert got.class_name.tolist() == metadata.class_name.tolist()
        assert got.source.tolist() == metadata.source.tolist()
    row = ds["train"].filter(lambda r: r["source"] == "synthetic")[0]
    assert row["image"].size == (64, 64) and row["sample_id"].startswith(f"{row['label']:04d}-")


def test_torchvision_imagefolder_and_webdataset_read_it(run):
    import webdataset as wds
    from torchvision.datasets import ImageFolder

    export = run / "results" / "demo" / "export" / "sdi"
    for folder in SPLIT_NAMES:
        metadata = pd.read_csv(export / folder / "metadata.csv")
        images = ImageFolder(str(export / folder))
        by_file = {str(Path(p).relative_to(export / folder)): label for p, label in images.samples}
        assert [by_file[f] for f in metadata.file_name] == metadata.label.tolist()  # folder order = sdi labels

        shards = sorted(str(p) for p in (export / "webdataset").glob(f"{folder}-*.tar"))
        samples = list(wds.WebDataset(shards, shardshuffle=False, empty_check=False))
        assert [int(s["cls"]) for s in samples] == metadata.label.tolist()
        assert [json.loads(s["json"])["file_name"] for s in samples] == metadata.file_name.tolist()
    assert len(list((export / "webdataset").glob("train-*.tar"))) == 5  # 80 rows, 16 per shard


def test_repeated_draws_real_copies_and_replacing_an_export(run, tmp_path, monkeypatch):
    from sdi.pipeline.export import ExportError, export_dataset
    from sdi.pipeline.training_set import read_generated

    monkeypatch.chdir(run)  # manifests name images relative to the workflow folder
    res = Path("results/demo")
    shards, _ = read_generated(shards=sorted((res / "sei" / "gauss-g2.0" / "shards").glob("*.parquet")))
    out = tmp_path / "sdi-3x"
    table = export_dataset(res / "split", out, generated=shards, variant="gauss-g2.0", pool="generated",
                           multiples=3, real_copies=1, dataset="demo", method="sdi-3x")
    n_c = pd.read_parquet(res / "split" / "train.parquet").groupby("label").size()
    train = table[table.split == "train"]
    assert train[train.source == "synthetic"].groupby("label").size().to_dict() == (3 * n_c).to_dict()
    assert train[train.source == "real"].groupby("label").size().to_dict() == n_c.to_dict()  # copies are no files
    repeats = train[train.file_name.str.contains(r"-r\d+\.png$")]
    assert len(repeats) >= 10  # the pool holds 2 n_c, so 3 n_c draws repeat at least n_c images
    for row in repeats.itertuples():
        first = out / "train" / re.sub(r"-r\d+\.png$", ".png", row.file_name)
        assert (out / "train" / row.file_name).read_bytes() == first.read_bytes()
    readme = (out / "README.md").read_text()
    assert "1 more copies of the real training images" in readme and "-r1" in readme

    # an existing export is replaced whole, not merged: a real-only export leaves no synthetic file
    export_dataset(res / "split", out, dataset="demo", method="real")
    assert not list(out.rglob("synthetic-*")) and len(list((out / "train").rglob("*.png"))) == n_c.sum()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sdi-3x"]  # no temporary folder left behind
    # a folder that is not an export is left alone
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an sdi export"):
        export_dataset(res / "split", mine)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_export_targets_are_checked_while_planning(run):
    out = run_snakemake(run, "-n", "--cores", "2", "results/demo/export/default").stdout
    assert "wildcards: dataset=demo, export=default" in out
    assert "input: results/demo/filtered, results/demo/split" in out  # the default variant's kept images
    bad = run_snakemake(run, "-n", "--cores", "2", "results/demo/export/nope", check=False)
    assert bad.returncode != 0
    assert "'nope' is not a key of config.experiments.methods" in bad.stderr + bad.stdout
    assert "real, sdi, sdi-2x, copies, or 'default'" in bad.stderr + bad.stdout


def test_tensorboard_events_hold_the_logged_values(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def events(folder: Path) -> EventAccumulator:
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        return acc

    res = run / "results" / "demo"
    projector = events(res / "projector" / "tensorboard")
    loss = pd.read_csv(res / "projector" / "loss.csv")
    assert {"loss", "lr", "epoch_loss"} <= set(projector.Tags()["scalars"])
    assert [e.step for e in projector.Scalars("loss")] == loss.step.tolist()
    assert [e.value for e in projector.Scalars("loss")] == pytest.approx(loss.loss.tolist(), rel=1e-5)

    run_dir = res / "classifier" / "sdi" / "seed0"
    classifier = events(run_dir / "tensorboard")
    log = pd.read_csv(run_dir / "log.csv")
    for tag, column in (("val/top1", "val_top1"), ("train/loss", "train_loss"), ("lr", "lr")):
        assert [e.step for e in classifier.Scalars(tag)] == log.epoch.tolist()
        assert [e.value for e in classifier.Scalars(tag)] == pytest.approx(log[column].tolist(), rel=1e-5)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert classifier.Scalars("test/top1")[-1].value == pytest.approx(metrics["top1"], rel=1e-5)

    grids = events(res / "sei" / "gauss-g2.0" / "tensorboard")
    # three jobs' grids (two shards, the filter) in one folder, each in event files of its own
    assert set(grids.Tags()["images"]) == {"generation/shard0", "generation/shard1", "filter/kept_and_dropped"}
    assert len(list((res / "sei" / "gauss-g2.0" / "tensorboard").glob("events.out.tfevents.*"))) == 3


def test_wandb_configured_but_missing_is_named():
    from sdi.config.tracking import TrackingConfig, TrackingError, require_wandb, tracking_problem

    config = {"tracking": {"wandb": {"project": "sdi"}}}
    assert TrackingConfig.from_config(config).wandb == {"project": "sdi", "mode": "offline"}
    assert tracking_problem({"tracking": {"tensorboard": True}}) is None
    with pytest.raises(TrackingError, match="config.tracking.wandb.mode"):
        TrackingConfig.from_config({"tracking": {"wandb": {"project": "sdi", "mode": "sometimes"}}})
    try:
        import wandb  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("wandb is installed here")
    assert "config.tracking.wandb" in tracking_problem(config) and "sdi[wandb]" in tracking_problem(config)
    with pytest.raises(TrackingError, match="config.tracking.wandb is set, but the wandb package is not installed"):
        require_wandb()


def test_python_api_is_light_to_import_and_documented():
    code = ("import sys, sdi; heavy = [m for m in ('torch', 'diffusers', 'tensorboard', 'wandb') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"

    import inspect

    import sdi

    for name in ("read_dataset", "make_split", "train_projector", "extract_embeddings", "sample_class_embeddings",
                 "generate_shard", "filter_generated", "train_classifier", "export_dataset"):
        assert name in sdi.__all__ and name in dir(sdi)
        function = getattr(sdi, name)
        assert callable(function) and function.__doc__, name
        signature = inspect.signature(function)
        assert signature.return_annotation is not inspect.Signature.empty, name
    import sdi.training.projector  # the stage's module lives in its layer's subpackage, apart from the function

    assert inspect.isfunction(sdi.train_projector) and sdi.train_projector is sdi.training.projector.train_projector


def test_readme_python_example_runs(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    manifest = namespace["manifest"]
    assert len(manifest) == 3 and all(Path(p).is_file() for p in manifest.path)
    assert manifest.vector_sha256.str.len().eq(64).all()

