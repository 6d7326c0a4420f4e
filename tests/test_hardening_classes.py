"""Classes that would silently degrade a run (issue 36): two classes sharing a prompt name, a class with
training images but no test image (an error unless config.split.allow_missing_test_classes, then the metrics and
the summary say over how many classes the accuracy is), and a one-image class under the Gaussian sampler (a
warning recorded in the samples file and the summary, or an error with samplers.<name>.min_images)."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

from sdi.data.readers import read_dataset
from sdi.data.readers.base import DatasetError
from sdi.data.readers.table import read_table
from sdi.evaluation.metrics import classification_metrics
from sdi.evaluation.summary import class_notes, collect_runs, write_summary
from sdi.pipeline.sampling import SamplingError, sample_class_embeddings, single_image_classes, write_samples

from helpers import write_image

KEY = "config.datasets.pets.root"


def _imagefolder(root, classes, test_classes=None, per_class=2):
    """root/train/<c>/ and root/test/<c>/ with per_class small PNGs each (test: test_classes, default all)."""
    for part, names in (("train", classes), ("test", classes if test_classes is None else test_classes)):
        for i, c in enumerate(names):
            for k in range(per_class):
                write_image(root / part / c / f"{k}.png", seed=10 * i + k)
    return root


# --------------------------------------------------------------------------- A: colliding prompt names
@pytest.mark.parametrize(("folders", "shared"), [(["Cat", "cat"], "cat"), (["001.cat", "002.cat"], "cat"),
                                                (["Big  Cat", "big_cat"], "big cat")])
def test_colliding_prompt_names_fail_naming_both_folders_and_class_names(tmp_path, folders, shared):
    root = _imagefolder(tmp_path / "pets", folders)
    with pytest.raises(DatasetError) as err:
        read_dataset("imagefolder", root, KEY)
    msg = str(err.value)
    assert all(f"folder train/{f}" in msg for f in folders)
    assert "config.datasets.pets.class_names" in msg and f"-> {shared!r}" in msg


def test_a_class_names_file_that_renames_one_lets_it_pass(tmp_path):
    root = _imagefolder(tmp_path / "pets", ["001.cat", "002.cat"])
    (tmp_path / "names.json").write_text(json.dumps({"001.cat": "tabby cat", "002.cat": "cat"}))
    table = read_dataset("imagefolder", root, KEY, options={"class_names": str(tmp_path / "names.json")})
    assert sorted(table.class_name.unique()) == ["cat", "tabby cat"]
    (tmp_path / "same.json").write_text(json.dumps({"001.cat": "Cat", "002.cat": "cat "}))
    with pytest.raises(DatasetError, match=r"Give them distinct names in .*same\.json "
                                           r"\(config\.datasets\.pets\.class_names\)"):
        read_dataset("imagefolder", root, KEY, options={"class_names": str(tmp_path / "same.json")})


def test_a_table_with_colliding_names_names_the_column_and_lists(tmp_path):
    for i in range(2):
        for subset in ("train", "test"):
            write_image(tmp_path / subset / f"{i}.png", seed=i)
    rows = [{"path": f"{s}/{i}.png", "class_name": n} for i, n in enumerate(["Cat", "cat"])
            for s in ("train", "test")]
    pd.DataFrame([r for r in rows if r["path"].startswith("train")]).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame([r for r in rows if r["path"].startswith("test")]).to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DatasetError, match=r"(?s)'Cat' \(label 0\) and 'cat' \(label 1\) -> 'cat'.*'class_name' "
                                           r"column of the file lists of config\.datasets\.pets\.files"):
        read_table(tmp_path, KEY, files={"train": "train.csv", "test": "test.csv"})


# --------------------------------------------------------------------------- B: a class absent from test
def test_a_class_without_test_images_fails_unless_allowed(tmp_path):
    classes = [f"c{i}" for i in range(10)]
    root = _imagefolder(tmp_path / "pets", classes, test_classes=classes[:9])
    with pytest.raises(DatasetError, match=r"(?s)1 of 10 class\(es\) have training images but no test image.*'c9' "
                                           r"\(folder train/c9, 2 training image\(s\)\).*"
                                           r"config\.split\.allow_missing_test_classes: true"):
        read_dataset("imagefolder", root, KEY)
    table = read_dataset("imagefolder", root, KEY, allow_missing_test_classes=True)
    assert table.attrs["missing_test_classes"] == ["c9"]
    assert table[table.subset == "test"].label.nunique() == 9


def test_metrics_and_summary_say_accuracy_is_over_9_of_10_classes(tmp_path):
    names = [f"c{i}" for i in range(10)]
    y_true = np.repeat(np.arange(9), 2)  # class 9 has no test image
    y_pred = y_true.copy()
    y_pred[:2] = 9  # class 0 wrong both times, predicted as the absent class
    m = classification_metrics(y_true, y_pred, 10, names)
    assert (m["test_classes"], m["num_classes"], m["absent_classes"]) == (9, 10, ["c9"])
    assert m["balanced"] == pytest.approx(100 * 8 / 9)  # mean recall over the 9 classes present, as sklearn

    runs = []
    for seed in (0, 1):
        path = tmp_path / "results" / "pets" / "real" / f"seed{seed}" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({**m, "wall_time_s": 1.0, "device": "cpu"}))
        runs.append({"dataset": "pets", "method": "real", "seed": seed, "metrics": str(path)})
    table = collect_runs(runs)
    assert class_notes(table, ["pets"]) == [
        "pets: accuracy over 9 of 10 classes (class 'c9' has no test image; balanced accuracy is the mean recall "
        "over those 9)"]
    out = {ext: str(tmp_path / "results" / f"summary.{ext}") for ext in ("csv", "md", "html", "png")}
    write_summary(table, ["pets"], {"real": "Real only"}, out)
    md = (tmp_path / "results" / "summary.md").read_text()
    assert "- pets: accuracy over 9 of 10 classes (class 'c9' has no test image" in md
    assert "accuracy over 9 of 10 classes" in (tmp_path / "results" / "summary.html").read_text()


def test_a_full_test_set_adds_no_note(tmp_path):
    m = classification_metrics([0, 1], [0, 1], 2)
    assert (m["test_classes"], m["absent_classes"]) == (2, [])
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({**m, "wall_time_s": 1.0, "device": "cpu"}))
    assert class_notes(collect_runs([{"dataset": "d", "method": "real", "seed": 0, "metrics": str(path)}]),
                       ["d"]) == []


# --------------------------------------------------------------------------- C: a one-image class under gauss
def _embeddings(counts: dict[int, int], d: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"image_id": f"{c}-{i}", "label": c, "class_name": f"class{c}", "embedding": rng.normal(size=d)}
            for c, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows)


def test_gauss_warns_about_a_one_image_class_and_records_it(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="sdi.pipeline.sampling"):
        samples = sample_class_embeddings(_embeddings({0: 1, 1: 3}), method="gauss", expansion=4, seed=0,
                                          n_shards=1, key="config.samplers.gauss")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "class 0 (class0): 1 training image, so all 4 samples" in warned[0]
    assert "copies of its one embedding" in warned[0] and "config.samplers.gauss.min_images: 2" in warned[0]
    one = np.stack(samples[samples.label == 0].vector)
    assert np.allclose(one, one[0], atol=1e-2)  # the consequence the warning states
    write_samples(samples, tmp_path / "gauss.parquet")
    assert single_image_classes(tmp_path / "gauss.parquet") == [{"label": 0, "class_name": "class0", "n_samples": 4}]

    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"top1": 50.0, "balanced": 50.0, "wall_time_s": 1.0, "device": "cpu"}))
    runs = collect_runs([{"dataset": "d", "method": "sdi", "seed": 0, "metrics": str(metrics)}])
    out = {ext: str(tmp_path / f"summary.{ext}") for ext in ("csv", "md", "html", "png")}
    write_summary(runs, ["d"], {"sdi": "SDI"}, out, samplings=[
        {"dataset": "d", "sampler": "gauss", "samples": str(tmp_path / "gauss.parquet"), "methods": ["SDI"]}])
    md = (tmp_path / "summary.md").read_text()
    assert ("- d, sampler gauss (SDI): 1 class(es) have one training image, so all their samples are copies of "
            "that image's embedding: 'class0' (4 samples)") in md


def test_min_images_makes_a_one_image_class_an_error_naming_the_key():
    with pytest.raises(SamplingError, match=r"config\.samplers\.gauss\.min_images is 2, but 1 class\(es\) have "
                                            r"fewer .*'class0' \(label 0\): 1"):
        sample_class_embeddings(_embeddings({0: 1, 1: 3}), method="gauss", expansion=1, seed=0, n_shards=1,
                                min_images=2, key="config.samplers.gauss")
    text = sample_class_embeddings(_embeddings({0: 1}), method="text", expansion=1, seed=0, n_shards=1, min_images=2)
    assert text.attrs["single_image_classes"] == []  # the text baseline draws no vectors
