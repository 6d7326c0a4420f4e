"""Dataset readers, image checks and the train/val/test split.

Formats (config ``datasets.<name>.format``): ``cub`` (CUB_200_2011), ``imagefolder``, the
official releases ``flowers102``, ``oxford_pets``, ``stanford_cars``, ``dtd``,
``fgvc_aircraft``, ``caltech101``, ``medmnist`` (sdi.medmnist) and ``table`` (file lists).

A reader returns one table with a row per image:
``image_id`` (str), ``path`` (str, as reachable from the working directory),
``label`` (int, 0..C-1), ``class_name`` (str, the words used in prompts),
``subset`` (str: the release's own split, ``train``, ``val`` or ``test``).
The user's dataset folder is only ever read. Where torchvision has a reader for a release,
the parsing follows it; the files are parsed here directly, because torchvision checks
the checksums of the metadata files and insists on its own download folder names.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sdi._lazy import lazy_import
from sdi.fingerprints import Listing
from sdi.images import IMAGE_SUFFIXES, is_image_name, load_rgb

np = lazy_import("numpy")  # loaded on first use: planning imports this module
pd = lazy_import("pandas")

MANIFEST_COLUMNS = ["image_id", "path", "label", "class_name"]
SUBSETS = ("train", "val", "test")
FORMATS = ("cub", "imagefolder", "flowers102", "oxford_pets", "stanford_cars", "dtd", "fgvc_aircraft",
           "caltech101", "medmnist", "table")
SHOWN = 20  # problems listed in one error message before "... and N more"


class DatasetError(ValueError):
    """A dataset folder is missing, malformed, or holds files that cannot be used."""


# --- Shared helpers -----------------------------------------------------------------------


def class_name_from_folder(folder_name: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black footed Albatross``; a leading number followed
    by ``.`` or ``_`` is dropped (``001_AM_General_Hummer_SUV_2000`` -> ``AM General Hummer SUV 2000``)."""
    match = re.fullmatch(r"\d+[._](.+)", folder_name)
    name = match.group(1) if match else folder_name
    return name.replace("_", " ").strip()


def _sibling_key(key: str, name: str) -> str:
    """``config.datasets.x.root`` -> ``config.datasets.x.<name>``."""
    return f"{key.rsplit('.', 1)[0]}.{name}"


def _listing(items: list[str]) -> str:
    shown = "\n  ".join(items[:SHOWN])
    more = f"\n  ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return f"\n  {shown}{more}"


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"metadata file {path} does not exist; {what}")
    return path


def _require_images(paths: Iterable[str], listed_in: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DatasetError(f"{len(missing)} image(s) listed in {listed_in} do not exist; restore them from "
                           f"the release (or remove their lines):{_listing(missing)}")


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped line) of the non-empty, non-comment lines of a text file."""
    return [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]


def _loadmat(path: Path, fields: list[str], what: str) -> dict:
    """Fields of a MATLAB file (scipy.io.loadmat, squeeze_me=True as torchvision reads them)."""
    from scipy.io import loadmat

    _require_file(path, what)
    try:
        data = loadmat(path, squeeze_me=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure means the file is unusable
        raise DatasetError(f"{path}: cannot be read as a MATLAB .mat file ({type(exc).__name__}: {exc}); "
                           f"{what}") from None
    missing = [f for f in fields if f not in data]
    if missing:
        present = sorted(k for k in data if not k.startswith("__"))
        raise DatasetError(f"{path}: no field {', '.join(missing)} (fields: {', '.join(present) or 'none'}); "
                           f"{what}")
    return data


def _int_array(values, path: Path, field: str) -> np.ndarray:
    array = np.atleast_1d(np.asarray(values))
    if array.dtype.kind not in "iuf" or (array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0)):
        raise DatasetError(f"{path}: field {field} must hold integers, got {array.dtype} values")
    return array.astype(np.int64).ravel()


def _finish(rows: list[dict], class_names: list[str], where: str | Path) -> pd.DataFrame:
    """The reader's table, after the checks every format shares."""
    table = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, "subset"])
    table = table.astype({"image_id": str, "path": str, "label": "int64", "class_name": str, "subset": str})
    dup = table.image_id[table.image_id.duplicated()].unique().tolist()
    if dup:
        raise DatasetError(f"{where}: {len(dup)} image(s) listed more than once (an image belongs to one "
                           f"split only); remove the extra lines:{_listing(dup)}")
    _check_classes(table, class_names, where)
    return table


def _check_classes(table: pd.DataFrame, class_names: list[str], where: str | Path) -> None:
    train_counts = table[table.subset == "train"].groupby("label").size()
    empty = [f"{name} (label {i})" for i, name in enumerate(class_names) if train_counts.get(i, 0) == 0]
    if empty:
        raise DatasetError(f"{where}: {len(empty)} class(es) have no training images: {', '.join(empty)}; "
                           "a class present in test or val but not in train cannot be learned: "
                           "add training images or remove the class")


# --- Releases that may sit inside torchvision's download folder -----------------------------


@dataclass(frozen=True)
class Release:
    title: str
    marker: str  # a path that identifies the release folder
    download_dirs: tuple[str, ...]  # where torchvision puts it below its download root
    holds: str  # what the folder holds, for messages


RELEASES = {
    "flowers102": Release("Oxford 102 Flowers", "imagelabels.mat", ("flowers-102",),
                          "jpg/, imagelabels.mat and setid.mat"),
    "oxford_pets": Release("Oxford-IIIT Pet", "annotations", ("oxford-iiit-pet",),
                           "images/ and annotations/{trainval,test}.txt"),
    "stanford_cars": Release("Stanford Cars", "devkit", ("stanford_cars",),
                             "devkit/{cars_meta,cars_train_annos}.mat, cars_train/, cars_test/ and "
                             "cars_test_annos_withlabels.mat"),
    "dtd": Release("Describable Textures (DTD)", "labels", ("dtd", "dtd/dtd"),
                   "images/<class>/ and labels/{train,val,test}<k>.txt"),
    "fgvc_aircraft": Release("FGVC-Aircraft", "data/variants.txt", ("fgvc-aircraft-2013b",),
                             "data/images/, data/variants.txt and data/images_variant_{trainval,test}.txt"),
    "caltech101": Release("Caltech-101", "101_ObjectCategories", ("caltech101",), "101_ObjectCategories/<class>/"),
}


def release_root(fmt: str, root: str | Path, key: str = "datasets.<name>.root") -> Path:
    """The folder holding the release's own files: root itself, or the release's folder
    inside torchvision's download root (e.g. ``root/flowers-102``)."""
    release = RELEASES[fmt]
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{key}: folder {root} does not exist; set it to the {release.title} folder "
                           f"(it holds {release.holds})")
    for sub in ("", *release.download_dirs):
        if (root / sub / release.marker).exists():
            return root / sub
    tried = " or ".join(str(root / sub / release.marker) for sub in ("", *release.download_dirs))
    raise DatasetError(f"{key}: {root} is not a {release.title} folder ({tried} does not exist); set it to the "
                       f"folder that holds {release.holds} as extracted from the release")


# --- CUB-200-2011 ---------------------------------------------------------------------------

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


def read_cub(root: str | Path, key: str = "datasets.<name>.root") -> pd.DataFrame:
    """Read the official CUB_200_2011 layout (ids and labels are 1-based there)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{key}: folder {root} does not exist; set it to the CUB_200_2011 folder")
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
    return _finish(rows, [class_name_from_folder(class_of[c]) for c in class_ids], root)


# --- ImageFolder ------------------------------------------------------------------------------


def read_class_names(path: str | Path, key: str = "datasets.<name>.class_names") -> dict[str, str]:
    """Folder name -> prompt name, from a JSON object ``{"n01440764": "tench"}`` (values may
    also be ``[folder, name]`` pairs, as in ``imagenet_class_index.json``), a two-column CSV/TSV
    (folder, name; a header row does no harm), or a text file of ``<folder> <name>[, <alias>...]``
    lines (ILSVRC's ``LOC_synset_mapping.txt``: the first name is used)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{key}: {path} does not exist; set it to a CSV, TSV, JSON or text file that maps "
                           "class folder names to prompt names")
    suffix = path.suffix.lower()
    names: dict[str, str] = {}
    if suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise DatasetError(f"{path}: expected a JSON object mapping folder names to names")
        for k, v in data.items():
            if isinstance(v, list) and len(v) == 2:
                names[str(v[0])] = str(v[1])
            elif isinstance(v, str):
                names[str(k)] = v
            else:
                raise DatasetError(f"{path}: entry {k!r} must be a name or a [folder, name] pair, got {v!r}")
    elif suffix in (".csv", ".tsv"):
        frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", header=None, dtype=str,
                            keep_default_na=False)
        if frame.shape[1] != 2:
            raise DatasetError(f"{path}: expected two columns (folder, name), found {frame.shape[1]}")
        names = dict(zip(frame[0].str.strip(), frame[1].str.strip(), strict=True))
    elif suffix == ".txt":
        for lineno, line in _lines(path):
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise DatasetError(f"{path}:{lineno}: expected '<folder> <name>', got {line!r}")
            names[parts[0]] = parts[1].split(",")[0].strip()
    else:
        raise DatasetError(f"{key}: {path} has an unknown extension; use .csv, .tsv, .json or .txt")
    return names


def read_imagefolder(root: str | Path, key: str = "datasets.<name>.root", train_dir: str = "train",
                     test_dir: str = "test", class_names: str | None = None) -> pd.DataFrame:
    """Read ``root/<train_dir>/<class>/**`` and ``root/<test_dir>/<class>/**`` as torchvision's
    ImageFolder does: labels follow the sorted train class folders, and every file with an
    image extension anywhere under a class folder is an image (:func:`image_files`); other
    files are skipped and counted in ``table.attrs["skipped"]`` ({kind: count}).
    class_names: a file mapping folder names to prompt names (relative to root unless
    absolute); without it names come from the folder names."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{key}: folder {root} does not exist; "
                           f"set it to a folder with {train_dir}/<class>/ and {test_dir}/<class>/")
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
    if class_names:
        names_key = _sibling_key(key, "class_names")
        mapping = read_class_names(root / class_names, names_key)
        unnamed = [c for c in class_dirs if c not in mapping]
        if unnamed:
            raise DatasetError(f"{names_key}: {root / class_names} has no name for {len(unnamed)} class folder(s); "
                               f"add them:{_listing(unnamed)}")
        prompt = {c: mapping[c].strip() for c in class_dirs}
    else:
        prompt = {c: class_name_from_folder(c) for c in class_dirs}
    rows, skipped = [], {}
    for part, subset in ((train_dir, "train"), (test_dir, "test")):
        for cls in class_dirs:
            folder = root / part / cls
            if not folder.is_dir():
                continue
            for rel in image_files(folder, skipped):
                rows.append({"image_id": f"{part}/{cls}/{rel}", "path": str(folder / rel), "label": label_of[cls],
                             "class_name": prompt[cls], "subset": subset})
    table = _finish(rows, [prompt[c] for c in class_dirs], root)
    table.attrs["skipped"] = dict(sorted(skipped.items()))
    return table


def image_files(folder: Path, skipped: dict[str, int] | None = None) -> list[str]:
    """Image files anywhere under a class folder, as torchvision's ImageFolder finds them:
    recursively (symlinks followed), an extension in ``IMG_EXTENSIONS`` (any case); paths
    relative to folder, sorted. Hidden files and folders (``.name``) are skipped too.

    skipped: counts of the files left out, by kind (``.txt``, ``Thumbs.db`` -> ``.db``,
    ``hidden``, ``no extension``), added to in place.
    """
    from sdi.fingerprints import require_utf8

    found = []
    skipped = {} if skipped is None else skipped
    for top, dirs, files in os.walk(folder, followlinks=True):
        hidden_dirs = [d for d in dirs if d.startswith(".")]
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if hidden_dirs:
            skipped["hidden"] = skipped.get("hidden", 0) + len(hidden_dirs)
        for name in files:
            kind = None
            if name.startswith("."):
                kind = "hidden"
            elif not is_image_name(name):
                kind = Path(name).suffix.lower() or "no extension"
            if kind:
                skipped[kind] = skipped.get(kind, 0) + 1
                continue
            found.append(require_utf8(os.path.relpath(os.path.join(top, name), folder), folder))
    return sorted(found)


def skipped_text(skipped: dict[str, int]) -> str:
    """``3 file(s) that are not images (.txt: 1, .db: 1, hidden: 1)``, or '' when none."""
    if not skipped:
        return ""
    kinds = ", ".join(f"{k}: {n}" for k, n in skipped.items())
    return f"{sum(skipped.values())} file(s) that are not images ({kinds}; a hidden folder counts once)"


# --- Oxford 102 Flowers -----------------------------------------------------------------------


def flowers102_classes() -> list[str]:
    """The 102 category names published with the dataset, as torchvision's Flowers102 lists them."""
    from torchvision.datasets import Flowers102

    return list(Flowers102.classes)


def read_flowers102(root: str | Path, key: str = "datasets.<name>.root") -> pd.DataFrame:
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
    return _finish(rows, classes, base)


# --- Oxford-IIIT Pet --------------------------------------------------------------------------


def read_oxford_pets(root: str | Path, key: str = "datasets.<name>.root") -> pd.DataFrame:
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
    return _finish(rows, [name_of[c][0] for c in range(1, n + 1)], base)


# --- Stanford Cars ----------------------------------------------------------------------------


def read_stanford_cars(root: str | Path, key: str = "datasets.<name>.root") -> pd.DataFrame:
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
    return _finish(rows, classes, base)


# --- Describable Textures ---------------------------------------------------------------------


def read_dtd(root: str | Path, key: str = "datasets.<name>.root", partition: int = 1) -> pd.DataFrame:
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
    return _finish(rows, [class_name_from_folder(c) for c in class_dirs], base)


# --- FGVC-Aircraft ----------------------------------------------------------------------------


def read_fgvc_aircraft(root: str | Path, key: str = "datasets.<name>.root") -> pd.DataFrame:
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
    return _finish(rows, variants, base)


# --- Caltech-101 ------------------------------------------------------------------------------


def read_caltech101(root: str | Path, key: str = "datasets.<name>.root", train_per_class: int = 30,
                    seed: int = 0) -> pd.DataFrame:
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
    return _finish(rows, [class_name_from_folder(c) for c in categories], base)


# --- File lists (table) -----------------------------------------------------------------------

TABLE_COLUMNS = {"path": "path", "label": "label", "class_name": "class_name"}


def read_file_list(path: str | Path, key: str = "datasets.<name>.files") -> pd.DataFrame:
    """One file list as a DataFrame of strings: CSV, TSV, Parquet, JSON (a list of rows) or
    JSON Lines (.jsonl / .ndjson)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{key}: {path} does not exist; set it to a file list (relative to root or absolute)")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".ndjson"):
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        elif suffix == ".json":
            rows = json.loads(path.read_text())
        else:
            raise DatasetError(f"{key}: {path} has an unknown extension; use .csv, .tsv, .parquet, .json or .jsonl")
    except (ValueError, OSError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot be read as a {suffix[1:]} file list ({exc})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DatasetError(f"{path}: expected a list of rows (JSON objects), e.g. "
                           '[{"image_file": "train/n01/x.JPEG", "label": 0, "word": "tench"}]')
    return pd.DataFrame(rows)


def _table_files(root: Path, files: dict, key: str) -> dict[str, Path]:
    files_key = _sibling_key(key, "files")
    missing = [s for s in ("train", "test") if not files or s not in files]
    if missing:
        raise DatasetError(f"{files_key}: needs {' and '.join(missing)}: the file list(s) of those images")
    return {s: root / files[s] for s in SUBSETS if files.get(s)}


def table_paths(root: str | Path, key: str = "datasets.<name>.root", files: dict | None = None,
                columns: dict | None = None) -> list[str]:
    """The image paths (relative to root, or absolute) that a table dataset's lists name."""
    root = Path(root)
    path_col = {**TABLE_COLUMNS, **(columns or {})}["path"]
    paths = []
    for subset, path in _table_files(root, files or {}, key).items():
        frame = read_file_list(path, f"{_sibling_key(key, 'files')}.{subset}")
        if path_col not in frame.columns:
            raise DatasetError(f"{path}: no column {path_col!r} (columns: {', '.join(map(str, frame.columns))}); "
                               f"set {_sibling_key(key, 'columns')}.path to the column of image paths")
        paths += frame[path_col].astype(str).tolist()
    return paths


def read_table(root: str | Path, key: str = "datasets.<name>.root", files: dict | None = None,
               columns: dict | None = None) -> pd.DataFrame:
    """Images named by file lists (``files: {train, test, val?}``, relative to root unless
    absolute); image paths in the lists are relative to root. Columns (``columns``, defaults
    path / label / class_name): a path and a label or a class name or both. Without labels,
    labels follow the sorted class names; without class names, a label's text is its name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{key}: folder {root} does not exist; set it to the folder the image paths "
                           "of the file lists are relative to")
    columns_key = _sibling_key(key, "columns")
    named = {k: v for k, v in (columns or {}).items() if v}
    cols = {**TABLE_COLUMNS, **named}
    frames = {}
    for subset, path in _table_files(root, files or {}, key).items():
        frame = read_file_list(path, f"{_sibling_key(key, 'files')}.{subset}")
        have = [str(c) for c in frame.columns]
        for field in ("path", *named):
            if cols[field] not in frame.columns:
                raise DatasetError(f"{path}: no column {cols[field]!r} (columns: {', '.join(have)}); "
                                   f"set {columns_key}.{field} to one of them")
        frames[subset] = (path, frame)
    first_path, first = frames["train"]
    use = [f for f in ("label", "class_name") if cols[f] in first.columns]
    if not use:
        raise DatasetError(f"{first_path}: neither a label column {cols['label']!r} nor a class name column "
                           f"{cols['class_name']!r} (columns: {', '.join(map(str, first.columns))}); set "
                           f"{columns_key}.label or {columns_key}.class_name")
    parts = []
    for subset, (path, frame) in frames.items():
        for field in use:
            if cols[field] not in frame.columns:
                raise DatasetError(f"{path}: no column {cols[field]!r}, which {first_path} has; every list needs "
                                   f"the same columns ({columns_key})")
        part = pd.DataFrame({"image_id": frame[cols["path"]].astype(str), "subset": subset, "listed_in": str(path)})
        if "label" in use:
            labels = pd.to_numeric(frame[cols["label"]], errors="coerce")
            bad = labels.isna() | (labels % 1 != 0)
            if bad.any():
                examples = frame[cols["label"]][bad].astype(str).head(5).tolist()
                raise DatasetError(f"{path}: column {cols['label']!r} must hold integer labels; found "
                                   f"{', '.join(examples)}")
            part["raw_label"] = labels.astype("int64").to_numpy()
        if "class_name" in use:
            part["class_name"] = frame[cols["class_name"]].astype(str).str.strip().to_numpy()
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    dup = table[table.image_id.duplicated(keep=False)]
    if len(dup):
        lines = [f"{p} ({', '.join(sorted(set(g.listed_in)))})" for p, g in dup.groupby("image_id")]
        raise DatasetError(f"{len(lines)} path(s) listed more than once in the file lists of "
                           f"{_sibling_key(key, 'files')}; an image belongs to one split only:{_listing(lines)}")
    if "raw_label" in table and "class_name" in table:
        for column, other in (("raw_label", "class_name"), ("class_name", "raw_label")):
            clash = table.groupby(column)[other].nunique()
            clash = clash[clash > 1]
            if len(clash):
                first_clash = clash.index[0]
                found = sorted(map(str, table[table[column] == first_clash][other].unique()))
                raise DatasetError(f"file lists of {_sibling_key(key, 'files')}: {cols[column.replace('raw_', '')]} "
                                   f"{first_clash!r} goes with several {cols[other.replace('raw_', '')]} values "
                                   f"({', '.join(found)}); each class needs one label and one name")
    if "raw_label" in table:
        order = sorted(table.raw_label.unique().tolist())
        if "class_name" not in table:
            table["class_name"] = table.raw_label.astype(str)
        name_of = dict(zip(table.raw_label, table.class_name, strict=True))
        class_names = [name_of[v] for v in order]
        table["label"] = table.raw_label.map({v: i for i, v in enumerate(order)})
    else:
        class_names = sorted(table.class_name.unique().tolist())
        table["label"] = table.class_name.map({v: i for i, v in enumerate(class_names)})
    table["path"] = [str(root / p) for p in table.image_id]
    for listed_in, group in table.groupby("listed_in"):
        _require_images(group.path, listed_in)
    return _finish(table[[*MANIFEST_COLUMNS, "subset"]].to_dict("records"), class_names, root)


# --- Dispatch ---------------------------------------------------------------------------------


def read_dataset(fmt: str, root: str | Path, key: str = "datasets.<name>.root", options: dict | None = None,
                 seed: int = 0) -> pd.DataFrame:
    """Read a dataset of any format. options: the format's own keys of the dataset's config
    entry (e.g. ``partition`` for dtd); seed: config.split.seed (caltech101 draws its split).
    For medmnist, root is the folder of PNGs written by sdi.medmnist.write_medmnist_images."""
    from sdi import medmnist

    readers = {"cub": read_cub, "imagefolder": read_imagefolder, "flowers102": read_flowers102,
               "oxford_pets": read_oxford_pets, "stanford_cars": read_stanford_cars, "dtd": read_dtd,
               "fgvc_aircraft": read_fgvc_aircraft, "caltech101": read_caltech101,
               "medmnist": medmnist.read_medmnist, "table": read_table}
    if fmt not in readers:
        raise DatasetError(f"{_sibling_key(key, 'format')}: {fmt!r} is not one of {sorted(readers)}")
    options = {k: v for k, v in (options or {}).items() if k != "builtin"}
    if fmt == "caltech101":
        options["seed"] = seed
    return readers[fmt](root, key, **options)


def dataset_listing(fmt: str, root: str | Path, key: str = "datasets.<name>.root",
                    options: dict | None = None) -> Listing:
    """A cheap fingerprint of everything a dataset's split reads: its files (path, size,
    mtime_ns), for sdi.fingerprints.write_listing. No image is opened."""
    from sdi.fingerprints import list_files, stat_files

    options = options or {}
    root = Path(root)
    if fmt == "medmnist":
        raise ValueError("medmnist datasets are fingerprinted by their .npz file (rule medmnist_images)")
    if fmt != "cub" and fmt in RELEASES:
        return list_files(release_root(fmt, root, key))
    if not root.is_dir():
        raise DatasetError(f"{key}: folder {root} does not exist; set it to the dataset folder ({fmt} layout)")
    if fmt == "table":
        lists = [str(options["files"][s]) for s in _table_files(root, options.get("files") or {}, key)]
        return stat_files([*lists, *table_paths(root, key, options.get("files"), options.get("columns"))], base=root)
    if fmt == "imagefolder":
        listing = Listing()
        for part in (options.get("train_dir", "train"), options.get("test_dir", "test")):
            if (root / part).is_dir():
                listing += list_files(root / part).prefixed(f"{part}/")
        if options.get("class_names"):
            listing += stat_files([options["class_names"]], base=root)
        return listing
    return list_files(root)


# --- Images and the split ---------------------------------------------------------------------


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

    Classes with a single image keep it in train. Where that rounds every class down to 0
    (e.g. 2 images per class and 0.2), validation still gets ``max(1, round(N * val_fraction))``
    images, N the images of classes with two or more: one each from that many of those
    classes, drawn with the seed. If no class has two images, it raises a DatasetError naming
    config.split.val_fraction and the class counts. Deterministic for a given seed and table.
    """
    rng = np.random.default_rng(seed)
    val_idx = []
    groups = list(train.sort_values(["label", "image_id"]).groupby("label", sort=True))
    for _, group in groups:
        n_val = min(int(round(len(group) * val_fraction)), len(group) - 1)
        if n_val > 0:
            val_idx.extend(rng.choice(group.index.to_numpy(), size=n_val, replace=False).tolist())
    if not val_idx and len(train):
        eligible = [group for _, group in groups if len(group) > 1]
        if not eligible:
            counts = train.groupby("label").size()
            raise DatasetError(
                f"config.split.val_fraction: {val_fraction} of every class leaves no validation image, since "
                f"no class has two training images (images per class: {_counts_text(counts)}); add images, "
                "or set config.split.val_source to test (the reference's protocol) or official")
        n_classes = min(len(eligible), max(1, int(round(sum(len(g) for g in eligible) * val_fraction))))
        for i in sorted(rng.choice(len(eligible), size=n_classes, replace=False).tolist()):
            val_idx.append(int(rng.choice(eligible[i].index.to_numpy())))
    val_mask = train.index.isin(val_idx)
    return train[~val_mask], train[val_mask]


def _counts_text(counts: pd.Series) -> str:
    """``{label: n}`` -> ``'0: 1, 1: 1, ...'`` (the first SHOWN, then '... and N more')."""
    items = [f"{label}: {n}" for label, n in counts.items()]
    more = f", ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


VAL_SOURCES = ("train", "test", "official")


def make_split(table: pd.DataFrame, val_fraction: float, seed: int,
               val_source: str = "train") -> dict[str, pd.DataFrame]:
    """{'train', 'val', 'test'} manifests sorted by label then image_id.

    val_source='train': a stratified, seeded split of the training images (a release's own
    val images count as training images); test is used once, at the end.
    val_source='test': validation is the test set, as in the reference code.
    val_source='official': the release's own validation split.
    """
    if val_source not in VAL_SOURCES:
        raise ValueError(f"config.split.val_source: {val_source!r} must be one of {', '.join(VAL_SOURCES)}")
    test = table[table.subset == "test"]
    if val_source == "official":
        train, val = table[table.subset == "train"], table[table.subset == "val"]
        if val.empty:
            raise DatasetError("config.split.val_source: 'official', but this dataset has no validation split of "
                               "its own (flowers102, dtd, medmnist and table with files.val have one); "
                               "set it to train (a stratified split of train) or test")
    else:
        train = table[table.subset.isin(["train", "val"])]
        if val_source == "train":
            train, val = stratified_split(train, val_fraction, seed)
        else:
            val = test

    def tidy(part: pd.DataFrame) -> pd.DataFrame:
        part = part.sort_values(["label", "image_id"])[MANIFEST_COLUMNS].reset_index(drop=True)
        return part.astype({"image_id": str, "path": str, "label": "int64", "class_name": str})

    return {"train": tidy(train), "val": tidy(val), "test": tidy(test)}


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_digit_cub(root: str | Path, classes: Iterable[Iterable[tuple[int, Image.Image]]],
                    train_per_class: int) -> Path:
    """Write digits as a CUB_200_2011-style folder of RGB PNGs; returns root.

    classes: per digit 0..9, its (source index, image) pairs in order; the first
    ``train_per_class`` of each are training images, the rest test. Class folders are
    ``001.digit_zero`` ... ``010.digit_nine`` (prompt names ``digit zero`` ...), files
    ``<word>_<source index:04d>.png``. The demo dataset and the mini world's target dataset
    (:mod:`sdi.mini_corpus`) are both written here.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, labels, splits = [], [], []
    image_id = 0
    for digit, (word, items) in enumerate(zip(DIGIT_WORDS, classes, strict=True)):
        folder = f"{digit + 1:03d}.digit_{word}"
        (root / "images" / folder).mkdir(exist_ok=True)
        for k, (i, img) in enumerate(items):
            image_id += 1
            rel = f"{folder}/{word}_{int(i):04d}.png"
            img.convert("RGB").save(root / "images" / rel)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {digit + 1}")
            splits.append(f"{image_id} {int(k < train_per_class)}")
    (root / "classes.txt").write_text(
        "".join(f"{d + 1} {d + 1:03d}.digit_{w}\n" for d, w in enumerate(DIGIT_WORDS)))
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
