"""FGVC-Aircraft, as released (variant level)."""

from __future__ import annotations

from pathlib import Path

from sdi.data.readers.base import DatasetError, _finish, _lines, _require_file, _require_images, release_root
from sdi.io.lazy import lazy_import

pd = lazy_import("pandas")



def read_fgvc_aircraft(root: str | Path, key: str = "datasets.<name>.root",
                       allow_missing_test_classes: bool = False) -> pd.DataFrame:
    """``data/variants.txt`` (class names in order), ``data/images_variant_{trainval,test}.txt``
    lines ``<image id> <variant name>``; images ``data/images/<id>.jpg``."""
    base = release_root("fgvc_aircraft", root, key)
    data = base / "data"
    what = "use the data/ folder of the fgvc-aircraft-2013b release"
    variants = [line for _, line in _lines(_require_file(data / "variants.txt", what))]
    if len(set(variants)) != len(variants):
        dup = sorted({v for v in variants if variants.count(v) > 1})
        raise DatasetError(f"{data / 'variants.txt'}: variant(s) listed twice: {', '.join(dup)}")
    label_of = {v: i for i, v in enumerate(variants)}
    rows = []
    for subset, fname in (("train", "images_variant_trainval.txt"), ("test", "images_variant_test.txt")):
        path = _require_file(data / fname, what)
        for lineno, line in _lines(path):
            parts = line.split(" ", 1)
            if len(parts) != 2:
                raise DatasetError(f"{path}:{lineno}: expected '<image id> <variant>', got {line!r}")
            image, variant = parts[0], parts[1].strip()
            if variant not in label_of:
                raise DatasetError(f"{path}:{lineno}: variant {variant!r} is not in {data / 'variants.txt'}")
            rows.append({"image_id": image, "path": str(data / "images" / f"{image}.jpg"), "label": label_of[variant],
                         "class_name": variant, "subset": subset})
        _require_images((r["path"] for r in rows if r["subset"] == subset), str(path))
    return _finish(rows, variants, base, names_from=f"The names come from {data / 'variants.txt'}: give "
                   "the variants distinct names there and in the images_variant_*.txt lists.",
                   class_ids=[f"line {i} of variants.txt" for i in range(1, len(variants) + 1)],
                   allow_missing_test_classes=allow_missing_test_classes)
