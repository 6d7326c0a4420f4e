"""The pipeline's output files cannot hurt their sources nor be trusted when damaged (issue 36).

Case A: the export copies by default, so editing an exported file in place leaves the user's dataset as it
is; ``link='hardlink'`` shares the inode and export.json and the README say so.
Case B: a shard manifest records each PNG's sha256 and size as written; the filter (and the export) check
them, and a PNG truncated after its shard finished fails the job naming it, after removing the PNG and its
shard manifest, so that generating the shard again gives back the same bytes. Manifests written before the
checksum columns are checked by decoding; images no shard manifest lists are never removed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sdi.pipeline.export import ExportError, export_dataset

from helpers import sha256, write_image

CLASSES = ["digit zero", "digit one"]


def small_split(root: Path) -> dict[str, pd.DataFrame]:
    """A user's dataset of 2 classes (12x10 PNGs under root/data) as the split stage's three manifests."""
    split, seed = {}, 0
    for s, n in (("train", 2), ("val", 1), ("test", 1)):
        rows = []
        for label, name in enumerate(CLASSES):
            for k in range(n):
                image_id = f"{s}_{label}_{k}"
                path = write_image(root / "data" / s / str(label) / f"{image_id}.png", seed=seed)
                seed += 1
                rows.append({"image_id": image_id, "path": str(path), "label": label, "class_name": name})
        split[s] = pd.DataFrame(rows)
    return split


# --------------------------------------------------------------------------- case A: export copies by default
def test_export_copies_by_default_so_editing_it_leaves_the_dataset_alone(tmp_path):
    split = small_split(tmp_path)
    before = {p: sha256(p) for t in split.values() for p in t.path}
    table = export_dataset(split, tmp_path / "export", dataset="d", method="real")
    assert set(table.link) == {"copy"}
    info = json.loads((tmp_path / "export" / "export.json").read_text())
    assert info["link"] == "copy" and info["links"] == {"copy": len(table)}
    readme = (tmp_path / "export" / "README.md").read_text()
    assert "Files are copies" in readme and "editing one changes neither the dataset nor the generated image" in readme

    row = table[table.split == "train"].iloc[0]
    exported = tmp_path / "export" / "train" / row.file_name
    with open(exported, "r+b") as f:  # a tool that edits the file in place
        f.write(b"\x00" * 64)
    assert sha256(exported) != before[row.path]
    assert {p: sha256(p) for p in before} == before  # the user's dataset is unchanged


def test_export_hardlink_shares_the_inode_and_says_so(tmp_path):
    split = small_split(tmp_path)
    table = export_dataset(split, tmp_path / "export", link="hardlink", dataset="d", method="real")
    info = json.loads((tmp_path / "export" / "export.json").read_text())
    assert info["link"] == "hardlink" and info["links"] == {"hardlink": len(table)}  # one file system here
    for row in table.itertuples():
        assert (tmp_path / "export" / row.split / row.file_name).stat().st_ino == os.stat(row.path).st_ino
    readme = (tmp_path / "export" / "README.md").read_text()
    assert "hard links" in readme and "editing a linked file in place edits its source" in readme

    export_dataset(split, tmp_path / "sym", link="symlink", dataset="d", method="real")
    assert json.loads((tmp_path / "sym" / "export.json").read_text())["links"] == {"symlink": len(table)}
    with pytest.raises(ExportError, match="config.export.link: 'move' must be one of copy, hardlink, symlink"):
        export_dataset(split, tmp_path / "bad", link="move")


def test_export_link_key_is_in_the_schema_with_copy_as_default():
    import yaml

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "schema.yaml").read_text())
    link = schema["properties"]["export"]["properties"]["link"]
    assert link["default"] == "copy" and link["enum"] == ["copy", "hardlink", "symlink"]
    assert "edits its source" in link["description"]


# --------------------------------------------------------------------------- case B: checksums of generated PNGs
@pytest.fixture(scope="module")
def generator(tiny_models):
    from sdi.models.generator import ImageGenerator

    return ImageGenerator.from_folders(tiny_models["sd"], scheduler="ddim", dtype="fp32", device="cpu")


def samples(n: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"sample_id": f"{i % 2:04d}-{i:06d}", "label": i % 2, "class_name": CLASSES[i % 2],
                          "sample_index": i // 2, "seed": 100 + i, "shard": 0,
                          "vector": rng.normal(size=32).astype(np.float32)} for i in range(n)])


def generate(generator, variant_dir: Path) -> tuple[pd.DataFrame, Path]:
    """One shard generated under variant_dir (images/, shards/0.parquet), as the generate rule writes it."""
    from sdi.models.generator import GenerationSettings
    from sdi.pipeline.generation import generate_shard, write_manifest

    manifest = generate_shard(samples(), generator, variant_dir, GenerationSettings(steps=2, guidance_scale=2.0),
                              batch_size=2)
    write_manifest(manifest, variant_dir / "shards" / "0.parquet")
    return manifest, variant_dir / "shards" / "0.parquet"


def test_truncated_png_fails_the_filter_naming_it_and_is_regenerated(generator, tiny_models, tmp_path):
    from sdi.pipeline.filtering import FilterError, filter_generated

    variant = tmp_path / "sei" / "v"
    manifest, shard_file = generate(generator, variant)
    assert manifest.sha256.tolist() == [sha256(p) for p in manifest.path]  # the bytes as written
    assert manifest.file_size.tolist() == [os.stat(p).st_size for p in manifest.path]
    victim, size = Path(manifest.path[1]), int(manifest.file_size[1])
    original = sha256(victim)
    others = {p: os.stat(p).st_mtime_ns for p in manifest.path if p != str(victim)}
    os.truncate(victim, 100)

    with pytest.raises(FilterError) as err:
        filter_generated(pd.read_parquet(shard_file), tiny_models["clip"], 0.5, tmp_path / "filtered", device="cpu")
    message = str(err.value)
    assert f"{victim}: expected {size} bytes" in message and "found 100 bytes" in message
    assert str(shard_file) in message and "rerun snakemake to regenerate them" in message
    assert not victim.exists() and not shard_file.exists()  # the next snakemake call reruns the shard
    assert not (tmp_path / "filtered").exists()

    again, shard_file = generate(generator, variant)  # the shard job, rerun: resumes per image
    assert sha256(victim) == original  # byte-identical
    assert {p: os.stat(p).st_mtime_ns for p in others} == others  # only the missing image was written
    assert again.sha256.tolist() == manifest.sha256.tolist()
    scored = filter_generated(pd.read_parquet(shard_file), tiny_models["clip"], 0.5, tmp_path / "filtered",
                              device="cpu")
    assert len(scored) == 4 and (tmp_path / "filtered" / "manifest.parquet").is_file()
    assert "sha256" in pd.read_parquet(tmp_path / "filtered" / "manifest.parquet").columns


def test_old_manifest_without_checksums_is_checked_by_decoding(generator, tiny_models, tmp_path):
    from sdi.io.artifacts import write_parquet
    from sdi.pipeline.filtering import FilterError, filter_generated

    manifest, shard_file = generate(generator, tmp_path / "sei" / "v")
    write_parquet(manifest.drop(columns=["sha256", "file_size"]), shard_file)  # written before the columns
    victim = Path(manifest.path[2])
    os.truncate(victim, os.stat(victim).st_size // 2)
    with pytest.raises(FilterError, match=rf"{victim}: \d+ bytes that do not decode as a full image"):
        filter_generated(pd.read_parquet(shard_file), tiny_models["clip"], 0.5, tmp_path / "filtered", device="cpu")
    assert not victim.exists() and not shard_file.exists()


def test_images_no_shard_manifest_lists_are_named_but_left_alone(tiny_models, tmp_path):
    from sdi.pipeline.filtering import FilterError, filter_generated

    paths = [write_image(tmp_path / "mine" / f"{i}.png", seed=i, size=(16, 16)) for i in range(2)]
    table = pd.DataFrame({"sample_id": ["a", "b"], "label": [0, 0], "class_name": "x", "path": [str(p) for p in paths]})
    os.truncate(paths[0], 40)
    with pytest.raises(FilterError, match=rf"(?s){paths[0]}: 40 bytes that do not decode.*left as they are"):
        filter_generated(table, tiny_models["clip"], 0.5, tmp_path / "filtered", device="cpu")
    assert paths[0].stat().st_size == 40 and paths[1].exists()


def test_export_refuses_a_changed_generated_image(generator, tmp_path):
    """The export checks the synthetic images it writes; the shard manifest is found by the layout."""
    split = small_split(tmp_path)
    manifest, shard_file = generate(generator, tmp_path / "sei" / "v")
    victim = Path(manifest.path[0])
    with open(victim, "r+b") as f:  # same size, other bytes
        f.seek(60)
        f.write(b"\xff" * 8)
    with pytest.raises(ExportError, match=rf"(?s){victim}: expected \d+ bytes .*rerun snakemake to regenerate them"):
        export_dataset(split, tmp_path / "export", generated=manifest, variant="v", pool="generated")
    assert not victim.exists() and not shard_file.exists() and not (tmp_path / "export").exists()
