"""Oxford-IIIT Pet, as released."""

from __future__ import annotations

from pathlib import Path

from sdi.data.readers.base import DatasetError, _finish, _lines, _listing, _require_file, _require_images, release_root
from sdi.io.lazy import lazy_import

pd = lazy_import("pandas")



def read_oxford_pets(root: str | Path, key: str = "datasets.<name>.root",
                     allow_missing_test_classes: bool = False) -> pd.DataFrame:
    """``annotations/{trainval,test}.txt`` lines ``Abyssinian_100 1 1 1`` (image, class id
    1-based, species, breed id); images ``images/<image>.jpg``. The class name is the image
    name minus its trailing ``_<number>`` (``american_bulldog`` -> ``american bulldog``)."""
    base = release_root("oxford_pets", root, key)
    what = "use the annotations of the Oxford-IIIT Pet release"
    name_of: dict[int, tuple[str, str]] = {}  # class id -> (name, where it was first seen)
    id_of: dict[str, tuple[int, str]] = {}  # name -> (class id, where it was first seen)
    rows = []
    for subset, fname in (("train", "trainval.txt"), ("test", "test.txt")):
        path = _require_file(base / "annotations" / fname, what)
        for lineno, line in _lines(path):
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                raise DatasetError(f"{path}:{lineno}: expected '<image> <class id> <species> <breed id>', got {line!r}")
            image, cid = parts[0], int(parts[1])
            name = image.rsplit("_", 1)[0].replace("_", " ")
            where = f"{path}:{lineno}"
            seen = name_of.setdefault(cid, (name, where))
            if seen[0] != name:
                raise DatasetError(f"{where}: class id {cid} is {name!r} here but {seen[0]!r} at {seen[1]}; "
                                   "each class id must name one breed")
            seen_id = id_of.setdefault(name, (cid, where))
            if seen_id[0] != cid:
                raise DatasetError(f"{where}: {name!r} has class id {cid} here but {seen_id[0]} at {seen_id[1]}; "
                                   "a breed must have one class id")
            rows.append({"image_id": image, "path": str(base / "images" / f"{image}.jpg"), "label": cid - 1,
                         "class_name": name, "subset": subset, "where": where})
    n = len(name_of)
    out_of_range = sorted(f"{w}: class id {c}" for c, (_, w) in name_of.items() if not 1 <= c <= n)
    if out_of_range:
        raise DatasetError(f"class ids must be 1..{n} (one per breed); out of range:{_listing(out_of_range)}")
    _require_images((r["path"] for r in rows), str(base / "annotations"))
    for r in rows:
        del r["where"]
    return _finish(rows, [name_of[c][0] for c in range(1, n + 1)], base,
                   names_from=f"The names come from the image names in {base / 'annotations'}/"
                   "{trainval,test}.txt (less their _<number>): give the breeds distinct names there.",
                   class_ids=[f"class id {c}, first at {name_of[c][1]}" for c in range(1, n + 1)],
                   allow_missing_test_classes=allow_missing_test_classes)
