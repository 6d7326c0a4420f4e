"""Dataset readers (CUB-200-2011, ImageFolder), image checks and the train/val/test split.

A reader returns one table with a row per image:
``image_id`` (str), ``path`` (str, as reachable from the working directory),
``label`` (int, 0..C-1), ``class_name`` (str, the words used in prompts),
``is_train`` (bool). The user's dataset folder is only ever read.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MANIFEST_COLUMNS = ["image_id", "path", "label", "class_name"]


class DatasetError(ValueError):
    """A dataset folder is missing, malformed, or holds files that cannot be used."""


def class_name_from_folder(folder_name: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black footed Albatross`` (also plain folder names)."""
    head, sep, tail = folder_name.partition(".")
    name = tail if sep and head.isdigit() else folder_name
    return name.replace("_", " ").strip()


def _read_table(path: Path, n_cols: int, key: str) -> list[list[str]]:
    if not path.is_file():
        raise DatasetError(f"{key}: {path} does not exist; the CUB_200_2011 layout needs "
                           "images.txt, classes.txt, image_class_labels.txt, train_test_split.txt and images/")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=n_cols - 1)
        if len(parts) != n_cols:
            raise DatasetError(f"{path}:{lineno}: expected {n_cols} columns, got {line!r}")
        rows.append(parts)
    return rows


def read_cub(root: str | Path, key: str = "datasets.<name>.root") -> pd.DataFrame:
    """Read the official CUB_200_2011 layout (ids and labels are 1-based there)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{key}: folder {root} does not exist; set it to the CUB_200_2011 folder")
    images = dict(_read_table(root / "images.txt", 2, key))
    classes = {int(i): name for i, name in _read_table(root / "classes.txt", 2, key)}
    labels = {i: int(c) for i, c in _read_table(root / "image_class_labels.txt", 2, key)}
    split = {i: s for i, s in _read_table(root / "train_test_split.txt", 2, key)}
    problems = []
    for image_id in sorted(set(images) ^ set(labels), key=str):
        problems.append(f"image id {image_id}: listed in only one of images.txt / image_class_labels.txt")
    for image_id in sorted(set(images) - set(split), key=str):
        problems.append(f"image id {image_id}: missing from train_test_split.txt")
    class_ids = sorted(classes)
    label_of = {c: i for i, c in enumerate(class_ids)}
    rows = []
    for image_id, rel in images.items():
        if image_id not in labels or image_id not in split:
            continue
        cid = labels[image_id]
        if cid not in classes:
            problems.append(f"{rel}: class id {cid} is not in classes.txt")
            continue
        folder = Path(rel).parent.name
        if folder and folder != classes[cid]:
            problems.append(f"{rel}: image_class_labels.txt says class {cid} ({classes[cid]}) "
                            f"but the file is in folder {folder}")
        rows.append({"image_id": image_id, "path": str(root / "images" / rel), "label": label_of[cid],
                     "class_name": class_name_from_folder(classes[cid]), "is_train": split[image_id] == "1"})
    if problems:
        raise DatasetError(f"{root}: {len(problems)} problem(s) in the CUB metadata:\n  " + "\n  ".join(problems))
    table = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, "is_train"])
    _check_classes(table, [class_name_from_folder(classes[c]) for c in class_ids], root)
    return table


def read_imagefolder(root: str | Path, key: str = "datasets.<name>.root") -> pd.DataFrame:
    """Read ``root/train/<class>/*`` and ``root/test/<class>/*``; labels follow sorted train classes."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{key}: folder {root} does not exist; "
                           "set it to a folder with train/<class>/ and test/<class>/")
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise DatasetError(f"{key}: {root / part} does not exist; an ImageFolder dataset needs "
                               "train/<class>/ and test/<class>/ subfolders")
    class_dirs = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    label_of = {c: i for i, c in enumerate(class_dirs)}
    problems = [f"{root / 'test' / d.name}: class folder not present in train/"
                for d in sorted((root / "test").iterdir()) if d.is_dir() and d.name not in label_of]
    if problems:
        raise DatasetError(f"{root}: label/class mismatch:\n  " + "\n  ".join(problems))
    rows = []
    for part in ("train", "test"):
        for cls in class_dirs:
            folder = root / part / cls
            if not folder.is_dir():
                continue
            for f in sorted(folder.iterdir()):
                if f.is_file() and not f.name.startswith("."):
                    rows.append({"image_id": f"{part}/{cls}/{f.name}", "path": str(f), "label": label_of[cls],
                                 "class_name": class_name_from_folder(cls), "is_train": part == "train"})
    table = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, "is_train"])
    _check_classes(table, [class_name_from_folder(c) for c in class_dirs], root)
    return table


def _check_classes(table: pd.DataFrame, class_names: list[str], root: Path) -> None:
    train_counts = table[table.is_train].groupby("label").size()
    empty = [f"{name} (label {i})" for i, name in enumerate(class_names) if train_counts.get(i, 0) == 0]
    if empty:
        raise DatasetError(f"{root}: {len(empty)} class(es) have no training images: {', '.join(empty)}; "
                           "add images or remove the class")


def read_dataset(fmt: str, root: str | Path, key: str = "datasets.<name>.root") -> pd.DataFrame:
    readers = {"cub": read_cub, "imagefolder": read_imagefolder}
    if fmt not in readers:
        raise DatasetError(f"{key.rsplit('.', 1)[0]}.format: {fmt!r} is not one of {sorted(readers)}")
    return readers[fmt](root, key)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image as RGB; grayscale, palette, CMYK and alpha images are converted."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, img).convert("RGB")
        return img.convert("RGB")


def check_image(path: str) -> str | None:
    """Return None if path decodes fully as an image, else a one-line reason."""
    if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image file (unknown extension)"
    try:
        with Image.open(path) as img:
            img.verify()
        load_rgb(path)  # verify() misses truncated pixel data; a full decode does not
    except FileNotFoundError:
        return "file does not exist"
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the file is unusable
        return f"{type(exc).__name__}: {exc}"
    return None


def check_images(table: pd.DataFrame, threads: int = 4) -> None:
    """Decode every image once; raise one DatasetError listing every unusable file."""
    from tqdm import tqdm

    paths = table["path"].tolist()
    with ThreadPoolExecutor(max(1, threads)) as pool:
        reasons = list(tqdm(pool.map(check_image, paths), total=len(paths), desc="checking images",
                            unit="img", mininterval=2))
    bad = [f"{p}: {r}" for p, r in zip(paths, reasons, strict=True) if r]
    if bad:
        raise DatasetError(f"{len(bad)} unusable image file(s); fix or remove them "
                           "(the dataset folder is never modified by sdi):\n  " + "\n  ".join(bad))


def stratified_split(train: pd.DataFrame, val_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per class, move round(n * val_fraction) images (at most n-1) to validation, seeded.

    Classes with a single image keep it in train. Deterministic for a given seed and table.
    """
    rng = np.random.default_rng(seed)
    val_idx = []
    for _, group in train.sort_values(["label", "image_id"]).groupby("label", sort=True):
        n_val = min(int(round(len(group) * val_fraction)), len(group) - 1)
        if n_val > 0:
            val_idx.extend(rng.choice(group.index.to_numpy(), size=n_val, replace=False).tolist())
    val_mask = train.index.isin(val_idx)
    return train[~val_mask], train[val_mask]


def make_split(table: pd.DataFrame, val_fraction: float, seed: int,
               val_source: str = "train") -> dict[str, pd.DataFrame]:
    """{'train', 'val', 'test'} manifests sorted by label then image_id.

    val_source='train': a stratified, seeded split of train (test is used once, at the end).
    val_source='test': validation is the test set, as in the reference code.
    """
    train, test = table[table.is_train], table[~table.is_train]
    if val_source == "train":
        train, val = stratified_split(train, val_fraction, seed)
    elif val_source == "test":
        val = test
    else:
        raise ValueError(f"split.val_source: {val_source!r} must be 'train' or 'test'")

    def tidy(part: pd.DataFrame) -> pd.DataFrame:
        part = part.sort_values(["label", "image_id"])[MANIFEST_COLUMNS].reset_index(drop=True)
        return part.astype({"image_id": str, "path": str, "label": "int64", "class_name": str})

    return {"train": tidy(train), "val": tidy(val), "test": tidy(test)}


def write_demo_digits(root: str | Path, train_per_class: int, test_per_class: int,
                      image_size: int = 64, seed: int = 0) -> Path:
    """Write scikit-learn's digits as a CUB_200_2011-style folder of RGB PNGs.

    Few training images per class, so that augmentation matters. Class folders are
    ``001.digit_zero`` ... ``010.digit_nine`` (prompt names ``digit zero`` ...).
    """
    from sklearn.datasets import load_digits

    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    digits = load_digits()
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, labels, splits = [], [], []
    image_id = 0
    for digit, word in enumerate(words):
        folder = f"{digit + 1:03d}.digit_{word}"
        (root / "images" / folder).mkdir(exist_ok=True)
        idx = rng.permutation(np.flatnonzero(digits.target == digit))
        need = train_per_class + test_per_class
        if len(idx) < need:
            raise DatasetError(f"demo_data: digit {digit} has {len(idx)} images, fewer than "
                               f"train_per_class + test_per_class = {need}")
        for k, i in enumerate(idx[:need]):
            image_id += 1
            pixels = (digits.images[i] / 16.0 * 255).astype(np.uint8)
            img = Image.fromarray(pixels, "L").resize((image_size, image_size), Image.Resampling.BICUBIC)
            rel = f"{folder}/{word}_{i:04d}.png"
            img.convert("RGB").save(root / "images" / rel)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {digit + 1}")
            splits.append(f"{image_id} {int(k < train_per_class)}")
    (root / "classes.txt").write_text(
        "".join(f"{d + 1} {d + 1:03d}.digit_{w}\n" for d, w in enumerate(words)))
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(splits) + "\n")
    return root
