"""Dataset listings: the split reruns when a dataset's files change, and only then."""

import os
import time
from pathlib import Path

import pytest

from sdi.data.readers import dataset_listing
from sdi.io.fingerprints import Listing, list_files, stat_files, write_if_changed, write_listing

from helpers import edit_config, make_medmnist, run_snakemake, write_image


def make_imagefolder(root: Path) -> Path:
    for k, (part, cls) in enumerate([(p, c) for p in ("train", "test") for c in ("cat", "dog") for _ in range(3)]):
        write_image(root / part / cls / f"{k:03d}.png", k)
    return root


def test_list_files_walks_the_tree(tmp_path):
    root = make_imagefolder(tmp_path / "if")
    (root / "train" / ".DS_Store").write_text("x")
    write_image(tmp_path / "elsewhere" / "x.png")
    os.symlink(tmp_path / "elsewhere", root / "linked")  # a symlinked folder is followed
    os.symlink(root, root / "train" / "loop")  # each real folder is visited once: no endless loop
    listing = list_files(root)
    entries = listing.entries
    names = [p for p, _, _ in entries]
    assert len(names) == 12 + 1 and "train/cat/000.png" in names and "linked/x.png" in names
    assert not any(".DS_Store" in n for n in names)
    assert names == sorted(names)
    size = (root / "train" / "cat" / "000.png").stat().st_size
    assert dict((p, s) for p, s, _ in entries)["train/cat/000.png"] == size
    assert listing.newest_ns == max([m for _, _, m in entries] + [(root / "train").stat().st_mtime_ns])
    assert stat_files(["nope.png", "train/cat/000.png"], root).entries[0][1] == -1  # missing file: size -1


def test_listing_is_rewritten_only_when_the_tree_changes(tmp_path):
    root = make_imagefolder(tmp_path / "if")
    listing = tmp_path / ".snakemake" / "sdi" / "listings" / "if.tsv"
    assert write_listing(listing, dataset_listing("imagefolder", root))
    first = listing.read_text()
    newest = dataset_listing("imagefolder", root).newest_ns
    assert listing.stat().st_mtime_ns == newest  # a new listing is as old as the tree it lists
    os.utime(listing, ns=(1, 1))
    assert not write_listing(listing, dataset_listing("imagefolder", root))  # unchanged tree: untouched
    assert listing.stat().st_mtime_ns == 1
    write_image(root / "train" / "cat" / "new.png", 99)  # an image added deep inside a class folder
    assert write_listing(listing, dataset_listing("imagefolder", root))
    assert listing.stat().st_mtime_ns > newest and "train/cat/new.png" in listing.read_text()
    target = root / "test" / "dog" / "011.png"  # replaced by a file of the same size
    data = target.read_bytes()
    time.sleep(0.01)
    target.write_bytes(data)
    assert write_listing(listing, dataset_listing("imagefolder", root))
    (root / "train" / "cat" / "new.png").unlink()
    assert write_listing(listing, dataset_listing("imagefolder", root))
    assert listing.read_text() != first  # 011.png has a new mtime
    assert not list(listing.parent.glob(".*tmp*"))  # written atomically
    assert write_if_changed(tmp_path / "generic.txt", "any text") and not write_if_changed(tmp_path / "generic.txt",
                                                                                             "any text")


def test_listing_of_a_table_names_the_lists_and_their_images(tmp_path):
    root = tmp_path / "imagenet"
    write_image(root / "train" / "n1" / "a.JPEG")
    write_image(root / "val" / "n1" / "b.JPEG")
    write_image(root / "train" / "n2" / "unlisted.JPEG")
    (root / "train.csv").write_text("path,class_name\ntrain/n1/a.JPEG,tench\n")
    (root / "test.csv").write_text("path,class_name\nval/n1/b.JPEG,tench\n")
    text = dataset_listing("table", root, options={"files": {"train": "train.csv", "test": "test.csv"}}).text()
    assert [line.split("\t")[0] for line in text.splitlines()[1:]] == [
        "test.csv", "train.csv", "train/n1/a.JPEG", "val/n1/b.JPEG"]


def test_listing_format():
    assert Listing([("a b/c.png", 3, 7)], 7).text() == "path\tsize\tmtime_ns\na b/c.png\t3\t7\n"


@pytest.mark.workflow
def test_adding_an_image_reruns_the_split(workflow, tmp_path):
    root = make_imagefolder(tmp_path / "pets")
    edit_config(workflow, datasets={"pets": {"format": "imagefolder", "root": str(root)}})
    run_snakemake(workflow, "--cores", "1", "results/pets/split")
    parts = sorted(p.name for p in (workflow / "results" / "pets" / "split").glob("*.parquet"))
    assert parts == ["test.parquet", "train.parquet", "val.parquet"]
    proc = run_snakemake(workflow, "-n", "--cores", "1", "results/pets/split")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    (workflow / ".snakemake" / "sdi" / "listings" / "pets.tsv").unlink()  # a lost listing reruns nothing
    proc = run_snakemake(workflow, "-n", "--cores", "1", "results/pets/split")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    write_image(root / "train" / "cat" / "added.png", 42)
    proc = run_snakemake(workflow, "-n", "--cores", "1", "results/pets/split")
    out = proc.stdout + proc.stderr
    assert "rule split" in out and "Nothing to be done" not in out, out[-3000:]
    assert ".snakemake/sdi/listings/pets.tsv" in out  # the reason: the listing changed


@pytest.mark.workflow
def test_medmnist_runs_through_its_png_rule(workflow, tmp_path):
    import pandas as pd

    root = make_medmnist(tmp_path / "medmnist")
    edit_config(workflow, datasets={"pm": {"format": "medmnist", "root": str(root), "flag": "pathmnist"}})
    edit_config(workflow, split={"val_source": "official"})
    proc = run_snakemake(workflow, "--cores", "2", "results/pm/split")
    assert "medmnist_images" in proc.stdout + proc.stderr
    split = workflow / "results" / "pm" / "split"
    counts = {s: len(pd.read_parquet(split / f"{s}.parquet")) for s in ("train", "val", "test")}
    assert counts == {"train": 18, "val": 9, "test": 9}
    train = pd.read_parquet(split / "train.parquet")
    assert train.class_name.iloc[0] == "adipose" and train.path.str.startswith("results/pm/images/train/").all()
    edit_config(workflow, datasets={"pm": {"format": "medmnist", "root": str(root), "flag": "pathmnist", "size": 64}})
    proc = run_snakemake(workflow, "-n", "--cores", "1", "results/pm/split", check=False)
    assert proc.returncode != 0 and "holds no pathmnist_64.npz" in proc.stdout + proc.stderr
