"""models.filter_clip: an open_clip model (tiny, built here from a local model config) for the filter.

The default (null) is transformers' CLIPModel of models.clip, as before; both sit behind the
same ClipEmbedder interface (preprocess, image_embeds, text_embeds).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdi.models import ModelFolderError, OpenClip, TransformersClip, filter_clip_errors, load_clip, load_filter_clip
from sdi.random_models import TINY_OPEN_CLIP, TINY_WIDTH, build_tiny_open_clip


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
