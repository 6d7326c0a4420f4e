"""An ImageFolder tree: ``train/<class>/`` and ``test/<class>/``."""

from __future__ import annotations

from pathlib import Path

from sdi.data.readers.base import (
    DatasetError,
    _finish,
    _listing,
    _sibling_key,
    class_name_from_folder,
    image_files,
    read_class_names,
    require_root,
)
from sdi.io.fingerprints import Listing, list_files, stat_files
from sdi.io.lazy import lazy_import

pd = lazy_import("pandas")



def read_imagefolder(root: str | Path, key: str = "datasets.<name>.root", train_dir: str = "train",
                     test_dir: str = "test", class_names: str | None = None,
                     allow_missing_test_classes: bool = False) -> pd.DataFrame:
    """Read ``root/<train_dir>/<class>/**`` and ``root/<test_dir>/<class>/**`` as torchvision's
    ImageFolder does: labels follow the sorted train class folders, and every file with an
    image extension anywhere under a class folder is an image (:func:`image_files`); other
    files are skipped and counted in ``table.attrs["skipped"]`` ({kind: count}).
    class_names: a file mapping folder names to prompt names (relative to root unless
    absolute); without it names come from the folder names. allow_missing_test_classes:
    config.split.allow_missing_test_classes (see :func:`sdi.data.readers.base._check_classes`)."""
    root = require_root(root, key, f"a folder with {train_dir}/<class>/ and {test_dir}/<class>/")
    for part, name in ((train_dir, "train_dir"), (test_dir, "test_dir")):
        if not (root / part).is_dir():
            raise DatasetError(f"{key}: {root / part} does not exist; an ImageFolder dataset needs "
                               f"{train_dir}/<class>/ and {test_dir}/<class>/ subfolders (or set "
                               f"{_sibling_key(key, name)} to the name of its {name.removesuffix('_dir')} folder)")
    class_dirs = sorted(d.name for d in (root / train_dir).iterdir() if d.is_dir() and not d.name.startswith("."))
    label_of = {c: i for i, c in enumerate(class_dirs)}
    problems = [f"{root / test_dir / d.name}: class folder not present in {train_dir}/"
                for d in sorted((root / test_dir).iterdir())
                if d.is_dir() and not d.name.startswith(".") and d.name not in label_of]
    if problems:
        raise DatasetError(f"{root}: label/class mismatch:\n  " + "\n  ".join(problems))
    names_key = _sibling_key(key, "class_names")
    if class_names:
        mapping = read_class_names(root / class_names, names_key)
        unnamed = [c for c in class_dirs if c not in mapping]
        if unnamed:
            raise DatasetError(f"{names_key}: {root / class_names} has no name for {len(unnamed)} class folder(s); "
                               f"add them:{_listing(unnamed)}")
        prompt = {c: mapping[c].strip() for c in class_dirs}
        rename = f"Give them distinct names in {root / class_names} ({names_key})."
    else:
        prompt = {c: class_name_from_folder(c) for c in class_dirs}
        rename = (f"Set {names_key} to a file (relative to root) that maps each class folder to a distinct prompt "
                  "name: a JSON object {folder: name}, a two-column CSV/TSV (folder, name) or '<folder> <name>' lines.")
    rows, skipped = [], {}
    for part, subset in ((train_dir, "train"), (test_dir, "test")):
        for cls in class_dirs:
            folder = root / part / cls
            if not folder.is_dir():
                continue
            for rel in image_files(folder, skipped):
                rows.append({"image_id": f"{part}/{cls}/{rel}", "path": str(folder / rel), "label": label_of[cls],
                             "class_name": prompt[cls], "subset": subset})
    table = _finish(rows, [prompt[c] for c in class_dirs], root, names_from=rename,
                    class_ids=[f"folder {train_dir}/{c}" for c in class_dirs],
                    allow_missing_test_classes=allow_missing_test_classes)
    table.attrs["skipped"] = dict(sorted(skipped.items()))
    return table


def listing(fmt: str, root: Path, key: str, options: dict) -> Listing:
    """The train and test folders (and the class-name file when one is set)."""
    require_root(root, key, f"the dataset folder ({fmt} layout)")
    found = Listing()
    for part in (options.get("train_dir", "train"), options.get("test_dir", "test")):
        if (root / part).is_dir():
            found += list_files(root / part).prefixed(f"{part}/")
    if options.get("class_names"):
        found += stat_files([options["class_names"]], base=root)
    return found
