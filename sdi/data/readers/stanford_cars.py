"""Stanford Cars, as released."""

from __future__ import annotations

from pathlib import Path

from sdi.data.readers.base import DatasetError, _finish, _loadmat, _require_images, release_root
from sdi.io.lazy import lazy_import

np = lazy_import("numpy")  # loaded on first use: planning imports this module
pd = lazy_import("pandas")



def read_stanford_cars(root: str | Path, key: str = "datasets.<name>.root",
                       allow_missing_test_classes: bool = False) -> pd.DataFrame:
    """``devkit/cars_meta.mat`` (``class_names``), ``devkit/cars_train_annos.mat`` and
    ``cars_test_annos_withlabels.mat`` (``annotations`` struct: ``fname``, ``class`` 1-based);
    images in ``cars_train/`` and ``cars_test/``."""
    base = release_root("stanford_cars", root, key)
    what = "use the Stanford Cars devkit files (with cars_test_annos_withlabels.mat for the test labels)"
    meta_path = base / "devkit" / "cars_meta.mat"
    classes = [str(c).strip() for c in np.atleast_1d(_loadmat(meta_path, ["class_names"], what)["class_names"])]
    rows = []
    for subset, annos_path, folder in (("train", base / "devkit" / "cars_train_annos.mat", "cars_train"),
                                       ("test", base / "cars_test_annos_withlabels.mat", "cars_test")):
        annos = np.atleast_1d(_loadmat(annos_path, ["annotations"], what)["annotations"])
        fields = annos.dtype.names or ()
        missing = [f for f in ("fname", "class") if f not in fields]
        if missing:
            raise DatasetError(f"{annos_path}: the annotations struct has no field {', '.join(missing)} "
                               f"(fields: {', '.join(fields) or 'none'}); {what}")
        for k, anno in enumerate(annos, 1):
            fname, cid = str(anno["fname"]), int(anno["class"])
            if not 1 <= cid <= len(classes):
                raise DatasetError(f"{annos_path}: annotation {k} ({fname}) has class {cid}, outside 1..{len(classes)} "
                                   f"of {meta_path}; {what}")
            rows.append({"image_id": f"{folder}/{fname}", "path": str(base / folder / fname), "label": cid - 1,
                         "class_name": classes[cid - 1], "subset": subset})
        _require_images((r["path"] for r in rows if r["subset"] == subset), str(annos_path))
    return _finish(rows, classes, base, names_from=f"The names come from {meta_path} (class_names): use the "
                   "devkit of the Stanford Cars release, whose names are distinct.",
                   class_ids=[f"class {i} of cars_meta.mat" for i in range(1, len(classes) + 1)],
                   allow_missing_test_classes=allow_missing_test_classes)
