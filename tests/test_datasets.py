from pathlib import Path

import pandas as pd
import pytest

from sdi.data.readers import read_dataset
from sdi.data.readers.base import DatasetError, check_images, class_name_from_folder
from sdi.data.readers.cub import read_cub
from sdi.data.readers.imagefolder import read_imagefolder
from sdi.data.split import make_split
from sdi.io.images import load_rgb

from helpers import tree_digest, write_image

MODES = ["RGB", "L", "RGBA", "CMYK", "P", "LA"]


def _named(path: Path, mode: str) -> Path:
    """JPEG for the modes JPEG holds (CMYK, L), PNG for the others."""
    return path.with_suffix(".jpg" if mode in ("CMYK", "L") else ".png")


def make_cub(root: Path, n_train=(5, 7, 3), n_test=(2, 2, 2)) -> Path:
    """A CUB_200_2011-style folder with images in several modes."""
    classes = [f"{i + 1:03d}.Class_{c}_Bird" for i, c in enumerate("ABC")]
    images, labels, split = [], [], []
    k = 0
    for ci, cls in enumerate(classes):
        for j in range(n_train[ci] + n_test[ci]):
            k += 1
            mode = MODES[k % len(MODES)]
            rel = f"{cls}/img_{k:03d}"
            write_image(_named(root / "images" / rel, mode), k, (24, 20), mode)
            rel += ".jpg" if mode in ("CMYK", "L") else ".png"
            images.append(f"{k} {rel}")
            labels.append(f"{k} {ci + 1}")
            split.append(f"{k} {int(j < n_train[ci])}")
    (root / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    return root


def make_imagefolder(root: Path, n_train=(4, 6), n_test=(3, 1)) -> Path:
    k = 0
    for ci, cls in enumerate(["golden_retriever", "tabby_cat"]):
        for part, n in (("train", n_train[ci]), ("test", n_test[ci])):
            for _ in range(n):
                k += 1
                write_image(_named(root / part / cls / f"{k:03d}", MODES[k % len(MODES)]), k, (24, 20),
                            MODES[k % len(MODES)])
    return root


def test_class_names():
    assert class_name_from_folder("001.Black_footed_Albatross") == "Black footed Albatross"
    assert class_name_from_folder("golden_retriever") == "golden retriever"
    assert class_name_from_folder("St.Bernard") == "St.Bernard"


def test_cub_reader_counts_and_names(tmp_path):
    table = read_cub(make_cub(tmp_path / "cub"))
    assert len(table) == 21 and (table.subset == "train").sum() == 15
    assert sorted(table.class_name.unique()) == ["Class A Bird", "Class B Bird", "Class C Bird"]
    assert table.groupby("label").class_name.nunique().eq(1).all()
    assert (table[table.label == 1].subset == "train").sum() == 7
    check_images(table)  # every mode decodes


def test_odd_modes_become_rgb(tmp_path):
    root = make_cub(tmp_path / "cub")
    table = read_cub(root)
    for path in table.path:
        img = load_rgb(path)
        assert img.mode == "RGB" and img.size == (24, 20)


def test_split_is_stratified_deterministic_and_disjoint(tmp_path):
    table = read_cub(make_cub(tmp_path / "cub"))
    parts = make_split(table, val_fraction=0.3, seed=1)
    assert len(parts["train"]) + len(parts["val"]) == 15 and len(parts["test"]) == 6
    # round(n * 0.3) per class, at most n - 1: classes of 5, 7, 3 -> 2, 2, 1 in validation
    assert parts["val"].groupby("label").size().to_dict() == {0: 2, 1: 2, 2: 1}
    assert not set(parts["train"].image_id) & set(parts["val"].image_id)
    again = make_split(table, val_fraction=0.3, seed=1)
    for name in parts:
        pd.testing.assert_frame_equal(parts[name], again[name])
    other = make_split(table, val_fraction=0.3, seed=2)
    assert set(other["val"].image_id) != set(parts["val"].image_id)
    assert list(parts["train"].columns) == ["image_id", "path", "label", "class_name"]


def test_single_image_class_stays_in_train(tmp_path):
    table = read_cub(make_cub(tmp_path / "cub", n_train=(1, 4, 2)))
    parts = make_split(table, val_fraction=0.5, seed=0)
    assert (parts["train"].label == 0).sum() == 1 and (parts["val"].label == 0).sum() == 0


def test_reference_protocol_uses_test_as_validation(tmp_path):
    table = read_cub(make_cub(tmp_path / "cub"))
    parts = make_split(table, val_fraction=0.3, seed=0, val_source="test")
    pd.testing.assert_frame_equal(parts["val"], parts["test"])
    assert len(parts["train"]) == 15


def test_imagefolder_reader(tmp_path):
    table = read_dataset("imagefolder", make_imagefolder(tmp_path / "if"))
    assert len(table) == 14 and (table.subset == "train").sum() == 10
    assert table.groupby("class_name").label.first().to_dict() == {"golden retriever": 0, "tabby cat": 1}
    check_images(table)


def test_bad_files_are_all_reported_by_name(tmp_path):
    root = make_cub(tmp_path / "cub")
    table = read_cub(root)
    paths = table.path.tolist()
    Path(paths[0]).write_bytes(b"this is not an image")
    data = Path(paths[3]).read_bytes()
    Path(paths[3]).write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(DatasetError) as err:
        check_images(table)
    message = str(err.value)
    assert "2 unusable image file(s)" in message
    assert paths[0] in message and paths[3] in message
    assert paths[1] not in message


def test_empty_class_is_an_error(tmp_path):
    root = make_cub(tmp_path / "cub", n_train=(3, 0, 2), n_test=(1, 2, 1))
    with pytest.raises(DatasetError, match=r"no training images: Class B Bird \(label 1\)"):
        read_cub(root)


def test_label_folder_mismatch_is_listed(tmp_path):
    root = make_cub(tmp_path / "cub")
    lines = (root / "image_class_labels.txt").read_text().splitlines()
    lines[0] = "1 2"  # image 1 sits in the folder of class 1
    lines[9] = "10 7"  # class 7 does not exist
    (root / "image_class_labels.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as err:
        read_cub(root)
    assert "img_001." in str(err.value) and "001.Class_A_Bird" in str(err.value)
    assert "class id 7 is not in classes.txt" in str(err.value)


def test_cub_duplicate_ids_name_both_lines(tmp_path):
    root = make_cub(tmp_path / "cub")
    split = root / "train_test_split.txt"
    split.write_text(split.read_text() + "1 0\n")  # image 1 again, now as test
    with pytest.raises(DatasetError, match=r"split.txt:1 and .*train_test_split.txt:22: id 1 is listed twice"):
        read_cub(root)
    make_cub(tmp_path / "cub2")
    images = tmp_path / "cub2" / "images.txt"
    images.write_text(images.read_text() + "3 001.Class_A_Bird/img_001.png\n")
    with pytest.raises(DatasetError, match=r"images.txt:3 and .*images.txt:22: id 3 is listed twice"):
        read_cub(tmp_path / "cub2")


def test_cub_image_listed_but_absent(tmp_path):
    root = make_cub(tmp_path / "cub")
    victim = read_cub(root).path.iloc[4]
    Path(victim).unlink()
    with pytest.raises(DatasetError, match=r"(?s)1 image\(s\) listed in .*images.txt do not exist.*" + victim[-11:]):
        read_cub(root)


def test_imagefolder_test_class_not_in_train(tmp_path):
    root = make_imagefolder(tmp_path / "if")
    write_image(root / "test" / "zebra" / "x.png", 0, (24, 20))
    with pytest.raises(DatasetError, match="zebra: class folder not present in train"):
        read_imagefolder(root)


def test_missing_root_names_the_key(tmp_path):
    with pytest.raises(DatasetError, match=r"config.datasets.cub.root: folder .* does not exist"):
        read_cub(tmp_path / "nope", key="config.datasets.cub.root")
    root = make_cub(tmp_path / "cub")
    (root / "train_test_split.txt").unlink()
    with pytest.raises(DatasetError, match="train_test_split.txt does not exist"):
        read_cub(root)


def test_user_folder_is_never_written(tmp_path):
    root = make_cub(tmp_path / "cub")
    before = tree_digest(root)
    table = read_cub(root)
    check_images(table)
    make_split(table, 0.3, 0)
    assert tree_digest(root) == before
