"""The official releases, read from small fixtures written in each release's exact layout
(scipy.io.savemat for .mat files, np.savez for .npz), with the real readers."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io as sio
import yaml
from PIL import Image

from sdi.config.validation import schema_errors
from sdi.data.readers import read_dataset
from sdi.data.readers.base import DatasetError, check_images, class_name_from_folder
from sdi.data.readers.flowers102 import flowers102_classes
from sdi.data.readers.imagefolder import read_imagefolder
from sdi.data.readers.medmnist import MEDMNIST_LABELS, npz_path, write_medmnist_images
from sdi.data.split import make_split

from helpers import make_medmnist, tree_digest, write_image

REPO = Path(__file__).resolve().parents[1]


def _lines(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


# --- Fixture writers: each release's own layout -------------------------------------------


def make_flowers(root: Path) -> Path:
    """102 classes: image k (1-based) has class ((k-1) % 102) + 1; trnid = the first 102
    images (one per class), valid = 103..106, tstid = 107..112."""
    labels = np.array([(k - 1) % 102 + 1 for k in range(1, 113)], dtype=np.uint8)
    for k in range(1, 113):
        write_image(root / "jpg" / f"image_{k:05d}.jpg", k, size=(8, 8))
    sio.savemat(root / "imagelabels.mat", {"labels": labels[None, :]})
    sio.savemat(root / "setid.mat", {"trnid": np.arange(1, 103)[None, :], "valid": np.arange(103, 107)[None, :],
                                     "tstid": np.arange(107, 113)[None, :]})
    return root


def make_pets(root: Path) -> Path:
    breeds = [("Abyssinian", 1, 1), ("american_bulldog", 2, 2), ("american_pit_bull_terrier", 2, 3)]
    per = {"trainval": 3, "test": 2}
    n = 0
    for split, count in per.items():
        lines = []
        for cid, (breed, species, breed_id) in enumerate(breeds, 1):
            for _ in range(count):
                n += 1
                lines.append(f"{breed}_{n} {cid} {species} {breed_id}")
                write_image(root / "images" / f"{breed}_{n}.jpg", n)
        _lines(root / "annotations" / f"{split}.txt", lines)
    return root


CARS = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi TT RS Coupe 2012"]


def _annotations(items) -> np.ndarray:
    dtype = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    return np.array([(1, 1, 5, 5, cid, fname) for fname, cid in items], dtype=dtype)


def make_cars(root: Path, test_classes=(1, 2, 3)) -> Path:
    (root / "devkit").mkdir(parents=True)
    sio.savemat(root / "devkit" / "cars_meta.mat", {"class_names": np.array(CARS, dtype=object)[None, :]})
    train = [(f"{k:05d}.jpg", (k - 1) % 3 + 1) for k in range(1, 8)]  # classes 1, 2, 3, 1, 2, 3, 1
    test = [(f"{k:05d}.jpg", c) for k, c in enumerate(test_classes, 1)]
    sio.savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": _annotations(train)})
    sio.savemat(root / "cars_test_annos_withlabels.mat", {"annotations": _annotations(test)})
    for fname, _ in train:
        write_image(root / "cars_train" / fname, hash(fname) % 1000)
    for fname, _ in test:
        write_image(root / "cars_test" / fname, hash(fname) % 997)
    return root


def make_dtd(root: Path) -> Path:
    """Partition 1: 2 train / 1 val / 1 test per class; partition 2: 1 / 1 / 2."""
    classes = ["banded", "chequered", "polka-dotted"]
    for cls in classes:
        for k in range(4):
            write_image(root / "images" / cls / f"{cls}_{k:04d}.jpg", k)
    for p, (n_train, n_val) in ((1, (2, 1)), (2, (1, 1))):
        for split, lo, hi in (("train", 0, n_train), ("val", n_train, n_train + n_val), ("test", n_train + n_val, 4)):
            _lines(root / "labels" / f"{split}{p}.txt",
                   [f"{cls}/{cls}_{k:04d}.jpg" for cls in classes for k in range(lo, hi)])
    return root


def make_aircraft(root: Path) -> Path:
    data = root / "data"
    variants = ["707-320", "A300B4", "F-16A/B"]
    _lines(data / "variants.txt", variants)
    trainval = [(1000001 + k, variants[k % 3]) for k in range(6)]
    test = [(2000001 + k, variants[k % 3]) for k in range(3)]
    _lines(data / "images_variant_trainval.txt", [f"{i:07d} {v}" for i, v in trainval])
    _lines(data / "images_variant_test.txt", [f"{i:07d} {v}" for i, v in test])
    for i, _ in trainval + test:
        write_image(data / "images" / f"{i:07d}.jpg", i % 1000)
    return root


def make_caltech(root: Path) -> Path:
    cats = root / "101_ObjectCategories"
    for cls, n in (("Faces_easy", 6), ("accordion", 5), ("dalmatian", 7), ("BACKGROUND_Google", 4)):
        for k in range(1, n + 1):
            write_image(cats / cls / f"image_{k:04d}.jpg", k)
    return root


# --- Readers: counts per split, class names, labels -----------------------------------------


def test_flowers102(tmp_path):
    root = make_flowers(tmp_path / "flowers-102")
    table = read_dataset("flowers102", root, allow_missing_test_classes=True)  # 6 test images for 102 classes
    assert table.subset.value_counts().to_dict() == {"train": 102, "val": 4, "test": 6}
    assert len(flowers102_classes()) == 102 and table.label.nunique() == 102
    first = table[table.image_id == "image_00001"].iloc[0]
    assert (first.label, first.class_name, first.subset) == (0, "pink primrose", "train")
    assert table.set_index("image_id").loc["image_00103"].class_name == "pink primrose"  # (103-1) % 102 + 1 = 1
    assert table.set_index("image_id").loc["image_00102"].class_name == flowers102_classes()[101]
    # torchvision's download root (holding flowers-102/) is accepted too
    pd.testing.assert_frame_equal(read_dataset("flowers102", tmp_path, allow_missing_test_classes=True), table)


def test_oxford_pets(tmp_path):
    table = read_dataset("oxford_pets", make_pets(tmp_path / "pets"))
    assert table.subset.value_counts().to_dict() == {"train": 9, "test": 6}
    assert table.groupby("label").class_name.first().to_dict() == {
        0: "Abyssinian", 1: "american bulldog", 2: "american pit bull terrier"}
    assert table.set_index("image_id").loc["american_bulldog_4"].label == 1
    check_images(table)


def test_stanford_cars(tmp_path):
    table = read_dataset("stanford_cars", make_cars(tmp_path / "stanford_cars"))
    assert table.subset.value_counts().to_dict() == {"train": 7, "test": 3}
    assert table.groupby("label").class_name.first().tolist() == CARS
    assert table[table.subset == "train"].groupby("label").size().tolist() == [3, 2, 2]
    assert table.set_index("image_id").loc["cars_test/00002.jpg"].label == 1
    pd.testing.assert_frame_equal(read_dataset("stanford_cars", tmp_path), table)  # download root


def test_dtd_partitions(tmp_path):
    root = make_dtd(tmp_path / "dtd")
    one = read_dataset("dtd", root)  # partition 1 by default
    assert one.subset.value_counts().to_dict() == {"train": 6, "val": 3, "test": 3}
    assert one.groupby("label").class_name.first().tolist() == ["banded", "chequered", "polka-dotted"]
    two = read_dataset("dtd", tmp_path, options={"partition": 2})  # download root: dtd/ holding images/, labels/
    assert two.subset.value_counts().to_dict() == {"train": 3, "val": 3, "test": 6}
    with pytest.raises(DatasetError, match=r"\.partition: 11 must be an integer 1..10"):
        read_dataset("dtd", root, "config.datasets.dtd.root", {"partition": 11})


def test_fgvc_aircraft(tmp_path):
    table = read_dataset("fgvc_aircraft", make_aircraft(tmp_path / "fgvc-aircraft-2013b"))
    assert table.subset.value_counts().to_dict() == {"train": 6, "test": 3}
    assert table.groupby("label").class_name.first().tolist() == ["707-320", "A300B4", "F-16A/B"]
    assert table.set_index("image_id").loc["2000003"].class_name == "F-16A/B"
    assert len(read_dataset("fgvc_aircraft", tmp_path)) == 9


def test_caltech101_seeded_split(tmp_path):
    make_caltech(tmp_path / "caltech101")
    table = read_dataset("caltech101", tmp_path, options={"train_per_class": 4}, seed=0)
    assert table.class_name.unique().tolist() == ["Faces easy", "accordion", "dalmatian"]  # no BACKGROUND_Google
    assert table[table.subset == "train"].groupby("label").size().tolist() == [4, 4, 4]
    assert table[table.subset == "test"].groupby("label").size().tolist() == [2, 1, 3]
    again = read_dataset("caltech101", tmp_path / "caltech101", options={"train_per_class": 4}, seed=0)
    pd.testing.assert_frame_equal(again, table)
    other = read_dataset("caltech101", tmp_path, options={"train_per_class": 4}, seed=1)
    assert set(other[other.subset == "train"].image_id) != set(table[table.subset == "train"].image_id)
    with pytest.raises(DatasetError, match=r"accordion: 5 image\(s\), but .*train_per_class is 5"):
        read_dataset("caltech101", tmp_path, options={"train_per_class": 5})


@pytest.mark.parametrize("flag,compressed", [("pathmnist", True), ("breastmnist", False)])
def test_medmnist_npz_to_png(tmp_path, flag, compressed):
    root = make_medmnist(tmp_path / "medmnist", flag=flag, compressed=compressed)
    npz = npz_path(root, flag, 28)
    out = tmp_path / "results" / "pm" / "images"
    index = write_medmnist_images(npz, out, flag, 28, threads=2)
    assert index.subset.value_counts().to_dict() == {"train": 18, "val": 9, "test": 9}
    assert sorted(p.name for p in out.iterdir()) == ["index.csv", "test", "train", "val"]
    table = read_dataset("medmnist", out, options={"flag": flag, "size": 28})
    n = len(MEDMNIST_LABELS[flag])
    assert table.groupby("label").class_name.first().tolist() == MEDMNIST_LABELS[flag]
    assert table[table.subset == "train"].label.tolist()[:n] == list(range(n))
    with np.load(npz) as data:  # the PNG holds the array's pixels
        row = table.set_index("image_id").loc["test/000004"]
        assert np.array_equal(np.asarray(Image.open(row.path)), data["test_images"][4])
        assert row.label == int(data["test_labels"][4, 0])
    assert not list(tmp_path.glob("results/pm/.images.tmp*"))
    check_images(table)


def test_medmnist_labels_match_the_package():
    assert MEDMNIST_LABELS["pathmnist"] == [
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
        "cancer-associated stroma", "colorectal adenocarcinoma epithelium"]
    assert len(MEDMNIST_LABELS) == 12  # every 2D flag of MedMNIST v2 / v3


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_medmnist_arrays_are_read_in_blocks(tmp_path, save):
    from sdi.data.readers.medmnist import _iter_rows

    images = np.random.default_rng(0).integers(0, 255, (37, 28, 28, 3), dtype=np.uint8)
    save(tmp_path / "x.npz", train_images=images)
    blocks = list(_iter_rows(tmp_path / "x.npz", "train_images", block_bytes=28 * 28 * 3 * 10))
    assert len(blocks) == 4 and np.array_equal(np.concatenate(blocks), images)


def test_medmnist_sizes(tmp_path):
    root = make_medmnist(tmp_path / "m", size=64, counts=(9, 9, 9))
    assert npz_path(root, "pathmnist", 64).name == "pathmnist_64.npz"
    with pytest.raises(DatasetError, match=r"holds no pathmnist.npz or pathmnist_28.npz"):
        npz_path(root, "pathmnist", 28)
    with pytest.raises(DatasetError, match=r"are 64 x 64, but .*size is 28; set it to 64"):
        write_medmnist_images(root / "pathmnist_64.npz", tmp_path / "out", "pathmnist", 28)
    with pytest.raises(DatasetError, match="multi-label"):
        npz_path(root, "chestmnist", 28, "config.datasets.x.root")


# --- Table: file lists -----------------------------------------------------------------------


def _imagenet_like(root: Path) -> list[dict]:
    rows = []
    for label, (wnid, word) in enumerate([("n01440764", "tench"), ("n01443537", "goldfish")]):
        for split, n in (("train", 3), ("val", 2)):
            for k in range(n):
                rel = f"{split}/{wnid}/{wnid}_{k}.JPEG"
                write_image(root / rel, k)
                rows.append({"image_file": rel, "label": label, "word": word, "split": split})
    return rows


def test_table_reads_the_reference_json_lists(tmp_path):
    root = tmp_path / "imagenet"
    rows = _imagenet_like(root)
    for split, name in (("train", "train_100.json"), ("val", "val_100.json")):
        (root / name).write_text(json.dumps([{k: r[k] for k in ("image_file", "label", "word")}
                                             for r in rows if r["split"] == split]))
    options = {"files": {"train": "train_100.json", "test": "val_100.json"},
               "columns": {"path": "image_file", "label": "label", "class_name": "word"}}
    table = read_dataset("table", root, options=options)
    assert table.subset.value_counts().to_dict() == {"train": 6, "test": 4}
    assert table.groupby("label").class_name.first().to_dict() == {0: "tench", 1: "goldfish"}
    assert table.image_id.iloc[0] == "train/n01440764/n01440764_0.JPEG"
    check_images(table)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_table_formats_and_derived_labels(tmp_path, suffix):
    root = tmp_path / "data"
    rows = pd.DataFrame(_imagenet_like(root)).rename(columns={"image_file": "path", "word": "class_name"})
    files = {}
    for split, subset in (("train", "train"), ("val", "test")):
        part = rows[rows["split"] == split][["path", "class_name"]]  # no label column: derived from names
        path = root / f"{subset}{suffix}"
        if suffix == ".parquet":
            part.to_parquet(path)
        elif suffix == ".jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in part.to_dict("records")))
        else:
            part.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
        files[subset] = path.name
    table = read_dataset("table", root, options={"files": files})
    assert table.groupby("label").class_name.first().to_dict() == {0: "goldfish", 1: "tench"}  # sorted names
    assert table.subset.value_counts().to_dict() == {"train": 6, "test": 4}


def test_table_with_labels_only_and_official_val(tmp_path):
    root = tmp_path / "data"
    rows = _imagenet_like(root)

    def write(name, picks):
        pd.DataFrame([rows[i] for i in picks]).to_csv(root / name, index=False, columns=["image_file", "label"])

    write("train.csv", [0, 2, 5, 7])
    write("val.csv", [1, 6])
    write("test.csv", [3, 8, 0])  # rows[0] is in train too
    files = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}
    with pytest.raises(DatasetError, match=r"(?s)1 path\(s\) listed more than once.*n01440764_0.JPEG \(.*test.csv"):
        read_dataset("table", root, options={"files": files, "columns": {"path": "image_file"}})
    write("test.csv", [3, 8])
    table = read_dataset("table", root, options={"files": files, "columns": {"path": "image_file"}})
    assert table.groupby("label").class_name.first().to_dict() == {0: "0", 1: "1"}
    assert table.subset.value_counts().to_dict() == {"train": 4, "val": 2, "test": 2}
    parts = make_split(table, 0.5, 0, val_source="official")
    assert sorted(parts["val"].image_id) == sorted([rows[1]["image_file"], rows[6]["image_file"]])


# --- ImageFolder additions ---------------------------------------------------------------------


def test_class_name_drops_leading_numbers():
    assert class_name_from_folder("001_AM_General_Hummer_SUV_2000") == "AM General Hummer SUV 2000"
    assert class_name_from_folder("001.Black_footed_Albatross") == "Black footed Albatross"
    assert class_name_from_folder("St.Bernard") == "St.Bernard"
    assert class_name_from_folder("n01440764") == "n01440764"


@pytest.mark.parametrize("mapping", ["names.json", "names.csv", "LOC_synset_mapping.txt", "index.json"])
def test_imagefolder_dirs_and_class_names(tmp_path, mapping):
    root = tmp_path / "in100"
    for wnid in ("n01440764", "n01443537"):
        for part, n in (("train", 2), ("val", 1)):
            for k in range(n):
                write_image(root / part / wnid / f"{k}.JPEG", k)
    words = {"n01440764": "tench", "n01443537": "goldfish", "n99999999": "unused"}
    if mapping == "names.json":
        (root / mapping).write_text(json.dumps(words))
    elif mapping == "index.json":  # imagenet_class_index.json: {"0": [wnid, name]}
        (root / mapping).write_text(json.dumps({str(i): [w, n] for i, (w, n) in enumerate(words.items())}))
    elif mapping == "names.csv":
        _lines(root / mapping, ["wnid,name", *(f"{w},{n}" for w, n in words.items())])
    else:
        _lines(root / mapping, [f"{w} {n}, Tinca tinca" for w, n in words.items()])
    table = read_dataset("imagefolder", root, options={"train_dir": "train", "test_dir": "val", "class_names": mapping})
    assert table.groupby("label").class_name.first().tolist() == ["tench", "goldfish"]
    assert table.subset.value_counts().to_dict() == {"train": 4, "test": 2}
    if mapping == "names.json":
        (root / mapping).write_text(json.dumps({"n01440764": "tench"}))
        with pytest.raises(DatasetError, match=r"(?s)\.class_names: .* no name for 1 class folder.*n01443537"):
            read_imagefolder(root, "config.datasets.in100.root", test_dir="val", class_names=mapping)


# --- Bad input: each error names the file and the fix ------------------------------------------


def test_missing_metadata_file_and_mat_field(tmp_path):
    root = make_flowers(tmp_path / "flowers")
    (root / "setid.mat").rename(tmp_path / "setid.mat")
    with pytest.raises(DatasetError, match=r"metadata file .*setid.mat does not exist"):
        read_dataset("flowers102", root)
    sio.savemat(root / "setid.mat", {"trnid": np.arange(1, 103), "tstid": np.arange(103, 113)})
    with pytest.raises(DatasetError, match=r"setid.mat: no field valid \(fields: trnid, tstid\)"):
        read_dataset("flowers102", root)
    cars = make_cars(tmp_path / "cars")
    sio.savemat(cars / "cars_test_annos_withlabels.mat", {"annotations": np.array(
        [(1, "00001.jpg")], dtype=[("bbox_x1", "O"), ("fname", "O")])})
    with pytest.raises(DatasetError, match=r"withlabels.mat: the annotations struct has no field class"):
        read_dataset("stanford_cars", cars)


def test_not_a_release_folder_names_the_key(tmp_path):
    with pytest.raises(DatasetError, match=r"config.datasets.pets.root: .* is not a Oxford-IIIT Pet folder"):
        read_dataset("oxford_pets", tmp_path, "config.datasets.pets.root")
    with pytest.raises(DatasetError, match=r"config.datasets.pets.root: folder .* does not exist"):
        read_dataset("oxford_pets", tmp_path / "nope", "config.datasets.pets.root")


def test_listed_image_absent(tmp_path):
    root = make_pets(tmp_path / "pets")
    (root / "images" / "american_bulldog_4.jpg").unlink()
    with pytest.raises(DatasetError, match=r"(?s)1 image\(s\) listed in .*annotations do not exist.*bulldog_4"):
        read_dataset("oxford_pets", root)
    air = make_aircraft(tmp_path / "air")
    (air / "data" / "images" / "2000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"listed in .*images_variant_test.txt do not exist"):
        read_dataset("fgvc_aircraft", air)


def test_label_out_of_range(tmp_path):
    root = make_flowers(tmp_path / "flowers")
    labels = sio.loadmat(root / "imagelabels.mat")["labels"]
    labels[0, 5] = 103
    sio.savemat(root / "imagelabels.mat", {"labels": labels})
    with pytest.raises(DatasetError, match=r"(?s)imagelabels.mat: labels must be 1..102 .*image 6: label 103"):
        read_dataset("flowers102", root)
    with pytest.raises(DatasetError, match=r"cars_test_annos_withlabels.mat: annotation 2 \(00002.jpg\) has class 4"):
        read_dataset("stanford_cars", make_cars(tmp_path / "cars", test_classes=(1, 4)))
    pets = make_pets(tmp_path / "pets")
    test_txt = pets / "annotations" / "test.txt"
    original = test_txt.read_text()
    test_txt.write_text(original.replace("american_bulldog_12 2", "american_bulldog_12 7"))
    with pytest.raises(DatasetError, match=r"test.txt:3: 'american bulldog' has class id 7 here but 2 at .*trainval"):
        read_dataset("oxford_pets", pets)
    write_image(pets / "images" / "zebra_cat_99.jpg")
    test_txt.write_text(original + "zebra_cat_99 40 1 1\n")
    with pytest.raises(DatasetError, match=r"(?s)class ids must be 1..4 .*test.txt:7: class id 40"):
        read_dataset("oxford_pets", pets)
    med = make_medmnist(tmp_path / "med")
    with np.load(med / "pathmnist.npz") as data:
        arrays = dict(data)
    arrays["val_labels"][2, 0] = 9
    np.savez(med / "pathmnist.npz", **arrays)
    with pytest.raises(DatasetError, match=r"pathmnist.npz: val_labels must be 0..8 .*image 2 has 9"):
        write_medmnist_images(med / "pathmnist.npz", tmp_path / "out", "pathmnist")
    assert not (tmp_path / "out").exists()


def test_class_in_test_but_not_in_train(tmp_path):
    root = make_dtd(tmp_path / "dtd")
    write_image(root / "images" / "zigzagged" / "zigzagged_0001.jpg")
    with open(root / "labels" / "test1.txt", "a") as f:
        f.write("zigzagged/zigzagged_0001.jpg\n")
    with pytest.raises(DatasetError, match=r"no training images: zigzagged \(label 3\)"):
        read_dataset("dtd", root)


def test_npz_missing_array(tmp_path):
    root = make_medmnist(tmp_path / "med", drop="val_labels")
    with pytest.raises(DatasetError, match=r"pathmnist.npz: no array val_labels \(arrays: "):
        write_medmnist_images(root / "pathmnist.npz", tmp_path / "out", "pathmnist")


def test_table_column_missing_and_duplicates(tmp_path):
    root = tmp_path / "data"
    rows = _imagenet_like(root)
    (root / "train.json").write_text(json.dumps(rows[:3] + rows[5:8]))
    (root / "test.json").write_text(json.dumps(rows[3:5] + rows[8:]))
    files = {"train": "train.json", "test": "test.json"}
    with pytest.raises(DatasetError, match=r"train.json: no column 'lbl' .*set config.datasets.t.columns.label"):
        read_dataset("table", root, "config.datasets.t.root", {"files": files,
                                                                "columns": {"path": "image_file", "label": "lbl"}})
    with pytest.raises(DatasetError, match=r"train.json: no column 'path' .*columns.path"):
        read_dataset("table", root, "config.datasets.t.root", {"files": files})
    (root / "test.json").write_text(json.dumps(rows[3:5] + rows[8:] + rows[3:4]))
    with pytest.raises(DatasetError, match=r"1 path\(s\) listed more than once"):
        read_dataset("table", root, options={"files": files, "columns": {"path": "image_file"}})
    (root / "test.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(DatasetError, match=r"test.json: expected a list of rows"):
        read_dataset("table", root, options={"files": files, "columns": {"path": "image_file"}})


# --- Splits and the folder contract ---------------------------------------------------------


def test_official_val_only_on_request(tmp_path):
    table = read_dataset("flowers102", make_flowers(tmp_path / "flowers"), allow_missing_test_classes=True)
    official = make_split(table, 0.2, 0, val_source="official")
    assert [len(official[s]) for s in ("train", "val", "test")] == [102, 4, 6]
    carved = make_split(table, 0.5, 0, val_source="train")  # the release's val counts as training
    assert len(carved["train"]) + len(carved["val"]) == 106 and len(carved["test"]) == 6
    reference = make_split(table, 0.2, 0, val_source="test")
    assert len(reference["train"]) == 106
    pets = read_dataset("oxford_pets", make_pets(tmp_path / "pets"))
    with pytest.raises(DatasetError, match=r"config.split.val_source: 'official', but .* no validation split"):
        make_split(pets, 0.2, 0, val_source="official")


def test_release_folders_are_never_written(tmp_path):
    makers = {"flowers102": make_flowers, "oxford_pets": make_pets, "stanford_cars": make_cars, "dtd": make_dtd,
              "fgvc_aircraft": make_aircraft, "caltech101": make_caltech}
    for fmt, make in makers.items():
        root = make(tmp_path / fmt)
        before = tree_digest(root)
        table = read_dataset(fmt, root, options={"train_per_class": 3} if fmt == "caltech101" else None,
                             allow_missing_test_classes=fmt == "flowers102")  # its fixture tests 6 of 102 classes
        check_images(table)
        make_split(table, 0.3, 0)
        assert tree_digest(root) == before, fmt
    med = make_medmnist(tmp_path / "med")
    before = tree_digest(med)
    write_medmnist_images(med / "pathmnist.npz", tmp_path / "out", "pathmnist")
    assert tree_digest(med) == before


# --- Config: every format validates with root: null; unknown keys are named ---------------------


def _schema_errors(datasets: dict) -> list[str]:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"] = datasets
    return schema_errors(config, yaml.safe_load((REPO / "config" / "schema.yaml").read_text()))


def test_paper_style_entries_validate_and_unknown_keys_are_named():
    entries = {
        "cub": {"format": "cub", "root": None},
        "flowers": {"format": "flowers102", "root": None},
        "cars": {"format": "stanford_cars", "root": None},
        "pets": {"format": "oxford_pets", "root": None},
        "dtd": {"format": "dtd", "root": None, "partition": 1},
        "aircraft": {"format": "fgvc_aircraft", "root": None},
        "caltech": {"format": "caltech101", "root": None, "train_per_class": 30},
        "pathmnist": {"format": "medmnist", "root": None, "flag": "pathmnist", "size": 28},
        "in100s": {"format": "table", "root": None, "files": {"train": "train_100.json", "test": "val_100.json"},
                   "columns": {"path": "image_file", "label": "label", "class_name": "word"}},
        "pets_if": {"format": "imagefolder", "root": None, "train_dir": "trainval", "test_dir": "test",
                    "class_names": None},
    }
    assert _schema_errors(entries) == []
    errors = _schema_errors({"flowers": {"format": "flowers102", "root": None, "partition": 2},
                             "dtd": {"format": "dtd", "root": None, "flag": "pathmnist"},
                             "in": {"format": "table", "root": None, "files": {"train": "a", "test": "b"},
                                    "columns": {"word": "word"}}})
    assert "config.datasets.flowers.partition: unknown key; allowed keys here: format, root" in errors
    assert "config.datasets.dtd.flag: unknown key; allowed keys here: format, partition, root" in errors
    assert any(e.startswith("config.datasets.in.columns.word: unknown key") for e in errors)


def test_schema_defaults_match_the_readers():
    import inspect

    from sdi.data.readers import FORMATS

    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())["definitions"]
    readers = {f"dataset_{fmt}": FORMATS[fmt].read for fmt in ("imagefolder", "dtd", "caltech101", "medmnist")}
    for definition, reader in readers.items():
        params = inspect.signature(reader).parameters
        for key, spec in schema[definition]["properties"].items():
            if isinstance(spec, dict) and "default" in spec:
                assert params[key].default == spec["default"], (definition, key)
