"""The embedded demo dataset: scikit-learn's digits written in CUB's layout."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image

from sdi.data.readers.base import DatasetError
from sdi.io.lazy import lazy_import

np = lazy_import("numpy")  # loaded on first use: planning imports this module


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Class folder names after their number (001.digit_zero -> prompt name "digit zero").
DIGIT_FOLDERS = tuple(f"digit_{w}" for w in DIGIT_WORDS)


def write_digit_cub(root: str | Path, classes: Iterable[Iterable[tuple[int, Image.Image]]],
                    train_per_class: int, folders: Sequence[str] = DIGIT_FOLDERS,
                    prefixes: Sequence[str] = DIGIT_WORDS) -> Path:
    """Write digits as a CUB_200_2011-style folder of RGB PNGs; returns root.

    classes: per class, its (source index, image) pairs in order; the first ``train_per_class``
    of each are training images, the rest test. folders: each class's folder name after its
    number, prefixes: its file names' prefix; class k is folder ``<k+1:03d>.<folders[k]>``
    (the CUB reader's prompt name is folders[k] with ``_`` as spaces), files
    ``<prefixes[k]>_<source index:04d>.png``. The defaults are the ten digits: ``001.digit_zero``
    ... ``010.digit_nine`` (prompt names ``digit zero`` ...), files ``zero_0123.png`` .... The demo
    dataset and the mini world's target dataset (:mod:`sdi.data.mini_corpus`) are both written here.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, labels, splits = [], [], []
    image_id = 0
    for label, (name, prefix, items) in enumerate(zip(folders, prefixes, classes, strict=True)):
        folder = f"{label + 1:03d}.{name}"
        (root / "images" / folder).mkdir(exist_ok=True)
        for k, (i, img) in enumerate(items):
            image_id += 1
            rel = f"{folder}/{prefix}_{int(i):04d}.png"
            img.convert("RGB").save(root / "images" / rel)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {label + 1}")
            splits.append(f"{image_id} {int(k < train_per_class)}")
    (root / "classes.txt").write_text("".join(f"{c + 1} {c + 1:03d}.{name}\n" for c, name in enumerate(folders)))
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(splits) + "\n")
    return root


def write_demo_digits(root: str | Path, train_per_class: int, test_per_class: int,
                      image_size: int = 64, seed: int = 0) -> Path:
    """Write scikit-learn's digits as a CUB_200_2011-style folder of RGB PNGs (:func:`write_digit_cub`).

    Few training images per class, so that augmentation matters.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    need = train_per_class + test_per_class

    def images_of(digit: int):
        idx = rng.permutation(np.flatnonzero(digits.target == digit))
        if len(idx) < need:
            raise DatasetError(f"demo_data: digit {digit} has {len(idx)} images, fewer than "
                               f"train_per_class + test_per_class = {need}")
        for i in idx[:need]:
            pixels = (digits.images[i] / 16.0 * 255).astype(np.uint8)
            yield int(i), Image.fromarray(pixels, "L").resize((image_size, image_size), Image.Resampling.BICUBIC)

    return write_digit_cub(root, (images_of(d) for d in range(len(DIGIT_WORDS))), train_per_class)
