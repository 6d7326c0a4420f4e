"""Embedding extraction (docs/method.md section 3) with the tiny CLIP and a tiny projector."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sdi.io.images import load_rgb
from sdi.models.loaders import load_clip_vision
from sdi.models.projector import SemanticProjector
from sdi.pipeline.embeddings import extract_embeddings, read_embeddings, write_embeddings


@pytest.fixture(scope="module")
def projector_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("projector") / "projector"
    SemanticProjector(d_clip=32, d_cross=32, hidden_dim=64).save_pretrained(folder)
    return folder


def test_embeddings_parquet(tiny_models, digits_split, projector_dir, tmp_path):
    manifest = digits_split["train"]
    paths = []
    for run, workers in ((1, 0), (2, 2)):  # the second with DataLoader workers, as jobs of 3+ threads
        df = extract_embeddings(manifest, projector_dir, tiny_models["clip"], batch_size=16, device="cpu",
                                num_workers=workers)
        paths.append(tmp_path / f"run{run}" / "embeddings.parquet")
        write_embeddings(df, paths[-1])

    schema = pq.read_schema(paths[0])
    assert schema.names == ["image_id", "label", "class_name", "clip_embedding", "embedding"]
    for column in ("clip_embedding", "embedding"):
        assert schema.field(column).type == pa.list_(pa.float32(), 32)
    assert not list(paths[0].parent.glob(".*")), "temporary file left behind"

    table, matrix = read_embeddings(paths[0])
    assert len(table) == len(manifest) and table.image_id.is_unique
    assert table.image_id.tolist() == manifest.image_id.tolist()
    assert table.label.tolist() == manifest.label.tolist()
    assert table.class_name.tolist() == manifest.class_name.tolist()
    assert matrix.shape == (len(manifest), 32) and matrix.dtype == np.float32
    _, clip = read_embeddings(paths[0], column="clip_embedding")
    assert np.isfinite(matrix).all() and np.isfinite(clip).all()

    # Identical across runs and worker counts.
    _, matrix2 = read_embeddings(paths[1])
    _, clip2 = read_embeddings(paths[1], column="clip_embedding")
    assert np.array_equal(matrix, matrix2) and np.array_equal(clip, clip2)

    # clip_embedding is CLIP's raw image_embeds (not normalised), embedding its projection.
    model, processor = load_clip_vision(tiny_models["clip"])
    with torch.no_grad():
        pixels = processor(images=[load_rgb(p) for p in manifest.path[:3]], return_tensors="pt").pixel_values
        direct = model(pixel_values=pixels).image_embeds.numpy()
        projected = SemanticProjector.from_pretrained(projector_dir)(torch.from_numpy(clip.copy())).numpy()
    np.testing.assert_allclose(clip[:3], direct, rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.linalg.norm(clip, axis=1), 1.0)
    np.testing.assert_allclose(matrix, projected, rtol=1e-4, atol=1e-5)


def test_projector_must_fit_clip(tiny_models, digits_split, tmp_path):
    SemanticProjector(d_clip=16, d_cross=32, hidden_dim=8).save_pretrained(tmp_path / "p")
    with pytest.raises(ValueError, match="projection_dim"):
        extract_embeddings(digits_split["train"].head(2), tmp_path / "p", tiny_models["clip"], device="cpu")
