"""models.filter_clip: an open_clip model (tiny, built here from a local model config) for the filter.

The default (null) is transformers' CLIPModel of models.clip (the paper's filter); both sit behind the
same ClipEmbedder interface (preprocess, image_embeds, text_embeds).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

from sdi.models.folders import ModelFolderError, filter_clip_errors
from sdi.models.loaders import OpenClip, TransformersClip, load_clip, load_filter_clip
from sdi.models.random_models import TINY_OPEN_CLIP, TINY_WIDTH, build_tiny_open_clip
from sdi.pipeline.filtering import filter_generated

from helpers import edit_config, run_snakemake


@pytest.fixture(scope="module")
def open_clip_spec(tmp_path_factory) -> dict:
    return build_tiny_open_clip(tmp_path_factory.mktemp("open_clip"))


def _images(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 50, 3), dtype=np.uint8)) for i in range(n)]


def test_open_clip_embeds_images_and_text(open_clip_spec):
    import open_clip

    clip = load_filter_clip(None, open_clip_spec)
    assert isinstance(clip, OpenClip) and clip.projection_dim == TINY_OPEN_CLIP["embed_dim"]
    pixels = torch.stack([clip.preprocess(image) for image in _images()])
    assert pixels.shape == (3, 3, 32, 32) and pixels.dtype == torch.float32
    images, texts = clip.image_embeds(pixels), clip.text_embeds(["a photo of a cat", "a photo of a dog"])
    assert images.shape == (3, 24) and texts.shape == (2, 24)
    assert images.dtype == texts.dtype == torch.float32 and torch.isfinite(images).all()
    # The weights file is what was loaded: open_clip's own model with those weights gives the same embeddings.
    model = open_clip.create_model(open_clip_spec["architecture"], pretrained=open_clip_spec["weights"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(images, model.encode_image(pixels))
        tokens = open_clip.get_tokenizer(open_clip_spec["architecture"])(["a photo of a cat", "a photo of a dog"])
        torch.testing.assert_close(texts, model.encode_text(tokens))
    assert not torch.allclose(texts[0], texts[1])


def test_default_is_the_transformers_clip(tiny_models):
    clip = load_filter_clip(tiny_models["clip"], None)
    assert isinstance(clip, TransformersClip) and clip.projection_dim == TINY_WIDTH
    model, processor, tokenizer = load_clip(tiny_models["clip"])
    pixels = torch.stack([clip.preprocess(image) for image in _images(2)])
    torch.testing.assert_close(pixels, processor(images=_images(2), return_tensors="pt").pixel_values)
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=pixels).pooler_output
        torch.testing.assert_close(clip.image_embeds(pixels), expected)
        tokens = tokenizer(["a photo of a digit"], padding=True, return_tensors="pt")
        torch.testing.assert_close(clip.text_embeds(["a photo of a digit"]),
                                   model.get_text_features(**tokens).pooler_output)


def test_bad_filter_clip_entries_are_named(open_clip_spec, tmp_path):
    assert filter_clip_errors(None) == [] and filter_clip_errors(open_clip_spec) == []
    unknown = filter_clip_errors({"architecture": "ViT-Q-99", "weights": open_clip_spec["weights"]})
    assert unknown == ["models.filter_clip.architecture: 'ViT-Q-99' is not an open_clip model (e.g. ViT-L-14, "
                       "ViT-H-14, ViT-bigG-14); name one, or give models.filter_clip.config for a custom architecture"]
    renamed = filter_clip_errors({**open_clip_spec, "architecture": "other"})
    assert renamed and "must be the config file's name without .json ('sdi-tiny-open-clip')" in renamed[0]
    missing = tmp_path / "open_clip_pytorch_model.bin"
    assert filter_clip_errors({**open_clip_spec, "weights": str(missing)}) == [
        f"models.filter_clip.weights: file {missing} does not exist; set it to the local open_clip checkpoint of "
        "sdi-tiny-open-clip (e.g. open_clip_pytorch_model.bin)"]
    truncated = tmp_path / "cut.bin"
    truncated.write_bytes(open(open_clip_spec["weights"], "rb").read()[:5000])
    with pytest.raises(ModelFolderError, match=r"models\.filter_clip\.weights: .*cut\.bin is truncated or corrupt"):
        load_filter_clip(None, {**open_clip_spec, "weights": str(truncated)})


def _image_table(root, n_per_class: int = 3) -> pd.DataFrame:
    rows = []
    for label, (name, colour) in enumerate((("red square", (200, 30, 30)), ("blue disc", (30, 60, 200)))):
        for i in range(n_per_class):
            path = root / f"{label}_{i}.png"
            image = Image.new("RGB", (48 + 8 * i, 40), (230, 230, 220))
            ImageDraw.Draw(image).rectangle((4 + 3 * i, 4, 30, 30), fill=colour)
            image.save(path)
            rows.append({"sample_id": f"{label:04d}-{i:06d}", "image_id": f"{label}_{i}", "label": label,
                         "class_name": name, "path": str(path)})
    return pd.DataFrame(rows)


def test_filter_scores_with_the_open_clip_model(open_clip_spec, tiny_models, tmp_path):
    import open_clip

    images = _image_table(tmp_path)
    scored = filter_generated(images, tiny_models["clip"], 0.5, tmp_path / "filtered", batch_size=4, device="cpu",
                              filter_clip=open_clip_spec, num_workers=1)
    model = open_clip.create_model(open_clip_spec["architecture"], pretrained=open_clip_spec["weights"]).eval()
    _, _, preprocess = open_clip.create_model_and_transforms(open_clip_spec["architecture"])
    tokenizer = open_clip.get_tokenizer(open_clip_spec["architecture"])
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in scored.path])
        image = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        text = torch.nn.functional.normalize(model.encode_text(tokenizer([f"a photo of a {c}" for c in
                                                                          scored.class_name])), dim=-1)
    np.testing.assert_allclose(scored.score.to_numpy(), (100 * (image * text).sum(-1)).numpy(), rtol=1e-4, atol=1e-4)
    assert scored.groupby("label").kept.sum().tolist() == [1, 1]
    # The default (no filter_clip) is the transformers CLIP of models.clip: other scores.
    default = filter_generated(images, tiny_models["clip"], 0.5, tmp_path / "default", batch_size=4, device="cpu")
    assert not np.allclose(default.score, scored.score)


def test_diagnostics_use_the_open_clip_space(open_clip_spec, tiny_models, tmp_path):
    from sdi.evaluation.diagnostics import diagnose_variant, run_diagnostics
    from sdi.pipeline.embeddings import embed_image_files, write_embeddings

    table = _image_table(tmp_path, n_per_class=4)
    train, test, kept = table.iloc[[0, 1, 4, 5]], table.iloc[[2, 6]], table.iloc[[3, 7]]
    split = tmp_path / "split"
    split.mkdir()
    train.to_parquet(split / "train.parquet")
    test.to_parquet(split / "test.parquet")
    (tmp_path / "filtered").mkdir()
    table.assign(kept=table.index.isin(kept.index)).to_parquet(tmp_path / "filtered" / "manifest.parquet")
    rng = np.random.default_rng(0)
    embeddings = train[["image_id", "label", "class_name"]].assign(
        clip_embedding=list(rng.normal(size=(4, TINY_WIDTH)).astype(np.float32)),  # the projector's CLIP space
        embedding=list(rng.normal(size=(4, TINY_WIDTH)).astype(np.float32)))
    write_embeddings(embeddings.iloc[::-1], tmp_path / "embeddings.parquet")  # another order than the split
    summary = diagnose_variant(tmp_path / "embeddings.parquet", None, tmp_path / "filtered", split,
                               tiny_models["clip"], tmp_path / "diag", device="cpu", k=1,
                               filter_clip=open_clip_spec)
    clip = load_filter_clip(None, open_clip_spec)
    real = train.iloc[::-1]
    expected = run_diagnostics(real.reset_index(drop=True), None, embed_image_files(real.path.tolist(), clip), None,
                               None, kept.reset_index(drop=True), embed_image_files(kept.path.tolist(), clip),
                               test.reset_index(drop=True), embed_image_files(test.path.tolist(), clip),
                               tmp_path / "expected", k=1)
    assert summary == expected and summary["spaces"]["clip_image"]["nn_ratio"] is not None


@pytest.mark.workflow
def test_filter_clip_entry_is_checked_before_any_job(workflow, open_clip_spec, tmp_path):
    missing = tmp_path / "open_clip_pytorch_model.bin"
    edit_config(workflow, models={"filter_clip": {"architecture": "ViT-L-14", "weights": str(missing)}})
    proc = run_snakemake(workflow, "--cores", "1", "-n", "all", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Job stats" not in output
    assert f"config.models.filter_clip.weights: file {missing} does not exist" in output, output[-3000:]
    edit_config(workflow, lambda c: c["models"].update(filter_clip=open_clip_spec))
    run_snakemake(workflow, "--cores", "1", "-n", "all")
