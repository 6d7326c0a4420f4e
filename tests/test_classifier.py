"""Downstream classifier (docs/method.md section 7): metrics, transforms, training run, resume."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from sdi.evaluation.metrics import classification_metrics
from sdi.io.images import load_rgb
from sdi.training.checkpoints import load_classifier
from sdi.training.classifier import train_classifier
from sdi.training.data import ManifestDataset
from sdi.training.engine import evaluate
from sdi.training.transforms import MEAN, STD, Cutout, GridMask, build_transforms

TINY = {"num_classes": 10, "epochs": 2, "batch_size": 16, "resize": 40, "crop": 32, "seed": 0,
        "device": "cpu", "num_workers": 0}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """ResNet50 on 32x32 batches of 16 gains nothing from intra-op threads, and on a shared
    2-core machine OpenMP threads that wait for each other make it many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def class_names(split: dict) -> list[str]:
    names = split["train"].drop_duplicates("label").sort_values("label")
    return names.class_name.tolist()


# --------------------------------------------------------------------------- metrics
def test_metrics_on_a_known_confusion():
    # rows = true class, columns = predicted class; class 3 never occurs but is predicted once
    confusion = [[4, 1, 0, 0],
                 [1, 1, 0, 1],
                 [2, 0, 0, 0],
                 [0, 0, 0, 0]]
    y_true, y_pred = [], []
    for t, row in enumerate(confusion):
        for p, count in enumerate(row):
            y_true += [t] * count
            y_pred += [p] * count
    m = classification_metrics(y_true, y_pred, num_classes=4, class_names=["a", "b", "c", "d"])

    assert m["n"] == 10
    assert m["confusion"] == confusion
    assert m["top1"] == pytest.approx(50.0)  # 5 correct of 10
    assert m["balanced"] == pytest.approx(100 * (4 / 5 + 1 / 3 + 0 / 2) / 3)  # 37.78: classes in y_true only
    assert [c["n"] for c in m["per_class"]] == [5, 3, 2, 0]
    assert [c["correct"] for c in m["per_class"]] == [4, 1, 0, 0]
    assert [c["accuracy"] for c in m["per_class"]][:3] == pytest.approx([80.0, 100 / 3, 0.0])
    assert m["per_class"][3]["accuracy"] is None
    assert [c["class_name"] for c in m["per_class"]] == ["a", "b", "c", "d"]
    json.dumps(m)  # plain data, writable as metrics.json


def test_metrics_reject_labels_outside_the_classes():
    with pytest.raises(ValueError, match="outside 0..2"):
        classification_metrics([0, 1, 3], [0, 1, 1], num_classes=3)


# --------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("augment", ["none", "randaugment", "cutout", "gridmask"])
def test_train_transform_shapes(digits_split, augment):
    img = load_rgb(digits_split["train"].path.iloc[0])
    torch.manual_seed(0)
    x = build_transforms(40, 32, augment, train=True)(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    # Normalize(MEAN, STD) of 8-bit pixels never gives exactly 0 in all channels (no channel
    # mean is a multiple of 1/255), so all-zero pixels can only come from a mask.
    zeroed = (x == 0).all(dim=0)
    if augment in ("cutout", "gridmask"):
        assert zeroed.any()
    else:
        assert not zeroed.any()


def test_eval_transform_is_deterministic(digits_split):
    img = load_rgb(digits_split["test"].path.iloc[0])
    tf = build_transforms(40, 32, train=False)
    a, b = tf(img), tf(img)
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    # the centre crop of the normalised image; check normalisation on a single pixel
    raw = torch.from_numpy(np.array(img.resize((40, 40), resample=2))).permute(2, 0, 1).float() / 255
    expected = (raw[:, 20, 20] - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(a[:, 16, 16], expected, atol=1e-5)


def test_cutout_zeroes_one_clipped_square():
    torch.manual_seed(0)
    for _ in range(20):
        out = Cutout(length=8)(torch.ones(3, 32, 32))
        zero = (out == 0).all(dim=0)
        assert torch.equal(zero, (out == 0).any(dim=0))  # same hole in every channel
        rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert 4 <= h <= 8 and 4 <= w <= 8 and zero.sum() == h * w  # one rectangle, clipped at the border


@pytest.mark.parametrize("seed", range(5))
def test_augment_at_raw_cuts_the_raw_image_before_the_resize(seed):
    """A 32 px Cutout hole on a 64 px raw image is a 128 px hole after Resize((256, 256)); at the
    crop (classifier.augment_at's default) the hole is at most round(32 x 256 / 224) = 37 px on a side."""
    from PIL import Image

    white = Image.new("RGB", (64, 64), (255, 255, 255))
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]

    def dark_pixels(augment_at: str) -> int:
        torch.manual_seed(seed)
        x = build_transforms(256, 256, "cutout", train=True, augment_at=augment_at, rotation=0)(white)
        return int(((x * std + mean).mean(dim=0) < 0.5).sum())

    raw, crop = dark_pixels("raw"), dark_pixels("crop")
    # the raw hole is at least 16 x 16 px (a 32 px square clipped at the border), 64 x 64 px after the resize
    assert 3500 <= raw <= 128 * 128 + 2 * 128
    assert 0 < crop <= 37 * 37
    steps = build_transforms(256, 224, "randaugment", train=True, augment_at="raw").transforms
    assert type(steps[0]).__name__ == "RandAugment" and type(steps[1]).__name__ == "Resize"
    with pytest.raises(ValueError, match="augment_at"):
        build_transforms(256, 224, "cutout", augment_at="middle")


def test_gridmask_removes_the_expected_fraction():
    # ratio 0.5 keeps stripes of width d/2: squares of side d/2 per d x d cell are removed (1/4)
    torch.manual_seed(0)
    out = GridMask(d_min=20, d_max=21, ratio=0.5, rotate=1)(torch.ones(3, 200, 200))
    assert (out == 0).all(dim=0).float().mean().item() == pytest.approx(0.25)
    rotated = GridMask(d_min=20, d_max=21, ratio=0.5, rotate=15)(torch.ones(3, 200, 200))
    assert (rotated == 0).all(dim=0).float().mean().item() == pytest.approx(0.25, abs=0.03)


# --------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def straight_run(digits_split, tmp_path_factory):
    out = tmp_path_factory.mktemp("clf") / "straight"
    metrics = train_classifier(digits_split["train"], digits_split["val"], digits_split["test"], out,
                               class_names=class_names(digits_split), **TINY)
    return out, metrics


def test_tiny_run_writes_wellformed_outputs(straight_run, digits_split):
    out, metrics = straight_run
    assert {"metrics.json", "log.csv", "best", "last"} <= {p.name for p in out.iterdir()}
    assert sorted(p.name for p in (out / "last").iterdir()) == ["model.safetensors", "optimizer.safetensors",
                                                                 "state.json"]
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]  # nothing half-written left behind
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))

    test, names = digits_split["test"], class_names(digits_split)
    assert metrics["n"] == len(test) and metrics["n_train_real"] == len(digits_split["train"])
    assert metrics["n_train_synthetic"] == 0 and metrics["epochs"] == 2 and metrics["device"] == "cpu"
    assert [c["n"] for c in metrics["per_class"]] == test.groupby("label").size().tolist()
    assert [c["class_name"] for c in metrics["per_class"]] == names
    assert np.asarray(metrics["confusion"]).sum() == len(test)
    assert 0 <= metrics["balanced"] <= 100 and 0 <= metrics["top1"] <= 100

    log = pd.read_csv(out / "log.csv")
    assert log.columns.tolist() == ["epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1",
                                    "val_balanced"]
    assert log.epoch.tolist() == [1, 2]
    assert log.lr.tolist() == pytest.approx([0.01, 0.005])  # cosine annealing over 2 epochs
    assert np.isfinite(log[["train_loss", "val_loss"]].to_numpy()).all()
    # the checkpoint is chosen on validation, ties going to the earlier epoch
    assert metrics["best_epoch"] == int(log.epoch[log.val_top1.idxmax()])
    assert metrics["best_val_top1"] == pytest.approx(log.val_top1.max())

    # test evaluated with the best checkpoint: re-evaluating best/ reproduces metrics.json
    model, config = load_classifier(out / "best")
    assert config["epoch"] == metrics["best_epoch"] and config["class_names"] == names
    assert (config["arch"], config["num_classes"], config["resize"], config["crop"]) == ("resnet50", 10, 40, 32)
    loader = torch.utils.data.DataLoader(ManifestDataset(test, build_transforms(40, 32, train=False)), batch_size=16)
    _, y_true, y_pred = evaluate(model, loader, torch.nn.CrossEntropyLoss(), torch.device("cpu"))
    assert classification_metrics(y_true, y_pred, 10)["confusion"] == metrics["confusion"]


def test_resume_matches_a_straight_run(straight_run, digits_split, tmp_path):
    out, metrics = straight_run
    args = (digits_split["train"], digits_split["val"], digits_split["test"], tmp_path)
    assert train_classifier(*args, class_names=class_names(digits_split), stop_after_epoch=1, **TINY) is None
    assert not (tmp_path / "metrics.json").exists()
    assert pd.read_csv(tmp_path / "log.csv").epoch.tolist() == [1]
    assert json.loads((tmp_path / "last" / "state.json").read_text())["epoch"] == 1
    # as if killed right after last/ was written: best/ and log.csv not yet updated
    shutil.rmtree(tmp_path / "best")
    (tmp_path / "log.csv").unlink()

    resumed = train_classifier(*args, class_names=class_names(digits_split), **TINY)
    drop = {"wall_time_s"}
    assert {k: v for k, v in resumed.items() if k not in drop} == {k: v for k, v in metrics.items() if k not in drop}
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "log.csv"), pd.read_csv(out / "log.csv"))
    for name in ("best/model.safetensors", "last/model.safetensors", "last/optimizer.safetensors"):
        a, b = load_file(out / name), load_file(tmp_path / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after resume"
    states = [json.loads((d / "last" / "state.json").read_text()) for d in (out, tmp_path)]
    assert [{k: v for k, v in s.items() if k != "wall_time_s"} for s in states][0] == \
        [{k: v for k, v in s.items() if k != "wall_time_s"} for s in states][1]


def test_checkpoint_last_tests_the_last_epochs_weights(straight_run, digits_split, tmp_path):
    """checkpoint 'last' changes only which weights test sees: the finished run, called again with it,
    resumes with nothing left to train and evaluates last/ (the last epoch's weights) instead of best/."""
    out, metrics = straight_run
    shutil.copytree(out, tmp_path / "run")
    args = (digits_split["train"], digits_split["val"], digits_split["test"], tmp_path / "run")
    last = train_classifier(*args, class_names=class_names(digits_split), checkpoint="last", **TINY)
    assert (last["checkpoint"], last["tested_epoch"]) == ("last", 2) and "checkpoint" not in metrics
    assert (last["best_epoch"], last["params"]) == (metrics["best_epoch"], metrics["params"])
    model, _ = load_classifier(out / "best")
    model.load_state_dict(load_file(out / "last" / "model.safetensors"))
    loader = torch.utils.data.DataLoader(ManifestDataset(digits_split["test"], build_transforms(40, 32, train=False)),
                                         batch_size=16)
    _, y_true, y_pred = evaluate(model, loader, torch.nn.CrossEntropyLoss(), torch.device("cpu"))
    assert classification_metrics(y_true, y_pred, 10)["confusion"] == last["confusion"]
    with pytest.raises(ValueError, match="checkpoint 'final'"):
        train_classifier(*args, class_names=class_names(digits_split), checkpoint="final", **TINY)


def test_a_checkpoint_of_another_run_is_not_resumed(straight_run, digits_split, tmp_path, caplog):
    """The trainers' one resume policy (sdi.training.checkpoints.resumable): last/ of other data or
    hyperparameters is named in a warning and not resumed; the run starts from epoch 1 and replaces it."""
    out, metrics = straight_run
    shutil.copytree(out / "last", tmp_path / "last")
    args = (digits_split["train"], digits_split["val"], digits_split["test"], tmp_path)
    with caplog.at_level(logging.WARNING, logger="sdi.training.checkpoints"):
        other = train_classifier(*args, class_names=class_names(digits_split), **{**TINY, "lr": 0.02})
    assert "was written for another run" in caplog.text and str(tmp_path / "last") in caplog.text
    assert pd.read_csv(tmp_path / "log.csv").epoch.tolist() == [1, 2] and other["params"]["lr"] == 0.02
    assert json.loads((tmp_path / "last" / "state.json").read_text())["params"]["lr"] == 0.02


def test_synthetic_rows_are_counted_and_used(digits_split, tmp_path):
    train, val, test = digits_split["train"], digits_split["val"], digits_split["test"]
    # stand-in "generated" images: copies of test rows relabelled as the class they were made for
    synthetic = test.groupby("label").head(2)[["path", "label"]]
    run = {**TINY, "epochs": 1, "augment": "gridmask"}
    metrics = train_classifier(train, val, test, tmp_path / "ok", synthetic=synthetic, **run)
    assert metrics["n_train_synthetic"] == len(synthetic) == 20
    assert metrics["n_train_real"] == len(train)

    # the synthetic images are really read during training: a missing one fails the run
    broken = pd.concat([synthetic, pd.DataFrame({"path": [str(tmp_path / "gone.png")], "label": [3]})])
    with pytest.raises(FileNotFoundError, match="gone.png"):
        train_classifier(train, val, test, tmp_path / "broken", synthetic=broken, **run)


def test_train_set_parquet_is_the_exact_training_set(digits_split, tmp_path):
    """multiples: 2 from an unfiltered pool trains on n_c real + 2 n_c synthetic images per class,
    and train_set.parquet lists exactly those rows."""
    from sdi.pipeline.training_set import build_training_set, steps_per_epoch

    train, val, test = digits_split["train"], digits_split["val"], digits_split["test"]
    # stand-in generated images (3 per class, fewer than 2 n_c: drawn with replacement)
    pool = test.groupby("label").head(3)[["path", "label"]]
    table = build_training_set(train, synthetic=pool, multiples=2, variant="gauss-g2.0", seed=0)
    metrics = train_classifier(table, val, test, tmp_path, **{**TINY, "epochs": 1})

    written = pd.read_parquet(tmp_path / "train_set.parquet")
    assert list(written.columns) == ["path", "label", "source", "variant"]
    n_c = train.groupby("label").size()
    per_class = written.groupby(["label", "source"]).size().unstack(fill_value=0)
    assert per_class["real"].to_dict() == n_c.to_dict()
    assert per_class["synthetic"].to_dict() == (2 * n_c).to_dict()
    assert set(written[written.source == "synthetic"].path) <= set(pool.path)
    assert set(written.variant.dropna()) == {"gauss-g2.0"} and written[written.source == "real"].variant.isna().all()
    assert (metrics["n_real"], metrics["n_synthetic"], metrics["n_real_copies"]) == (len(train), 2 * len(train), 0)
    assert metrics["n_train"] == len(written) == 3 * len(train)
    assert metrics["steps_per_epoch"] == steps_per_epoch(len(written), TINY["batch_size"])
    assert metrics["steps_per_epoch"] == -(-3 * len(train) // TINY["batch_size"])  # ceil: 120 rows / 16


def test_bad_manifest_names_the_problem(digits_split, tmp_path):
    bad = digits_split["train"].assign(label=digits_split["train"].label + 5)
    with pytest.raises(ValueError, match="train manifest: labels span"):
        train_classifier(bad, digits_split["val"], digits_split["test"], tmp_path, **TINY)


def test_arch_selects_any_torchvision_model(digits_split, tmp_path):
    """classifier.arch: another torchvision model trains, is recorded in best/config.json and
    loads back as that model; the planning list is torchvision's own."""
    import torchvision

    from sdi.config.validation import CLASSIFIER_ARCHS
    from sdi.training.checkpoints import load_classifier

    assert sorted(CLASSIFIER_ARCHS) == sorted(torchvision.models.list_models(module=torchvision.models))
    train, val, test = digits_split["train"], digits_split["val"], digits_split["test"]
    metrics = train_classifier(train, val, test, tmp_path / "run", **{**TINY, "epochs": 1}, arch="resnet18")
    assert metrics["n_train_real"] == len(train)
    model, config = load_classifier(tmp_path / "run" / "best")
    assert config["arch"] == "resnet18" and isinstance(model, torchvision.models.ResNet)
    assert len(model.layer1) == 2 and model.fc.out_features == 10  # resnet18's blocks, not resnet50's 3


def test_unknown_arch_fails_at_planning():
    import yaml

    from sdi.config.validation import ConfigError, validate_config

    from helpers import REPO

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["classifier"]["arch"] = "resnet5O"
    with pytest.raises(ConfigError, match=r"config\.classifier\.arch: 'resnet5O' is not a torchvision .*resnet50"):
        validate_config(config, REPO / "config" / "schema.yaml")
