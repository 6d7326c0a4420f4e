"""The training set of a classifier run (docs/method.md section 8): synthetic draws, real copies,
keep-ratio re-selection, steps per epoch, and the paper configs' CUB numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from sdi.config.experiments import experiment_errors, methods
from sdi.config.planning import ConfigError, check_config
from sdi.config.settings import merged_config_files
from sdi.pipeline.filtering import select_top
from sdi.pipeline.training_set import build_training_set, draw_per_class, select_kept, steps_per_epoch, synthetic_pool

REPO = Path(__file__).resolve().parents[1]


def real_manifest(counts: dict[int, int]) -> pd.DataFrame:
    rows = [{"path": f"real/{c}/{i}.png", "label": c} for c, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows)


def generated_manifest(counts: dict[int, int], seed: int = 0) -> pd.DataFrame:
    """A filter manifest: sample_id, path, label, score, rank (1 = best), kept (top half)."""
    rng = np.random.default_rng(seed)
    rows = [{"sample_id": f"{c:04d}-{i:06d}", "path": f"gen/{c}/{i}.png", "label": c, "score": float(rng.normal())}
            for c, n in counts.items() for i in range(n)]
    table = pd.DataFrame(rows)
    table["rank"] = table.groupby("label")["score"].rank(ascending=False, method="first").astype(int)
    table["kept"] = select_top(table, 0.5)
    return table


def test_multiples_draw_per_class_without_replacement():
    real = real_manifest({0: 3, 1: 5})
    pool = generated_manifest({0: 40, 1: 40})
    drawn = draw_per_class(pool, real.groupby("label").size(), 2, seed=0)
    assert drawn.groupby("label").size().to_dict() == {0: 6, 1: 10}
    assert drawn.path.is_unique  # without replacement: the pool is large enough
    # seeded: the same draw again, another seed another draw; the pool's row order does not matter
    shuffled = pool.sample(frac=1.0, random_state=1)
    assert draw_per_class(shuffled, real.groupby("label").size(), 2, seed=0).path.tolist() == drawn.path.tolist()
    assert draw_per_class(pool, real.groupby("label").size(), 2, seed=1).path.tolist() != drawn.path.tolist()


def test_multiples_draw_with_replacement_only_where_the_pool_is_smaller():
    real = real_manifest({0: 4, 1: 4})
    pool = generated_manifest({0: 3, 1: 20})
    drawn = draw_per_class(pool, real.groupby("label").size(), 2, seed=0)
    assert drawn.groupby("label").size().to_dict() == {0: 8, 1: 8}
    assert drawn[drawn.label == 0].path.nunique() <= 3  # 8 draws from 3 images repeat some
    assert drawn[drawn.label == 1].path.is_unique


def test_real_copies_repeat_the_real_set_and_add_no_synthetic():
    real = real_manifest({0: 3, 1: 5, 2: 1})
    train = build_training_set(real, real_copies=3)
    per_class = train.groupby("label").size().to_dict()
    assert per_class == {0: 12, 1: 20, 2: 4}  # 4 x n_c
    assert train.source.value_counts().to_dict() == {"real_copy": 27, "real": 9}
    assert train.variant.isna().all()
    with pytest.raises(ValueError, match="real_copies"):
        build_training_set(real, real_copies=-1)


def test_pool_generated_uses_dropped_images_and_pool_kept_does_not():
    real = real_manifest({0: 2, 1: 2})
    generated = generated_manifest({0: 8, 1: 8})
    every = build_training_set(real, synthetic=synthetic_pool(generated, "generated"), multiples=4,
                               variant="gauss-g2.0")
    kept = build_training_set(real, synthetic=synthetic_pool(generated, "kept"), multiples=2, variant="gauss-g2.0")
    synthetic = every[every.source == "synthetic"]
    assert len(synthetic) == 16 and set(synthetic.variant) == {"gauss-g2.0"}
    assert set(synthetic.path) == set(generated.path)  # 4 x 2 per class of a pool of 8: all of it
    kept_paths = set(generated.path[generated.kept])
    assert set(kept[kept.source == "synthetic"].path) == kept_paths


@pytest.mark.parametrize("ratio", [0.667, 0.5, 0.333, 0.25])
def test_keep_ratio_reselection_is_the_filter_selection_at_that_ratio(ratio):
    generated = generated_manifest({0: 12, 1: 9, 2: 3}, seed=3)
    reselected = select_kept(generated, ratio)
    at_ratio = generated[select_top(generated, ratio)]
    assert sorted(reselected.path) == sorted(at_ratio.path)
    assert reselected.groupby("label").size().reindex([0, 1, 2], fill_value=0).tolist() == [
        int(12 * ratio), int(9 * ratio), int(3 * ratio)]


@pytest.mark.parametrize("n", [1, 15, 16, 17, 33, 100])
@pytest.mark.parametrize("batch", [4, 16])
def test_steps_per_epoch_is_what_the_loaders_give(n, batch):
    data = torch.utils.data.TensorDataset(torch.arange(n))
    # one process: the classifier drops only a last batch of a single image
    single = torch.utils.data.DataLoader(data, batch_size=batch, drop_last=n % batch == 1 < n)
    assert steps_per_epoch(n, batch, 1) == len(single)
    for world in (2, 4):
        sampler = torch.utils.data.DistributedSampler(data, num_replicas=world, rank=world - 1, shuffle=True)
        loader = torch.utils.data.DataLoader(data, sampler=sampler, batch_size=batch // world)
        assert steps_per_epoch(n, batch, world) == len(loader)


def test_paper_cub_config_gives_the_reference_steps_per_epoch():
    """docs/method.md section 8: on CUB the reference ran ~12 (real), ~246 (RandAugment) and ~70 (SDI 5x)
    steps per epoch. CUB-sized manifests: 5,994 training images in 200 classes, 40x generated."""
    config = merged_config_files(REPO / "config" / "config.yaml", REPO / "config" / "paper" / "cub.yaml")
    assert config["split"]["val_source"] == "test"  # every training image trains
    assert experiment_errors(config) == []
    counts = {c: 30 if c < 194 else 29 for c in range(200)}
    assert sum(counts.values()) == 5994
    real = real_manifest(counts)
    generated = generated_manifest({c: 40 * n for c, n in counts.items()})
    batch, world = config["classifier"]["batch_size"], config["resources"]["train_classifier"]["gpus"]
    assert (batch, world) == (512, 4)

    steps = {}
    for name in ("real", "randaugment", "sdi"):
        m = methods(config)[name]
        pool = None if m["variant"] is None else synthetic_pool(generated, m["pool"], m["keep_ratio"])
        train = build_training_set(real, synthetic=pool, multiples=m["multiples"], real_copies=m["real_copies"],
                                   variant=m["variant"], seed=m["draw_seed"])
        steps[name] = steps_per_epoch(len(train), batch, world)
        assert train.groupby("label").size().to_dict() == {
            c: n * (1 + m["real_copies"] + (m["multiples"] or 0)) for c, n in counts.items()}
    per_gpu = batch // world
    assert steps == {"real": math.ceil(math.ceil(5994 / 4) / per_gpu),
                     "randaugment": math.ceil(math.ceil(21 * 5994 / 4) / per_gpu),
                     "sdi": math.ceil(math.ceil(6 * 5994 / 4) / per_gpu)}
    assert steps == {"real": 12, "randaugment": 246, "sdi": 71}  # 11.7, 245.9, 70.2 batches of 512


def test_every_paper_config_has_the_table_rows():
    for path in sorted((REPO / "config" / "paper").glob("*.yaml")):
        config = merged_config_files(REPO / "config" / "config.yaml", path)
        assert experiment_errors(config) == [], path
        resolved = methods(config)
        assert {"real", "randaugment", "cutout", "gridmask", "sd-text", "sdi"} <= set(resolved), path
        for baseline in ("randaugment", "cutout", "gridmask"):
            assert (resolved[baseline]["real_copies"], resolved[baseline]["augment_at"]) == (20, "raw"), path
        assert config["classifier"]["batch_size"] == 512 and config["classifier"]["epochs"] == 100, path
        assert config["filter"]["score"] == "reference" and config["split"]["val_source"] == "test", path
        enabled = [d for d, e in config["datasets"].items() if e.get("root")]
        assert enabled == [] and path.stem in config["datasets"], path  # roots are the user's to set
        keep = sorted(m["keep_ratio"] for m in resolved.values() if m["keep_ratio"] is not None)
        assert keep == [0.25, 0.333, 0.5, 0.667], path


BAD_METHODS = [
    ({"sdi": {"variant": "gauss-g2.0", "multiples": 0}}, "config.experiments.methods.sdi.multiples"),
    ({"sdi": {"variant": "gauss-g2.0", "multiples": -2}}, "config.experiments.methods.sdi.multiples"),
    ({"aug": {"augment": "cutout", "real_copies": -1}}, "config.experiments.methods.aug.real_copies"),
    ({"real": {"pool": "kept"}}, "config.experiments.methods.real.pool"),
    ({"real": {"multiples": 2}}, "config.experiments.methods.real.multiples"),
    ({"plain": {"augment_at": "raw"}}, "config.experiments.methods.plain.augment_at"),
    ({"sdi": {"variant": "gauss-g2.0", "pool": "generated", "keep_ratio": 0.25}},
     "config.experiments.methods.sdi.keep_ratio"),
]


@pytest.mark.parametrize(("entries", "key"), BAD_METHODS)
def test_bad_method_entries_name_the_method_key(entries, key):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["experiments"]["methods"] = entries
    with pytest.raises(ConfigError) as error:  # the schema's checks, then the matrix's
        check_config(config, REPO / "config" / "schema.yaml")
    problems = [line.strip() for line in str(error.value).splitlines()[1:]]
    assert len(problems) == 1 and problems[0].startswith(key), problems
