"""Caltech-101, as released (a per-class train draw; the rest is test)."""

from __future__ import annotations

import zlib
from pathlib import Path

from sdi.data.readers.base import DatasetError, _finish, _sibling_key, class_name_from_folder, release_root
from sdi.io.lazy import lazy_import

np = lazy_import("numpy")  # loaded on first use: planning imports this module
pd = lazy_import("pandas")



def read_caltech101(root: str | Path, key: str = "datasets.<name>.root", train_per_class: int = 30,
                    seed: int = 0, allow_missing_test_classes: bool = False) -> pd.DataFrame:
    """``101_ObjectCategories/<class>/*`` without ``BACKGROUND_Google`` (as torchvision). No
    official split: per class, train_per_class images drawn with a generator seeded from
    (seed, class name) are train, the rest test."""
    base = release_root("caltech101", root, key)
    cats_dir = base / "101_ObjectCategories"
    categories = sorted(d.name for d in cats_dir.iterdir()
                        if d.is_dir() and d.name != "BACKGROUND_Google" and not d.name.startswith("."))
    rows = []
    for label, cat in enumerate(categories):
        files = sorted(f.name for f in (cats_dir / cat).iterdir() if f.is_file() and not f.name.startswith("."))
        if len(files) <= train_per_class:
            raise DatasetError(f"{cats_dir / cat}: {len(files)} image(s), but {_sibling_key(key, 'train_per_class')} "
                               f"is {train_per_class}, which leaves no test image; lower train_per_class")
        rng = np.random.default_rng([seed, zlib.crc32(cat.encode())])
        train = set(rng.permutation(len(files))[:train_per_class].tolist())
        rows += [{"image_id": f"{cat}/{f}", "path": str(cats_dir / cat / f), "label": label,
                  "class_name": class_name_from_folder(cat), "subset": "train" if i in train else "test"}
                 for i, f in enumerate(files)]
    return _finish(rows, [class_name_from_folder(c) for c in categories], base,
                   names_from=f"The names come from the folders of {cats_dir}: give the classes distinct "
                   "folder names.", class_ids=[f"folder {c}" for c in categories],
                   allow_missing_test_classes=allow_missing_test_classes)
