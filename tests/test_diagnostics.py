"""Distribution diagnostics on synthetic data with a known answer."""

import json

import numpy as np
import pandas as pd
import pytest

from sdi.evaluation.diagnostics import class_diagnostics, near_duplicates, prdc, run_diagnostics


def _classes(rng, n_per_class=20, d=8, n_classes=3):
    centres = rng.normal(scale=10.0, size=(n_classes, d))
    x = np.concatenate([c + rng.normal(size=(n_per_class, d)) for c in centres])
    return x, np.repeat(np.arange(n_classes), n_per_class), centres


def test_prdc_of_the_real_points_themselves_is_perfect_and_far_points_score_zero():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(50, 6))
    same = prdc(real, real.copy(), k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    assert same["density"] >= 1.0  # each real point lies in its own ball and in its neighbours'
    far = prdc(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0, "k": 5}


def test_infilling_samples_sit_between_copies_and_far_samples():
    rng = np.random.default_rng(1)
    real, labels, centres = _classes(rng)
    names = {0: "a", 1: "b", 2: "c"}
    copies = real + rng.normal(scale=1e-3, size=real.shape)
    infill = np.concatenate([c + rng.normal(size=(40, real.shape[1])) for c in centres])  # same distribution
    far = np.concatenate([c + 30.0 + rng.normal(size=(40, real.shape[1])) for c in centres])
    infill_labels = np.repeat(np.arange(3), 40)
    rows = {name: class_diagnostics(real, labels, x, y, names, space="t", k=3)
            for name, x, y in (("copies", copies, labels), ("infill", infill, infill_labels),
                               ("far", far, infill_labels))}
    ratio = {name: t.nn_ratio.mean() for name, t in rows.items()}
    assert ratio["copies"] < 0.01 < ratio["infill"] < 3 < ratio["far"]
    assert rows["infill"].precision.mean() > 0.7 and rows["infill"].coverage.mean() > 0.7
    assert rows["far"].precision.max() == 0.0 and rows["far"].coverage.max() == 0.0
    assert list(rows["far"].label) == [0, 1, 2] and (rows["far"].n_real == 20).all()


def test_small_classes_have_defined_values():
    one = class_diagnostics(np.zeros((1, 4)), np.array([0]), np.ones((3, 4)), np.zeros(3, int), {0: "x"},
                            space="t", k=5)
    assert one.n_real.item() == 1 and np.isnan(one.precision.item()) and np.isnan(one.real_nn_median.item())
    two = prdc(np.array([[0.0], [1.0]]), np.array([[0.5]]), k=5)
    assert two["k"] == 1 and two["precision"] == 1.0 and np.isnan(two["recall"])


def test_near_duplicates_flag_copies_and_test_overlap(tmp_path):
    rng = np.random.default_rng(2)
    real, labels, _ = _classes(rng, n_per_class=6, d=16)
    train = pd.DataFrame({"image_id": [f"tr{i}" for i in range(len(real))], "label": labels,
                          "class_name": [f"c{y}" for y in labels]})
    test_clip = rng.normal(size=(5, 16))
    test = pd.DataFrame({"image_id": [f"te{i}" for i in range(5)], "label": 0})
    # kept: a copy of train image 3, a copy of test image 2, and two unrelated images
    kept_clip = np.stack([real[3] * 2.0, test_clip[2], rng.normal(size=16), rng.normal(size=16)])
    kept = pd.DataFrame({"sample_id": ["s0", "s1", "s2", "s3"], "label": [labels[3], 0, 1, 2],
                         "path": ["p0", "p1", "p2", "p3"]})
    cos, idx = near_duplicates(kept_clip, real, threshold=0.95)
    assert cos[0] == pytest.approx(1.0) and idx[0] == 3

    summary = run_diagnostics(train, real, real, kept, kept_clip, kept, kept_clip, test, test_clip, tmp_path,
                              k=3, duplicate_threshold=0.95, projection_classes=2)
    dup = pd.read_csv(tmp_path / "near_duplicates.csv").set_index("sample_id")
    assert dup.loc["s0", "copies_train"] and dup.loc["s0", "nearest_train"] == "tr3"
    assert dup.loc["s1", "overlaps_test"] and dup.loc["s1", "nearest_test"] == "te2"
    assert not dup.loc[["s2", "s3"], "copies_train"].any()
    assert summary["n_copies_train"] >= 1 and summary["n_overlaps_test"] >= 1
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    per_class = pd.read_csv(tmp_path / "per_class.csv")
    assert set(per_class.space) == {"conditioning", "clip_image"}
    for png in ("distances.png", "projection.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
