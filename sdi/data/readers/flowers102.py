"""Oxford 102 Flowers, as released (``jpg/``, ``imagelabels.mat``, ``setid.mat``)."""

from __future__ import annotations

from pathlib import Path

from sdi.data.readers.base import DatasetError, _finish, _int_array, _listing, _loadmat, _require_images, release_root
from sdi.io.lazy import lazy_import

pd = lazy_import("pandas")



def flowers102_classes() -> list[str]:
    """The 102 category names published with the dataset, as torchvision's Flowers102 lists them."""
    from torchvision.datasets import Flowers102

    return list(Flowers102.classes)


def read_flowers102(root: str | Path, key: str = "datasets.<name>.root",
                    allow_missing_test_classes: bool = False) -> pd.DataFrame:
    """``imagelabels.mat`` (``labels``: 1-based class per image), ``setid.mat`` (``trnid``,
    ``valid``, ``tstid``: 1-based image ids), images ``jpg/image_%05d.jpg``."""
    base = release_root("flowers102", root, key)
    what = "use the file of the Flowers-102 release (www.robots.ox.ac.uk/~vgg/data/flowers/102/)"
    labels_path, setid_path = base / "imagelabels.mat", base / "setid.mat"
    labels = _int_array(_loadmat(labels_path, ["labels"], what)["labels"], labels_path, "labels")
    setid = _loadmat(setid_path, ["trnid", "valid", "tstid"], what)
    classes = flowers102_classes()
    bad = [f"image {i}: label {v}" for i, v in enumerate(labels.tolist(), 1) if not 1 <= v <= len(classes)]
    if bad:
        raise DatasetError(f"{labels_path}: labels must be 1..{len(classes)} (the 102 categories); "
                           f"{len(bad)} are not:{_listing(bad)}")
    rows = []
    for subset, field in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        for image_id in _int_array(setid[field], setid_path, field).tolist():
            if not 1 <= image_id <= len(labels):
                raise DatasetError(f"{setid_path}: {field} lists image id {image_id}, but imagelabels.mat labels "
                                   f"images 1..{len(labels)}; {what}")
            label = labels[image_id - 1] - 1
            rows.append({"image_id": f"image_{image_id:05d}", "path": str(base / "jpg" / f"image_{image_id:05d}.jpg"),
                         "label": label, "class_name": classes[label], "subset": subset})
    _require_images((r["path"] for r in rows), str(setid_path))
    return _finish(rows, classes, base, names_from="The names are torchvision's Flowers102.classes.",
                   allow_missing_test_classes=allow_missing_test_classes)
