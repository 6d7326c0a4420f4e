from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sdi.io.schemas import SAMPLE_COLUMNS
from sdi.pipeline.sampling import (
    SamplingError,
    class_sampler_seed,
    generation_seed,
    n_generated,
    read_samples,
    sample_class_embeddings,
    sample_gmm,
    stack_vectors,
    write_samples,
)

REPO = Path(__file__).resolve().parents[1]

# Sampling must never warn (rank-deficient covariance, tiny classes, mixtures).
pytestmark = pytest.mark.filterwarnings("error")


def embeddings_table(class_data: dict[int, np.ndarray]) -> pd.DataFrame:
    """The embedding stage's table: one row per image, vectors as float32 arrays."""
    rows = []
    for label, x in class_data.items():
        for i, v in enumerate(np.asarray(x, np.float32)):
            rows.append({"image_id": f"img{label}_{i:03d}", "label": label, "class_name": f"class {label}",
                         "clip_embedding": np.zeros(4, np.float32), "embedding": v})
    return pd.DataFrame(rows)


def low_rank_class(rng, n_c: int, d: int, rank: int, offset: float = 0.0) -> np.ndarray:
    return offset + rng.normal(size=(n_c, rank)) @ rng.normal(size=(rank, d)) + rng.normal(size=d)


def test_gaussian_samples_match_the_class_statistics():
    rng = np.random.default_rng(0)
    data = {0: low_rank_class(rng, 6, 16, 3), 1: low_rank_class(rng, 9, 16, 9, offset=5.0)}
    samples = sample_class_embeddings(embeddings_table(data), method="gauss", expansion=2500, seed=0, n_shards=1)
    for label, x in data.items():
        draws = stack_vectors(samples[samples.label == label].vector).astype(np.float64)
        x = x.astype(np.float32).astype(np.float64)
        cov = np.cov(x, rowvar=False)
        scale = np.sqrt(np.trace(cov) / len(cov))
        assert np.abs(draws.mean(0) - x.mean(0)).max() < 0.1 * scale
        rel = np.linalg.norm(np.cov(draws, rowvar=False) - cov) / np.linalg.norm(cov)
        assert rel < 0.08, rel


def test_counts_are_expansion_times_class_size_rounded_half_up():
    rng = np.random.default_rng(1)
    sizes = {0: 1, 1: 2, 2: 3, 3: 5, 4: 30}
    table = embeddings_table({c: rng.normal(size=(n, 8)) for c, n in sizes.items()})
    samples = sample_class_embeddings(table, method="gauss", expansion=1.5, seed=0, n_shards=2)
    counts = samples.groupby("label").size().to_dict()
    assert counts == {0: 2, 1: 3, 2: 5, 3: 8, 4: 45}
    assert counts == {c: n_generated(n, 1.5) for c, n in sizes.items()}
    assert n_generated(30, 40) == 1200 and n_generated(3, 0) == 0
    for _, group in samples.groupby("label"):
        assert group.sample_index.tolist() == list(range(len(group)))
    assert samples.sample_id.is_unique
    assert list(samples.columns) == SAMPLE_COLUMNS


def test_seeds_per_class_reproducible_and_seed_dependent():
    rng = np.random.default_rng(2)
    table = embeddings_table({c: rng.normal(size=(4, 12)) for c in range(5)})
    assert len({class_sampler_seed(7, c) for c in range(5)}) == 5
    a = sample_class_embeddings(table, method="gauss", expansion=3, seed=7, n_shards=3)
    b = sample_class_embeddings(table.sample(frac=1.0, random_state=0), method="gauss", expansion=3, seed=7,
                                n_shards=3)
    c = sample_class_embeddings(table, method="gauss", expansion=3, seed=8, n_shards=3)
    pd.testing.assert_frame_equal(a.drop(columns="vector"), b.drop(columns="vector"))
    np.testing.assert_array_equal(stack_vectors(a.vector), stack_vectors(b.vector))
    assert not np.allclose(stack_vectors(a.vector), stack_vectors(c.vector))
    assert not set(a.seed) & set(c.seed)
    # generation seeds: unique, and a pure function of (run seed, label, k)
    assert a.seed.is_unique and (a.seed >= 0).all()
    assert all(s == generation_seed(7, lab, k) for s, lab, k in zip(a.seed, a.label, a.sample_index, strict=True))
    more = sample_class_embeddings(table, method="gauss", expansion=6, seed=7, n_shards=3)
    assert set(a.sample_id) < set(more.sample_id)
    assert more.set_index("sample_id").seed.loc[a.sample_id].tolist() == a.seed.tolist()
    # image_seed changes the generation seeds only, not the vectors
    d = sample_class_embeddings(table, method="gauss", expansion=3, seed=7, n_shards=3, image_seed=1)
    np.testing.assert_array_equal(stack_vectors(d.vector), stack_vectors(a.vector))
    assert d.seed.tolist() == [generation_seed(1, lab, k) for lab, k in zip(d.label, d.sample_index, strict=True)]


def test_per_class_seed_false_reproduces_the_reference_constant_seed():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 10))
    table = embeddings_table({0: x, 1: x + 100.0})  # same spread, shifted mean
    const = sample_class_embeddings(table, method="gauss", expansion=4, seed=3, n_shards=1, per_class_seed=False)
    assert class_sampler_seed(3, 0, per_class_seed=False) == class_sampler_seed(7, 9, per_class_seed=False) == 42
    same = sample_class_embeddings(table, method="gauss", expansion=4, seed=4, n_shards=1, per_class_seed=False)
    np.testing.assert_array_equal(stack_vectors(same.vector), stack_vectors(const.vector))
    v0, v1 = stack_vectors(const[const.label == 0].vector), stack_vectors(const[const.label == 1].vector)
    # the same noise in every class (up to the cov_eps null-space jitter, ~1e-3)
    np.testing.assert_allclose(v1 - v0, 100.0, atol=0.02)
    own = sample_class_embeddings(table, method="gauss", expansion=4, seed=3, n_shards=1)
    w0, w1 = stack_vectors(own[own.label == 0].vector), stack_vectors(own[own.label == 1].vector)
    assert np.abs(w1 - w0 - 100.0).max() > 0.1


def test_rank_deficient_class_gives_finite_samples_in_the_class_span():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 64)) * 3.0
    samples = sample_class_embeddings(embeddings_table({0: x}), method="gauss", expansion=200, seed=0, n_shards=1)
    draws = stack_vectors(samples.vector).astype(np.float64)
    assert draws.shape == (600, 64) and np.isfinite(draws).all()
    # n_c = 3: the covariance has rank 2, so draws stay in the plane of the 3 points (+ cov_eps jitter)
    centred = x - x.mean(0)
    basis = np.linalg.svd(centred, full_matrices=False)[2][:2]
    off_plane = (draws - x.mean(0)) - (draws - x.mean(0)) @ basis.T @ basis
    assert np.abs(off_plane).max() < 0.02
    assert np.abs((draws - x.mean(0)) @ basis.T).std() > 1.0


@pytest.mark.parametrize("method", ["gauss", "gmm"])
def test_one_image_class_gives_jittered_copies(method):
    x = np.random.default_rng(5).normal(size=(1, 32))
    samples = sample_class_embeddings(embeddings_table({3: x}), method=method, n_components=2, expansion=40,
                                      seed=0, n_shards=4, cov_eps=1e-6)
    draws = stack_vectors(samples.vector).astype(np.float64)
    assert draws.shape == (40, 32) and np.isfinite(draws).all()
    dev = draws - x.astype(np.float32)
    assert np.abs(dev).max() < 6e-3  # sqrt(cov_eps) = 1e-3 per dimension
    assert dev.std() > 1e-4  # jittered, not exact copies


def test_gmm_runs_and_clamps_components_to_class_size():
    rng = np.random.default_rng(6)
    blobs = np.concatenate([rng.normal(size=(10, 8)) * 0.1, rng.normal(size=(10, 8)) * 0.1 + 10.0])
    pair = rng.normal(size=(2, 8))
    table = embeddings_table({0: blobs, 1: pair})
    samples = sample_class_embeddings(table, method="gmm", n_components=5, expansion=20, seed=0, n_shards=2)
    assert samples.groupby("label").size().to_dict() == {0: 400, 1: 40}
    draws = stack_vectors(samples[samples.label == 0].vector)
    assert np.isfinite(draws).all()
    near = np.minimum(np.abs(draws.mean(1)), np.abs(draws.mean(1) - 10.0))
    assert (near < 1.0).all()  # every draw comes from one of the two modes, none from between
    assert 0.2 < (draws.mean(1) > 5).mean() < 0.8
    # n_c = 2 < 5 components: clamped to 2 components, one per point, each with cov = reg_covar * I
    draws = stack_vectors(samples[samples.label == 1].vector)
    dist = np.linalg.norm(draws[:, None, :] - pair[None].astype(np.float32), axis=-1).min(1)
    assert (dist < 0.02).all()
    direct = sample_gmm(pair, 50, 5, class_seed=0)
    assert direct.shape == (50, 8) and np.isfinite(direct).all()
    again = sample_class_embeddings(table, method="gmm", n_components=5, expansion=20, seed=0, n_shards=2)
    np.testing.assert_array_equal(stack_vectors(again.vector), stack_vectors(samples.vector))


@pytest.mark.parametrize("n_shards", [1, 2, 3, 7, 64])
def test_shards_cover_every_sample_once_and_are_balanced(tmp_path, n_shards):
    rng = np.random.default_rng(7)
    table = embeddings_table({c: rng.normal(size=(n, 6)) for c, n in enumerate([1, 4, 5])})
    samples = sample_class_embeddings(table, method="gauss", expansion=4.5, seed=0, n_shards=n_shards)
    assert len(samples) == 5 + 18 + 23  # 4.5 x (1, 4, 5), rounded half up
    sizes = samples.shard.value_counts().reindex(range(n_shards), fill_value=0)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == len(samples)
    assert samples.shard.between(0, n_shards - 1).all()
    path = tmp_path / "samples.parquet"
    write_samples(samples, path)
    full = read_samples(path)
    seen = []
    for s in range(n_shards):
        shard = read_samples(path, shard=s)
        pd.testing.assert_frame_equal(shard.drop(columns="vector"),
                                      full.iloc[s::n_shards].reset_index(drop=True).drop(columns="vector"))
        seen += shard.sample_id.tolist()
    assert sorted(seen) == sorted(samples.sample_id) and len(seen) == len(set(seen))


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    samples = sample_class_embeddings(embeddings_table({0: rng.normal(size=(3, 24)), 5: rng.normal(size=(2, 24))}),
                                      method="gauss", expansion=2, seed=1, n_shards=2)
    path = tmp_path / "out" / "samples.parquet"
    write_samples(samples, path)
    assert pq.read_schema(path).field("vector").type == pa.list_(pa.float32(), 24)
    assert [p.name for p in path.parent.iterdir()] == ["samples.parquet"]  # no temp file left
    back = read_samples(path)
    pd.testing.assert_frame_equal(back.drop(columns="vector"), samples.drop(columns="vector"), check_dtype=False)
    np.testing.assert_array_equal(stack_vectors(back.vector), stack_vectors(samples.vector))
    assert back.sample_id.iloc[0] == "0000-000000" and back.sample_id.iloc[-1] == "0005-000003"


def test_text_method_has_no_vectors(tmp_path):
    table = embeddings_table({0: np.zeros((3, 4)), 1: np.zeros((1, 4))}).drop(columns=["embedding"])
    samples = sample_class_embeddings(table, method="text", expansion=2, seed=0, n_shards=2)
    assert len(samples) == 8 and samples.vector.isna().all()
    write_samples(samples, tmp_path / "s.parquet")
    back = read_samples(tmp_path / "s.parquet")
    assert back.vector.isna().all() and back.seed.tolist() == samples.seed.tolist()
    with pytest.raises(SamplingError, match="null"):
        stack_vectors(back.vector)


def test_bad_inputs_name_the_problem():
    table = embeddings_table({0: np.zeros((2, 4))})
    with pytest.raises(SamplingError, match="method"):
        sample_class_embeddings(table, method="vae", expansion=1, seed=0, n_shards=1)
    with pytest.raises(SamplingError, match="embedding"):
        sample_class_embeddings(table.drop(columns="embedding"), method="gauss", expansion=1, seed=0, n_shards=1)
    with pytest.raises(SamplingError, match="n_shards"):
        sample_class_embeddings(table, method="gauss", expansion=1, seed=0, n_shards=0)
