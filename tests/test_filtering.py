from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sdi.models.loaders import load_clip, load_filter_clip
from sdi.pipeline.embeddings import read_embeddings
from sdi.pipeline.filtering import (
    FilterError,
    class_text_embeds,
    clip_scores,
    filter_generated,
    rank_within_class,
    score_embeddings,
    select_top,
)

from helpers import sha256

REPO = Path(__file__).resolve().parents[1]


def write_generated(folder: Path, sizes: dict[int, int], seed: int = 0) -> pd.DataFrame:
    """Random 64x64 PNGs laid out like generation output, and their manifest."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, n in sizes.items():
        for k in range(n):
            sample_id = f"{label:04d}-{k:06d}"
            path = folder / f"{label:04d}" / f"{sample_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
            rows.append({"sample_id": sample_id, "label": label, "class_name": f"digit {label}",
                         "sample_index": k, "path": str(path)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("ratio", [0.5, 0.667, 0.333, 0.25, 0.0, 1.0])
def test_select_top_keeps_the_best_int_n_ratio_per_class(ratio):
    rng = np.random.default_rng(0)
    sizes = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7, 5: 10, 6: 33}
    table = pd.DataFrame([{"sample_id": f"{c:04d}-{k:06d}", "label": c, "score": rng.normal() * 10}
                          for c, n in sizes.items() for k in range(n)])
    table = table.sample(frac=1.0, random_state=1).reset_index(drop=True)  # order must not matter
    kept = select_top(table, ratio)
    assert kept.dtype == bool and kept.index.equals(table.index)
    for c, n in sizes.items():
        group = table[table.label == c]
        expected = set(group.nlargest(int(n * ratio), "score").sample_id)
        assert set(group[kept[group.index]].sample_id) == expected, (c, n, ratio)


def test_ties_break_by_sample_id_and_rank_is_dense():
    table = pd.DataFrame({"sample_id": ["0000-000003", "0000-000001", "0000-000002", "0000-000000"],
                          "label": 0, "score": [5.0, 5.0, 7.0, 5.0]}, index=[10, 11, 12, 13])
    assert rank_within_class(table).tolist() == [4, 3, 1, 2]
    assert select_top(table, 0.5).tolist() == [False, False, True, True]
    with pytest.raises(FilterError, match="keep_ratio"):
        select_top(table, 1.5)


def test_clip_scores_match_a_direct_clipmodel_computation(tiny_models, tmp_path):
    manifest = write_generated(tmp_path / "gen", {0: 3, 1: 2})
    scores = clip_scores(manifest, tiny_models["clip"], batch_size=2, device="cpu")
    assert scores.shape == (5,) and scores.dtype == np.float32
    assert np.isfinite(scores).all() and (np.abs(scores) <= 100).all()
    assert np.unique(scores).size == 5

    model, processor, tokenizer = load_clip(tiny_models["clip"])
    row = manifest.iloc[3]
    with torch.no_grad():
        out = model(**tokenizer([f"a photo of a {row.class_name}"], return_tensors="pt"),
                    pixel_values=processor(images=Image.open(row.path).convert("RGB"),
                                           return_tensors="pt").pixel_values)
    direct = 100.0 * (out.image_embeds @ out.text_embeds.T).item()  # CLIPModel's embeds are L2-normalised
    assert scores[3] == pytest.approx(direct, abs=1e-3)
    # the score uses the image's own class text
    other = clip_scores(manifest.assign(label=0, class_name="digit 0"), tiny_models["clip"], device="cpu")
    np.testing.assert_allclose(other[:3], scores[:3], atol=1e-4)
    assert not np.allclose(other[3:], scores[3:])


def test_reference_score_keeps_the_other_set():
    """docs/method.md section 8: the reference normalises only the text, so a long image embedding that
    points a little less towards the text beats a short one that points right at it."""
    text = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0]]), dim=-1).repeat(4, 1)
    angles = torch.tensor([0.1, 0.2, 0.6, 0.7])  # radians from the text direction
    norms = torch.tensor([1.0, 1.5, 4.0, 5.0])  # CLIP image embeddings are not unit length
    images = norms[:, None] * torch.stack([angles.cos(), angles.sin(), torch.zeros(4)], dim=1)
    table = pd.DataFrame({"sample_id": [f"0000-{i:06d}" for i in range(4)], "label": 0})

    cosine = score_embeddings(images, text, "cosine")
    reference = score_embeddings(images, text, "reference")
    np.testing.assert_allclose(cosine.numpy(), 100 * angles.cos().numpy(), rtol=1e-5)
    np.testing.assert_allclose(reference.numpy(), 100 * (norms * angles.cos()).numpy(), rtol=1e-5)
    kept_cosine = select_top(table.assign(score=cosine.numpy()), 0.5)
    kept_reference = select_top(table.assign(score=reference.numpy()), 0.5)
    assert kept_cosine.tolist() == [True, True, False, False]
    assert kept_reference.tolist() == [False, False, True, True]
    with pytest.raises(FilterError, match="filter.score"):
        score_embeddings(images, text, "dot")


def test_reference_score_through_the_filter(tiny_models, tmp_path):
    manifest = write_generated(tmp_path / "gen", {0: 3, 1: 2})
    cosine = clip_scores(manifest, tiny_models["clip"], batch_size=2, device="cpu")
    reference = clip_scores(manifest, tiny_models["clip"], batch_size=2, device="cpu", score="reference")
    model, processor, _ = load_clip(tiny_models["clip"])
    with torch.no_grad():
        pixels = processor(images=[Image.open(p).convert("RGB") for p in manifest.path],
                           return_tensors="pt").pixel_values
        norms = model.get_image_features(pixel_values=pixels).pooler_output.norm(dim=-1).numpy()
    np.testing.assert_allclose(reference, cosine * norms, rtol=1e-4, atol=1e-4)
    out = filter_generated(manifest, tiny_models["clip"], 0.5, tmp_path / "f", device="cpu", score="reference")
    np.testing.assert_allclose(out.sort_values("sample_id").score, reference, rtol=1e-5)


def test_filter_generated_writes_four_files_and_leaves_images_alone(tiny_models, tmp_path):
    sizes = {0: 4, 1: 3, 2: 6}
    manifest = write_generated(tmp_path / "gen", sizes)
    before = {p: sha256(p) for p in manifest.path}
    files_before = sorted((tmp_path / "gen").rglob("*"))
    out = tmp_path / "filter"
    scored = filter_generated(manifest.sample(frac=1.0, random_state=0), tiny_models["clip"], 0.5, out,
                              batch_size=4, device="cpu", grid_classes=2, grid_per_row=3)

    assert sorted(p.name for p in out.iterdir()) == ["counts.csv", "grid.png", "image_embeddings.parquet",
                                                     "manifest.parquet"]
    assert {p: sha256(p) for p in manifest.path} == before and sorted((tmp_path / "gen").rglob("*")) == files_before

    table = pd.read_parquet(out / "manifest.parquet")
    assert len(table) == 13 and table.sample_id.is_unique
    assert {"sample_id", "label", "class_name", "path", "sample_index", "score", "rank", "kept"} <= set(table.columns)
    pd.testing.assert_frame_equal(table, scored, check_dtype=False)
    # the stored embeddings (for the linear probe) are the ones scored: they give the scores back
    stored, embeds = read_embeddings(out / "image_embeddings.parquet", "image_embedding")
    assert stored.path.tolist() == table.path.tolist() and stored.sample_id.tolist() == table.sample_id.tolist()
    clip = load_filter_clip(tiny_models["clip"])
    text = class_text_embeds(clip, ["digit 0", "digit 1", "digit 2"])  # write_generated's class names
    np.testing.assert_allclose(score_embeddings(torch.from_numpy(embeds.copy()), text[table.label.tolist()]).numpy(),
                               table.score, rtol=1e-4, atol=1e-4)
    for label, n in sizes.items():
        group = table[table.label == label]
        assert group.kept.sum() == n // 2
        assert sorted(group["rank"]) == list(range(1, n + 1))
        assert group[group.kept].score.min() >= group[~group.kept].score.max()

    counts = pd.read_csv(out / "counts.csv")
    assert list(counts.columns) == ["label", "class_name", "generated", "kept", "score_min", "score_mean",
                                    "score_max"]
    assert counts.generated.tolist() == [4, 3, 6] and counts.kept.tolist() == [2, 1, 3]
    kept_scores = table[table.kept].groupby("label").score
    np.testing.assert_allclose(counts.score_max, kept_scores.max(), rtol=1e-5)
    np.testing.assert_allclose(counts.score_mean, kept_scores.mean(), rtol=1e-5)

    with Image.open(out / "grid.png") as grid:
        assert grid.format == "PNG" and grid.width > 3 * 96 and grid.height >= 4 * 96  # 2 classes x 2 rows


def test_filter_refuses_missing_files_and_duplicates(tiny_models, tmp_path):
    manifest = write_generated(tmp_path / "gen", {0: 2})
    with pytest.raises(FilterError, match="duplicated sample_id"):
        filter_generated(pd.concat([manifest, manifest]), tiny_models["clip"], 0.5, tmp_path / "f")
    Path(manifest.path.iloc[0]).unlink()
    with pytest.raises(FilterError, match="changed or missing since they were written: .*0000-000000.png: missing"):
        filter_generated(manifest, tiny_models["clip"], 0.5, tmp_path / "f")
    assert not (tmp_path / "f").exists()
