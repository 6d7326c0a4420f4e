"""Describable Textures (DTD), as released (one of its ten partitions)."""

from __future__ import annotations

from pathlib import Path

from sdi.data.readers.base import (
    SUBSETS,
    DatasetError,
    _finish,
    _lines,
    _require_file,
    _require_images,
    _sibling_key,
    class_name_from_folder,
    release_root,
)
from sdi.io.lazy import lazy_import

pd = lazy_import("pandas")



def read_dtd(root: str | Path, key: str = "datasets.<name>.root", partition: int = 1,
             allow_missing_test_classes: bool = False) -> pd.DataFrame:
    """``labels/{train,val,test}<partition>.txt`` lines ``<class>/<image>.jpg``; images in
    ``images/``. Labels follow the sorted class names (as torchvision's DTD)."""
    if not isinstance(partition, int) or not 1 <= partition <= 10:
        raise DatasetError(f"{_sibling_key(key, 'partition')}: {partition!r} must be an integer 1..10 "
                           "(DTD ships ten train/val/test partitions)")
    base = release_root("dtd", root, key)
    what = "use the labels/ folder of the DTD release"
    entries = []
    for subset in SUBSETS:
        path = _require_file(base / "labels" / f"{subset}{partition}.txt", what)
        for lineno, line in _lines(path):
            parts = line.split("/")
            if len(parts) != 2 or not all(parts):
                raise DatasetError(f"{path}:{lineno}: expected '<class>/<image>', got {line!r}")
            entries.append((subset, parts[0], parts[1]))
    class_dirs = sorted({cls for _, cls, _ in entries})
    label_of = {c: i for i, c in enumerate(class_dirs)}
    rows = [{"image_id": f"{cls}/{name}", "path": str(base / "images" / cls / name), "label": label_of[cls],
             "class_name": class_name_from_folder(cls), "subset": subset} for subset, cls, name in entries]
    _require_images((r["path"] for r in rows), str(base / "labels" / f"{{train,val,test}}{partition}.txt"))
    return _finish(rows, [class_name_from_folder(c) for c in class_dirs], base,
                   names_from=f"The names come from the class folders named in {base / 'labels'}: "
                   "give the classes distinct folder names there and in images/.",
                   class_ids=[f"folder images/{c}" for c in class_dirs],
                   allow_missing_test_classes=allow_missing_test_classes)
