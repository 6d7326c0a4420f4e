"""Generation (docs/method.md section 5) on the tiny SD model: 64x64 images, 4 DDIM steps, fp32 on CPU.

Batch invariance is exact in distribution (each image has its own seeded latent and
generator) but not bit-exact: a different batch composition changes float summation order
in the UNet/VAE (about 1e-6). The stated tolerance for images generated in different
batches is: at most one 8-bit level per channel, on under 0.1% of the values (measured: 2 of 98,304
values, batch 1 vs 3 vs 8, at 4, 10 and 50 steps). Runs whose
batches coincide (same sample, two shards cut at batch boundaries, resume of a whole
batch, exact regeneration) are compared byte for byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sdi import NEGATIVE_PROMPT, PROMPT
from sdi.io.artifacts import write_parquet
from sdi.io.schemas import SHARD_COLUMNS
from sdi.models.generator import (
    AUTO_BATCH_CPU,
    GenerationError,
    GenerationSettings,
    ImageGenerator,
    auto_batch_size,
    to_pil,
)
from sdi.models.schedulers import METHOD_DDIM, SchedulerError, make_scheduler
from sdi.pipeline.generation import generate_shard, write_manifest
from sdi.pipeline.provenance import read_provenance, vector_sha256
from sdi.pipeline.regenerate import regenerate_image

from helpers import sha256

REPO = Path(__file__).resolve().parents[1]
D_CROSS = 32
FAST = GenerationSettings(steps=4, guidance_scale=2.0)
CLASSES = ["digit zero", "digit one", "digit two"]


def make_samples(n: int = 8, *, vectors: bool = True, shards: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = i % len(CLASSES)
        rows.append({"sample_id": f"c{label:03d}_s{i:05d}", "label": label, "class_name": CLASSES[label],
                     "sample_index": i // len(CLASSES), "seed": 1000 + 7 * i, "shard": i % shards,
                     "vector": rng.normal(size=D_CROSS).astype(np.float32) if vectors else None})
    return pd.DataFrame(rows)


def pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def assert_within_batch_tolerance(a, b):
    diff = np.abs(pixels(a) - pixels(b))
    assert diff.max() <= 1, f"{a} vs {b}: max difference {diff.max()} levels"
    assert (diff > 0).mean() < 0.001, f"{a} vs {b}: {(diff > 0).mean():.2%} of values differ"


@pytest.fixture(scope="module")
def ddim(tiny_models) -> ImageGenerator:
    """One pipeline for the module, as one per job in the workflow."""
    return ImageGenerator.from_folders(tiny_models["sd"], scheduler="ddim", dtype="fp32", device="cpu")


@pytest.fixture(scope="module")
def reference(ddim, tmp_path_factory):
    """8 SEI samples generated in batches of 3 (3 + 3 + 2)."""
    samples = make_samples(8)
    out = tmp_path_factory.mktemp("reference")
    manifest = generate_shard(samples, ddim, out, FAST, batch_size=3)
    return samples, manifest, out


def test_manifest_has_provenance_and_layout(reference, tiny_models, tmp_path):
    samples, manifest, out = reference
    assert list(manifest.columns) == SHARD_COLUMNS
    assert manifest.sample_id.tolist() == samples.sample_id.tolist()
    row = manifest.iloc[4]
    assert row.path == str(out / "images" / "0001_digit_one" / "c001_s00004.png")
    assert Image.open(row.path).size == (64, 64)
    assert (row["mode"], row.prompt, row.negative_prompt) == ("sei", PROMPT, NEGATIVE_PROMPT)
    assert row.vector_sha256 == vector_sha256(samples.vector[4]) and len(row.vector_sha256) == 64
    assert (row.scheduler, row.steps, row.guidance_scale, row.eta) == ("DDIMScheduler", 4, 2.0, 0.0)
    assert (row["dtype"], row.device, row.height, row.width, row.seed) == ("fp32", "cpu", 64, 64, 1028)
    assert len(row.model_id) == 16
    config = json.loads(row.scheduler_config)
    assert {k: config[k] for k in METHOD_DDIM} == METHOD_DDIM
    assert [list(b) for b in manifest.batch] == [["c000_s00000", "c001_s00001", "c002_s00002"]] * 3 + \
        [["c000_s00003", "c001_s00004", "c002_s00005"]] * 3 + [["c000_s00006", "c001_s00007"]] * 2
    # Each PNG describes itself: its provenance is its manifest row.
    stored = read_provenance(row.path)
    assert stored == {k: (list(v) if k == "batch" else v) for k, v in row.items()
                      if k not in ("path", "shard", "sha256", "file_size")}
    assert (row.sha256, row.file_size) == (sha256(row.path),
                                           Path(row.path).stat().st_size)
    # The manifest round-trips through Parquet.
    write_manifest(manifest, tmp_path / "m.parquet")
    back = pd.read_parquet(tmp_path / "m.parquet")
    assert back.drop(columns="batch").equals(manifest.drop(columns="batch"))
    # Different samples give different images (the test below would pass trivially otherwise).
    assert np.abs(pixels(manifest.path[0]) - pixels(manifest.path[3])).mean() > 5


def test_same_samples_give_identical_bytes(reference, ddim, tmp_path):
    samples, manifest, _ = reference
    again = generate_shard(samples, ddim, tmp_path, FAST, batch_size=3)
    for a, b in zip(manifest.path, again.path, strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()


def test_batch_size_does_not_change_images(reference, ddim, tmp_path):
    samples, manifest, _ = reference
    for bs in (1, 8):
        other = generate_shard(samples, ddim, tmp_path / f"bs{bs}", FAST, batch_size=bs)
        assert {len(b) for b in other.batch} == {min(bs, 8)}
        for a, b in zip(manifest.path, other.path, strict=True):
            assert_within_batch_tolerance(a, b)


def test_two_shards_equal_one(reference, ddim, tmp_path):
    samples, manifest, _ = reference
    parts = [samples.iloc[:3], samples.iloc[3:]]  # cut at a batch boundary of the reference
    together = pd.concat([generate_shard(p, ddim, tmp_path, FAST, batch_size=3)
                          for p in parts], ignore_index=True)
    assert together.drop(columns="path").astype(str).equals(manifest.drop(columns="path").astype(str))
    for a, b in zip(manifest.path, together.path, strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()


def test_resume_regenerates_only_missing_and_corrupt(ddim, tmp_path):
    samples = make_samples(6)
    first = generate_shard(samples, ddim, tmp_path, FAST, batch_size=2)
    paths = [Path(p) for p in first.path]
    original = [p.read_bytes() for p in paths]
    paths[2].unlink()
    paths[3].write_bytes(original[3][: len(original[3]) // 2])  # truncated: must not be trusted
    past = 1_000_000_000
    for p in paths[:2] + paths[4:]:
        os.utime(p, ns=(past, past))
    second = generate_shard(samples, ddim, tmp_path, FAST, batch_size=2)
    assert [p.stat().st_mtime_ns == past for p in paths] == [True, True, False, False, True, True]
    assert [p.read_bytes() for p in paths] == original  # 2 and 3 formed one batch in both runs
    assert second.astype(str).equals(first.astype(str))

    # Changed settings: the stored provenance no longer matches, every image is redone.
    third = generate_shard(samples, ddim, tmp_path, replace(FAST, steps=3), batch_size=2)
    assert all(p.stat().st_mtime_ns != past for p in paths)
    assert set(third.steps) == {3} and all(read_provenance(p)["steps"] == 3 for p in paths)


def test_text_mode(reference, ddim, tmp_path):
    ref_samples, ref_manifest, _ = reference
    samples = make_samples(3, vectors=False)
    manifest = generate_shard(samples, ddim, tmp_path, replace(FAST, mode="text"), batch_size=3)
    assert manifest.prompt.tolist() == [f"a photo of a {c}" for c in CLASSES]
    assert set(manifest["mode"]) == {"text"} and set(manifest.vector_sha256) == {""}
    # Same seeds as the SEI reference, other conditioning: other images.
    assert np.abs(pixels(manifest.path[0]) - pixels(ref_manifest.path[0])).mean() > 1
    # Regenerating a text image needs no vectors (the manifest can serve as the samples table).
    out = regenerate_image(manifest.iloc[1], manifest, ddim, tmp_path / "again.png")
    assert out.read_bytes() == Path(manifest.path[1]).read_bytes()


def test_regenerate_one_image_from_manifest(reference, ddim, tmp_path):
    samples, manifest, _ = reference
    row = manifest.iloc[4]
    out = regenerate_image(row, samples, ddim, tmp_path / "exact.png")
    assert out.read_bytes() == Path(row.path).read_bytes()
    # Alone, from its vector only: within the batch tolerance.
    alone = regenerate_image(row, samples.vector[4], ddim, tmp_path / "alone.png", exact=False)
    assert_within_batch_tolerance(alone, row.path)
    with pytest.raises(GenerationError, match="batch of 3"):
        regenerate_image(row, samples.vector[4], ddim, tmp_path / "x.png")
    with pytest.raises(GenerationError, match="seed or vector"):
        regenerate_image(row, samples.assign(seed=samples.seed + 1), ddim, tmp_path / "x.png")


def test_dpm_solver_selectable(reference, ddim, tiny_models, tmp_path):
    samples, ref_manifest, _ = reference
    samples = samples.iloc[:3]
    dpm = ImageGenerator.from_folders(tiny_models["sd"], scheduler="DPMSolverMultistepScheduler", dtype="fp32",
                                      device="cpu")
    manifest = generate_shard(samples, dpm, tmp_path, FAST, batch_size=3)
    assert set(manifest.scheduler) == {"DPMSolverMultistepScheduler"}
    assert json.loads(manifest.scheduler_config[0])["algorithm_type"] == "dpmsolver++"
    assert np.abs(pixels(manifest.path[0]) - pixels(ref_manifest.path[0])).mean() > 0.5
    out = regenerate_image(manifest.iloc[0], samples, dpm, tmp_path / "again.png")
    assert out.read_bytes() == Path(manifest.path[0]).read_bytes()
    with pytest.raises(GenerationError, match=r"other models or scheduler.*DPMSolverMultistepScheduler"):
        regenerate_image(manifest.iloc[0], samples, ddim, tmp_path / "x.png")


def test_make_scheduler(tiny_models):
    ddim = make_scheduler("ddim", tiny_models["sd"])
    assert type(ddim).__name__ == "DDIMScheduler"
    assert {k: ddim.config[k] for k in METHOD_DDIM} == METHOD_DDIM
    euler = make_scheduler("EulerDiscreteScheduler", ddim.config)
    assert euler.config.beta_schedule == "scaled_linear"
    with pytest.raises(SchedulerError, match="generation.scheduler"):
        make_scheduler("NoSuchScheduler", ddim.config)


def test_bad_samples_are_refused(ddim, tmp_path):
    with pytest.raises(GenerationError, match="has no vector"):
        generate_shard(make_samples(2, vectors=False), ddim, tmp_path, FAST)
    short = make_samples(2).assign(vector=[np.zeros(5, np.float32)] * 2)
    with pytest.raises(GenerationError, match=r"\(32,\)"):
        generate_shard(short, ddim, tmp_path, FAST)
    with pytest.raises(GenerationError, match="missing column"):
        generate_shard(make_samples(2).drop(columns="seed"), ddim, tmp_path, FAST)
    assert not (tmp_path / "images").exists()
    empty = generate_shard(make_samples(2).iloc[:0], ddim, tmp_path, FAST)
    assert empty.empty and list(empty.columns) == SHARD_COLUMNS


def test_regenerate_command_gives_the_stored_bytes(reference, tiny_models, tmp_path):
    """The command line, in its own process, from a manifest and samples table on disk."""
    samples, manifest, _ = reference
    write_manifest(manifest, tmp_path / "shard.parquet")
    write_parquet(samples, tmp_path / "samples.parquet")
    row = manifest.iloc[5]
    cmd = [sys.executable, "-m", "sdi.pipeline.regenerate", "--manifest", str(tmp_path / "shard.parquet"),
           "--sample-id", row.sample_id, "--samples", str(tmp_path / "samples.parquet"),
           "--sd", str(tiny_models["sd"]), "--out", str(tmp_path / "again.png"), "--device", "cpu", "--compare"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"identical to {row.path}" in proc.stdout
    assert (tmp_path / "again.png").read_bytes() == Path(row.path).read_bytes()
    # An SEI image needs its vector; an unknown sample id is named.
    proc = subprocess.run(cmd[:7] + cmd[9:], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "pass --samples" in proc.stderr
    proc = subprocess.run([*cmd[:6], "nope", *cmd[7:]], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--sample-id nope: not in" in proc.stderr


def test_auto_batch_size_and_output_arrays(reference, ddim, tmp_path):
    samples, manifest, _ = reference
    assert auto_batch_size(torch.device("cpu"), torch.float32, 512, 512) == AUTO_BATCH_CPU
    # The engine's float output, converted off the critical path, is the pipeline's own PIL image.
    arrays = ddim.generate(samples.iloc[:3], FAST, output_type="np")
    images = ddim.generate(samples.iloc[:3], FAST)
    assert arrays.shape == (3, 64, 64, 3) and arrays.dtype == np.float32
    assert all(np.array_equal(np.asarray(to_pil(a)), np.asarray(i)) for a, i in zip(arrays, images, strict=True))
    # 'auto' (16 on CPU) puts the 8 samples in one batch.
    auto = generate_shard(samples, ddim, tmp_path, FAST, batch_size="auto")
    assert {len(b) for b in auto.batch} == {8}
    for a, b in zip(manifest.path, auto.path, strict=True):
        assert_within_batch_tolerance(a, b)
    with pytest.raises(GenerationError, match="generation.batch_size"):
        generate_shard(samples, ddim, tmp_path, FAST, batch_size="many")
