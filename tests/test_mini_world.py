"""The mini world: corpus, target dataset, a tiny-step build that loads through the project's loaders,
determinism, and a partial or corrupt world never trusted. Seconds each: the recipe here trains a few
steps of small models (bench/mini_world.py measures the real recipe)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sdi.data import mini_corpus as corpus
from sdi.models.mini_world import (
    MANIFEST,
    MiniWorldError,
    Recipe,
    build_world,
    ensure_mini_world,
    verify_world,
    world_folder,
)

# Small models, two steps each: what is tested is the build, the layout and the checks, not quality.
TEST_RECIPE = Recipe(vae_widths=(8, 16, 16), vae_steps=2, vae_batch=8, clip_width=32, clip_layers=1, clip_steps=2,
                     clip_batch=16, unet_widths=(16, 32), unet_steps=2, unet_batch=8, renders_per_digit=1,
                     eval_digits=50)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return ensure_mini_world(tmp_path_factory.mktemp("mini"), TEST_RECIPE, log=lambda m: None)


def test_split_holds_digits_out_of_the_world():
    _, labels = corpus.load_mnist()
    split = corpus.source_split(labels)
    assert split["world"].size + split["target"].size + split["judge"].size == labels.size
    assert not set(split["world"]) & (set(split["target"]) | set(split["judge"]))
    assert not set(split["target"]) & set(split["judge"])
    assert np.bincount(labels[split["target"]]).tolist() == [corpus.TARGET_PER_CLASS] * 10
    np.testing.assert_array_equal(split["target"], corpus.source_split(labels)["target"])  # fixed


def test_render_and_captions():
    digits, labels = corpus.load_mnist()
    look = corpus.Look.named("yellow", "purple", "thick")
    images = corpus.render(digits[:3], [look.fg] * 3, [look.bg] * 3, [look.stroke] * 3)
    assert images.shape == (3, 3, 32, 32) and 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_allclose(images[0, :, 0, 0], np.array(corpus.BACKGROUNDS["purple"]) / 255, atol=1e-6)
    captions = corpus.all_captions()
    assert captions[corpus.caption_index(7, look.fg, None, look.stroke)] == "a photo of a digit seven in yellow, thick"
    assert captions[corpus.caption_index(7, None, None, None)] == "a photo of a digit seven"  # the text-only prompt
    idx, named = corpus.caption_indices(labels[:50], *corpus.random_looks(50, np.random.default_rng(0)), 0.5,
                                        np.random.default_rng(1))
    for i, c in zip(idx, labels[:50], strict=True):
        assert captions[i].startswith(f"a photo of a {corpus.CLASS_NAMES[c]}")
    with pytest.raises(corpus.MiniCorpusError, match="fg='pink'"):
        corpus.Look.named("pink", "black", "thin")


def test_target_dataset_is_few_shot_held_out_and_narrow(tmp_path):
    from sdi.data.readers.cub import read_cub
    from sdi.evaluation.judge import judge_looks

    root = corpus.write_target_dataset(tmp_path / "target", train_per_class=5, test_per_class=20)
    table = read_cub(root)
    assert table.groupby("subset").size().to_dict() == {"train": 50, "test": 200}
    assert (table[table.subset == "train"].groupby("label").size() == 5).all()
    assert sorted(table.class_name.unique())[:2] == ["digit eight", "digit five"]
    # every image is a held-out target digit (its MNIST index is in the file name) ...
    _, labels = corpus.load_mnist()
    target = set(corpus.source_split(labels)["target"].tolist())
    assert {int(Path(p).stem.split("_")[1]) for p in table.path} <= target
    # ... in one of the target's looks
    from PIL import Image

    pixels = np.stack([np.asarray(Image.open(p)) for p in table.path])
    looks = judge_looks(pixels)
    allowed = {(corpus.Look.named(*lk).fg, corpus.Look.named(*lk).bg) for lk in corpus.DEFAULT_TARGET_LOOKS}
    assert set(zip(looks["fg"].tolist(), looks["bg"].tolist(), strict=True)) <= allowed
    with pytest.raises(corpus.MiniCorpusError, match="few-shot"):
        corpus.write_target_dataset(tmp_path / "t2", train_per_class=6)


def test_world_loads_through_the_project_loaders(world):
    from sdi.models.folders import check_clip_folder, check_sd_folder, model_dims
    from sdi.models.loaders import load_clip, load_clip_vision, load_sd_pipeline

    check_sd_folder(world.sd)
    check_clip_folder(world.clip)
    dims = model_dims(world.sd, world.clip)
    assert (dims.d_clip, dims.d_cross, dims.resolution) == (32, 32, 32)
    pipe = load_sd_pipeline(world.sd)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.vae_scale_factor == 4
    assert pipe.vae.config.scaling_factor != 0.18215  # measured on the corpus
    images = pipe("a photo of a digit seven", num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 32, 32, 3)
    model, processor, tokenizer = load_clip(world.clip)
    assert model.text_model.config.eos_token_id == 49407
    load_clip_vision(world.clip)
    assert set(world.manifest["seconds"]) >= {"vae", "clip", "unet"}


def test_build_is_deterministic(world, tmp_path):
    again = build_world(tmp_path / "again", TEST_RECIPE, log=lambda m: None)
    assert {k: v["sha256"] for k, v in again["files"].items()} == \
        {k: v["sha256"] for k, v in world.manifest["files"].items()}


def test_corrupt_world_is_named_and_rebuilt(world, tmp_path):
    import shutil

    copy = world_folder(tmp_path, TEST_RECIPE)
    shutil.copytree(world.folder, copy)
    weights = copy / "sd" / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(MiniWorldError, match="unet/diffusion_pytorch_model.safetensors.*truncated"):
        verify_world(copy)
    with pytest.raises(MiniWorldError, match="truncated"):
        ensure_mini_world(tmp_path, TEST_RECIPE, rebuild=False)
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit flipped
    with pytest.raises(MiniWorldError, match="sha256"):
        verify_world(copy)
    rebuilt = ensure_mini_world(tmp_path, TEST_RECIPE, log=lambda m: None)
    assert verify_world(rebuilt.folder)["files"] == world.manifest["files"]
    # an unfinished folder (no manifest) and a world of another recipe are not trusted either
    (copy / MANIFEST).unlink()
    with pytest.raises(MiniWorldError, match="never finished"):
        verify_world(copy)
    with pytest.raises(MiniWorldError, match="recipe hash"):
        verify_world(world.folder, Recipe(seed=1))


def _repo_env() -> dict[str, str]:
    """This environment with the checkout first on PYTHONPATH, for a Python started by a test."""
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_killed_build_leaves_nothing_trusted(tmp_path):
    code = ("import json, sys; from sdi.models.mini_world import Recipe, ensure_mini_world; "
            "ensure_mini_world(sys.argv[1], Recipe(**json.loads(sys.argv[2])))")
    recipe = json.dumps(dataclasses.asdict(TEST_RECIPE))
    proc = subprocess.Popen([sys.executable, "-u", "-c", code, str(tmp_path), recipe], env=_repo_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:  # kill it while it trains
        line = proc.stdout.readline()
        if line.startswith("vae step"):
            break
    assert proc.poll() is None, "the build ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not world_folder(tmp_path, TEST_RECIPE).exists()
    assert [p.name.startswith(".building-") for p in tmp_path.iterdir()] == [True]
    world = ensure_mini_world(tmp_path, TEST_RECIPE, log=lambda m: None)  # the next build clears it away
    assert [p.name for p in tmp_path.iterdir()] == [world.folder.name]
    assert json.loads((world.folder / MANIFEST).read_text())["recipe_hash"].startswith(world.folder.name)


def test_the_world_folder_is_found_without_importing_torch():
    """Snakemake plans with the world's folder name (the recipe hash, with the library versions in it) on every
    call: it reads the versions from the installed files, and they are the ones the imported libraries report."""
    code = ("import json, sys; from sdi.models.mini_world import Recipe, recipe_hash, verify_world; "
            "before = recipe_hash(Recipe()); "
            "heavy = sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules)); "
            "import torch, diffusers, transformers; print(json.dumps([before, heavy, recipe_hash(Recipe())]))")
    out = subprocess.run([sys.executable, "-c", code], env=_repo_env(), cwd=REPO, capture_output=True, text=True,
                         check=True)
    before, heavy, after = json.loads(out.stdout)
    assert heavy == []
    assert before == after
