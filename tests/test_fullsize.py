"""Every stage at full size: SD v1.5, sd-vae-ft-mse and CLIP ViT-L/14 architectures with random weights.

The folders are written once per session in the hub's layouts (SD as a ``variant="fp16"``
download: fp16 weight files only, safety checker named in model_index.json; VAE and CLIP in
fp32), and each stage runs through the package's own stage function at minimal counts:
2 classes x 2 images, 1 projector step, 2 DDIM steps, one filter batch, one classifier step.
What this checks is what differs from the tiny models: shapes, dtypes, parameter counts,
the prompt's 77 tokens with the placeholder at position 7, finite outputs.

On the CPU the SD stages run at a reduced resolution (128 px, bf16 generation at 64 px: CPUs
without native bf16 compute it slowly); on a GPU (``SDI_FULLSIZE_DEVICE=cuda``) at 512 px.
About 4 GB of disk (pytest's tmp_path) and 3 to 4 minutes on 2 CPU cores.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from sdi.models.conditioning import prompt_hidden_states
from sdi.models.folders import model_dims, sd_weights_variant
from sdi.models.generator import GenerationSettings, ImageGenerator
from sdi.models.projector import SemanticProjector
from sdi.models.random_models import build_fullsize_models
from sdi.pipeline.embeddings import extract_embeddings, read_embeddings, write_embeddings
from sdi.pipeline.filtering import filter_generated
from sdi.pipeline.generation import generate_shard
from sdi.pipeline.sampling import sample_class_embeddings
from sdi.training.classifier import train_classifier
from sdi.training.projector import train_projector

pytestmark = [pytest.mark.fullsize, pytest.mark.workflow]

DEVICE = os.environ.get("SDI_FULLSIZE_DEVICE", "cpu")
GPU = DEVICE.startswith("cuda")
RESOLUTION = 512 if GPU else 128  # SD stages; CLIP always sees 224 px
BF16_RESOLUTION = 512 if GPU else 64
CLASSES = ["red square", "blue disc"]
PROJECTOR_PARAMETERS = 1_574_656  # 768 x 1024 + 1024 + 1024 x 768 + 768


@pytest.fixture(scope="module")
def fullsize_models(tmp_path_factory) -> dict[str, Path]:
    """{'sd', 'vae', 'clip'}: full-size random models, built once for this module (about 4 GB)."""
    root = tmp_path_factory.mktemp("fullsize")
    models = build_fullsize_models(root, sd_precisions=("fp16",), device=DEVICE)
    gc.collect()
    yield models
    shutil.rmtree(root)  # 4 GB: gone after the module, whatever the outcome (the models are random)


def _free() -> None:
    gc.collect()
    if GPU:
        torch.cuda.empty_cache()


def _images(root: Path) -> dict[str, pd.DataFrame]:
    """2 classes x (2 train + 1 test) images of differing sizes; split manifests."""
    rows = []
    for label, name in enumerate(CLASSES):
        for i, subset in enumerate(("train", "train", "test")):
            image = Image.new("RGB", (300 + 40 * i, 240), (230, 230, 210 + 10 * i))
            draw = ImageDraw.Draw(image)
            box = (60 + 20 * i, 40, 220 + 20 * i, 200)
            if label == 0:
                draw.rectangle(box, fill=(200, 30, 30))
            else:
                draw.ellipse(box, fill=(30, 60, 200))
            path = root / name.replace(" ", "_") / f"{label}_{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, quality=90)
            rows.append({"image_id": f"{label}_{i}", "path": str(path), "label": label, "class_name": name,
                         "subset": subset})
    table = pd.DataFrame(rows)
    return {s: table[table.subset == s].drop(columns="subset").reset_index(drop=True) for s in ("train", "test")}


class _Recorder:
    """Keeps the float images that ImageGenerator.generate returns, while generate_shard saves them."""

    def __init__(self, generator: ImageGenerator):
        self.arrays: list[np.ndarray] = []
        self._generate = generator.generate
        generator.generate = self

    def __call__(self, *args, **kwargs):
        images = self._generate(*args, **kwargs)
        self.arrays.append(np.asarray(images))
        return images


def test_every_stage_at_full_size(fullsize_models, tmp_path):
    sd, vae, clip = fullsize_models["sd"], fullsize_models["vae"], fullsize_models["clip"]
    assert json.loads((sd / "model_index.json").read_text())["safety_checker"] == [
        "stable_diffusion", "StableDiffusionSafetyChecker"]
    assert sd_weights_variant(sd) == "fp16"
    dims = model_dims(sd, clip, vae)
    assert (dims.d_clip, dims.d_cross, dims.resolution) == (768, 768, 512)
    split = _images(tmp_path / "data")
    train, test = split["train"], split["test"]

    # Prompt: 77 tokens, placeholder at position 7, SD v1.5's text encoder width.
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(sd / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(sd / "text_encoder", variant="fp16", dtype=torch.float32)
    hidden, position = prompt_hidden_states(tokenizer, text_encoder)
    assert (tuple(hidden.shape), hidden.dtype, position) == ((1, 77, 768), torch.float32, 7)
    assert torch.isfinite(hidden).all()
    del text_encoder, hidden
    _free()

    # Projector: one step on the 4 training images, against the full UNet and VAE.
    result = train_projector(train, sd, clip, tmp_path / "projector", epochs=1, batch_size=len(train),
                             image_size=RESOLUTION, mixed_precision="bf16" if GPU else "no", checkpoint_every=1,
                             device=DEVICE)
    _free()
    assert result.global_step == 1
    loss = pd.read_csv(tmp_path / "projector" / "loss.csv")
    assert len(loss) == 1 and np.isfinite(loss.loss).all() and loss.loss.iloc[0] > 0
    projector = SemanticProjector.from_pretrained(result.projector_dir)
    assert sum(p.numel() for p in projector.parameters()) == PROJECTOR_PARAMETERS
    assert (projector.config.d_clip, projector.config.d_cross, projector.config.hidden_dim) == (768, 768, 1024)

    # Embeddings: CLIP ViT-L/14 image_embeds and their projection, one row per image.
    table = extract_embeddings(train, result.projector_dir, clip, batch_size=len(train), device=DEVICE)
    write_embeddings(table, tmp_path / "embeddings.parquet")
    _free()
    embeddings, clip_matrix = read_embeddings(tmp_path / "embeddings.parquet", "clip_embedding")
    _, projected = read_embeddings(tmp_path / "embeddings.parquet")
    assert clip_matrix.shape == projected.shape == (4, 768)
    assert clip_matrix.dtype == projected.dtype == np.float32
    assert np.isfinite(clip_matrix).all() and np.isfinite(projected).all()

    # SEI sampling: one Gaussian per class (2 embeddings each), 2 vectors per class.
    samples = sample_class_embeddings(embeddings.assign(embedding=list(projected)), method="gauss", expansion=1.0,
                                      seed=0, n_shards=1)
    assert len(samples) == 4 and all(np.asarray(v).shape == (768,) for v in samples.vector)

    # Generation: 4 images, one batch, 2 DDIM steps, separate VAE; fp32 and bf16.
    manifests = {}
    for dtype, size, rows in (("fp32", RESOLUTION, samples), ("bf16", BF16_RESOLUTION, samples.iloc[:1])):
        generator = ImageGenerator.from_folders(sd, vae, dtype=dtype, device=DEVICE)
        recorder = _Recorder(generator)
        out = tmp_path / f"generated-{dtype}"
        settings = GenerationSettings(steps=2, guidance_scale=2.0, resolution=size)
        manifest = generate_shard(rows, generator, out, settings, batch_size=len(rows))
        expected = torch.float32 if dtype == "fp32" else torch.bfloat16
        assert generator.pipe.unet.dtype == generator.pipe.vae.dtype == generator.pipe.text_encoder.dtype == expected
        assert generator.pipe.safety_checker is None
        assert generator.pipe.vae.config.block_out_channels == [128, 256, 512, 512]
        arrays = np.concatenate(recorder.arrays)
        assert arrays.shape == (len(rows), size, size, 3) and arrays.dtype == np.float32
        assert np.isfinite(arrays).all()
        assert list(manifest.dtype.unique()) == [dtype] and list(manifest.steps.unique()) == [2]
        for path in manifest.path:
            with Image.open(path) as image:
                assert image.size == (size, size) and image.mode == "RGB"
        manifests[dtype] = manifest
        del generator, recorder
        _free()

    # Filter: one CLIP batch of the 4 fp32 images; keep 1 of 2 per class.
    scored = filter_generated(manifests["fp32"], clip, 0.5, tmp_path / "filtered", batch_size=4, device=DEVICE)
    _free()
    assert len(scored) == 4 and scored.score.between(-100, 100).all() and np.isfinite(scored.score).all()
    assert scored.groupby("label").kept.sum().tolist() == [1, 1]

    # Classifier: ResNet50, one step on 4 real + 2 kept synthetic images; validation = test here.
    kept = scored[scored.kept][["path", "label"]]
    metrics = train_classifier(train, test, test, tmp_path / "classifier", num_classes=2, class_names=CLASSES,
                               epochs=1, batch_size=len(train) + len(kept), synthetic=kept, device=DEVICE,
                               num_workers=0)
    _free()
    log = pd.read_csv(tmp_path / "classifier" / "log.csv")
    assert len(log) == 1 and np.isfinite(log.train_loss).all()
    assert metrics["n_train_real"] == 4 and metrics["n_train_synthetic"] == 2
    assert 0.0 <= metrics["top1"] <= 100.0
    best = load_file(tmp_path / "classifier" / "best" / "model.safetensors")
    assert best["fc.weight"].shape == (2, 2048) and best["fc.weight"].dtype == torch.float32
