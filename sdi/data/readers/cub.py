"""CUB-200-2011 (and every folder in its layout, such as the demo)."""

from __future__ import annotations

from pathlib import Path

from sdi.data.readers.base import DatasetError, _finish, _lines, _require_images, class_name_from_folder, require_root
from sdi.io.lazy import lazy_import

pd = lazy_import("pandas")


CUB_FILES = ("images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt")


def _read_id_table(path: Path, key: str) -> dict[str, str]:
    """``<id> <value>`` lines -> {id: value}; an id given twice fails naming both lines."""
    if not path.is_file():
        raise DatasetError(f"{key}: {path} does not exist; the CUB_200_2011 layout needs "
                           "images.txt, classes.txt, image_class_labels.txt, train_test_split.txt and images/")
    values: dict[str, str] = {}
    line_of: dict[str, int] = {}
    for lineno, line in _lines(path):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DatasetError(f"{path}:{lineno}: expected '<id> <value>', got {line!r}")
        ident, value = parts
        if ident in values:
            raise DatasetError(f"{path}:{line_of[ident]} and {path}:{lineno}: id {ident} is listed twice; "
                               "remove one of the lines")
        values[ident], line_of[ident] = value, lineno
    return values


def read_cub(root: str | Path, key: str = "datasets.<name>.root",
             allow_missing_test_classes: bool = False) -> pd.DataFrame:
    """Read the official CUB_200_2011 layout (ids and labels are 1-based there)."""
    root = require_root(root, key, "the CUB_200_2011 folder")
    images, classes, labels, split = (_read_id_table(root / name, key) for name in CUB_FILES)
    problems = []
    for image_id in sorted(set(images) ^ set(labels), key=str):
        problems.append(f"image id {image_id}: listed in only one of images.txt / image_class_labels.txt")
    for image_id in sorted(set(images) - set(split), key=str):
        problems.append(f"image id {image_id}: missing from train_test_split.txt")
    for image_id, flag in split.items():
        if flag not in ("0", "1"):
            problems.append(f"image id {image_id}: train_test_split.txt says {flag!r}, expected 1 (train) or 0 (test)")
    try:
        class_ids = sorted(int(c) for c in classes)
    except ValueError:
        raise DatasetError(f"{root / 'classes.txt'}: class ids must be integers") from None
    class_of = {int(c): name for c, name in classes.items()}
    label_of = {c: i for i, c in enumerate(class_ids)}
    rows = []
    for image_id, rel in images.items():
        if image_id not in labels or image_id not in split:
            continue
        try:
            cid = int(labels[image_id])
        except ValueError:
            problems.append(f"image id {image_id}: class id {labels[image_id]!r} is not an integer")
            continue
        if cid not in class_of:
            problems.append(f"{rel}: class id {cid} is not in classes.txt")
            continue
        folder = Path(rel).parent.name
        if folder and folder != class_of[cid]:
            problems.append(f"{rel}: image_class_labels.txt says class {cid} ({class_of[cid]}) "
                            f"but the file is in folder {folder}")
        rows.append({"image_id": image_id, "path": str(root / "images" / rel), "label": label_of[cid],
                     "class_name": class_name_from_folder(class_of[cid]),
                     "subset": "train" if split[image_id] == "1" else "test"})
    if problems:
        raise DatasetError(f"{root}: {len(problems)} problem(s) in the CUB metadata:\n  " + "\n  ".join(problems))
    _require_images((r["path"] for r in rows), str(root / "images.txt"))
    return _finish(rows, [class_name_from_folder(class_of[c]) for c in class_ids], root,
                   names_from=f"The names come from {root / 'classes.txt'} (the number and '_' dropped): "
                   "give the classes distinct names there.",
                   class_ids=[f"class {c} {class_of[c]} of classes.txt" for c in class_ids],
                   allow_missing_test_classes=allow_missing_test_classes)
