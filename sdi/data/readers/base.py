"""What every dataset reader shares: the manifest columns, its errors (naming the config key),
release folders, image listing and the check that each image decodes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sdi.io.images import IMAGE_SUFFIXES, is_image_name, load_rgb
from sdi.io.lazy import lazy_import
from sdi.io.schemas import MANIFEST_COLUMNS

np = lazy_import("numpy")  # loaded on first use: planning imports this module
pd = lazy_import("pandas")


SUBSETS = ("train", "val", "test")
SHOWN = 20  # problems listed in one error message before "... and N more"


class DatasetError(ValueError):
    """A dataset folder is missing, malformed, or holds files that cannot be used."""


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


ALLOW_MISSING_TEST_KEY = "config.split.allow_missing_test_classes"


def prompt_name(name: str) -> str:
    """A class name as the prompts and the filter's text see it: CLIP's tokenizer lowercases and
    splits on whitespace, so ``Cat``, ``cat`` and `` cat `` are one prompt."""
    return " ".join(name.casefold().split())


def _finish(rows: list[dict], class_names: list[str], where: str | Path, *, names_from: str,
            class_ids: list[str] | None = None, allow_missing_test_classes: bool = False) -> pd.DataFrame:
    """The reader's table, after the checks every format shares (:func:`_check_classes`)."""
    table = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, "subset"])
    table = table.astype({"image_id": str, "path": str, "label": "int64", "class_name": str, "subset": str})
    dup = table.image_id[table.image_id.duplicated()].unique().tolist()
    if dup:
        raise DatasetError(f"{where}: {len(dup)} image(s) listed more than once (an image belongs to one "
                           f"split only); remove the extra lines:{_listing(dup)}")
    table.attrs["missing_test_classes"] = _check_classes(table, class_names, where, names_from=names_from,
                                                         class_ids=class_ids,
                                                         allow_missing_test_classes=allow_missing_test_classes)
    return table


def _check_classes(table: pd.DataFrame, class_names: list[str], where: str | Path, *, names_from: str,
                   class_ids: list[str] | None = None, allow_missing_test_classes: bool = False) -> list[str]:
    """Raise DatasetError unless every class has training images, a prompt name of its own and a test image
    (the last only with allow_missing_test_classes false). Returns the names of the classes without a test
    image (allowed, so the split's log and the metrics say it).

    names_from: where the names came from and how to rename a class, for the collision message
    (e.g. "set config.datasets.x.class_names to ..."); class_ids: how the dataset itself calls each class
    (its folder, ``folder train/Cat``), default ``label <i>``.
    """
    ids = class_ids or [f"label {i}" for i in range(len(class_names))]
    train_counts = table[table.subset == "train"].groupby("label").size()
    empty = [f"{name} (label {i})" for i, name in enumerate(class_names) if train_counts.get(i, 0) == 0]
    if empty:
        raise DatasetError(f"{where}: {len(empty)} class(es) have no training images: {', '.join(empty)}; "
                           "a class present in test or val but not in train cannot be learned: "
                           "add training images or remove the class")
    _check_prompt_names(class_names, ids, where, names_from)
    test_counts = table[table.subset == "test"].groupby("label").size()
    absent = [i for i in range(len(class_names)) if test_counts.get(i, 0) == 0]
    if absent and not allow_missing_test_classes:
        listed = [f"{class_names[i]!r} ({ids[i]}, {int(train_counts.get(i, 0))} training image(s))" for i in absent]
        raise DatasetError(f"{where}: {len(absent)} of {len(class_names)} class(es) have training images but no "
                           f"test image, so the test accuracy would silently leave them out:{_listing(listed)}\n"
                           f"Add test images for them, or set {ALLOW_MISSING_TEST_KEY}: true to accept it "
                           "(metrics.json and results/summary.md then say over how many classes the accuracy is)")
    return [class_names[i] for i in absent]


def _check_prompt_names(class_names: list[str], ids: list[str], where: str | Path, names_from: str) -> None:
    """Raise DatasetError if two classes share a prompt name (:func:`prompt_name`) or one has none."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(class_names):
        groups.setdefault(prompt_name(name), []).append(i)
    blank = [ids[i] for i in groups.get("", [])]
    if blank:
        raise DatasetError(f"{where}: {len(blank)} class(es) have an empty name, which gives an empty prompt:"
                           f"{_listing(blank)}\n{names_from}")
    shared = [" and ".join(f"{class_names[i]!r} ({ids[i]})" for i in members) + f" -> {shared!r}"
              for shared, members in groups.items() if len(members) > 1]
    if shared:
        raise DatasetError(f"{where}: {len(shared)} prompt name(s) shared by several classes (prompts and the "
                           "filter see names lowercased, with spaces collapsed), so those classes would get the "
                           f"same prompt and filter text:{_listing(shared)}\n{names_from}")


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


def require_root(root: str | Path, key: str, set_to: str) -> Path:
    """``root`` as a Path if it is a folder, else a DatasetError: "<key>: folder <root> does not exist; set it to
    <set_to>". The one check of a dataset folder's existence in the readers (planning makes it once more,
    for every enabled dataset at once: sdi.config.validation.path_errors)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{key}: folder {root} does not exist; set it to {set_to}")
    return root


def release_root(fmt: str, root: str | Path, key: str = "datasets.<name>.root") -> Path:
    """The folder holding the release's own files: root itself, or the release's folder
    inside torchvision's download root (e.g. ``root/flowers-102``)."""
    release = RELEASES[fmt]
    root = require_root(root, key, f"the {release.title} folder (it holds {release.holds})")
    for sub in ("", *release.download_dirs):
        if (root / sub / release.marker).exists():
            return root / sub
    tried = " or ".join(str(root / sub / release.marker) for sub in ("", *release.download_dirs))
    raise DatasetError(f"{key}: {root} is not a {release.title} folder ({tried} does not exist); set it to the "
                       f"folder that holds {release.holds} as extracted from the release")


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


def image_files(folder: Path, skipped: dict[str, int] | None = None) -> list[str]:
    """Image files anywhere under a class folder, as torchvision's ImageFolder finds them:
    recursively (symlinks followed), an extension in ``IMG_EXTENSIONS`` (any case); paths
    relative to folder, sorted. Hidden files and folders (``.name``) are skipped too.

    Each real folder is walked once: a symbolic link back to a folder already walked (``again -> .``,
    a loop that ``os.walk(followlinks=True)`` would follow until the path is too long, multiplying the
    class's images) is left out and counted as ``symlinked folder walked already``.

    skipped: counts of the files left out, by kind (``.txt``, ``Thumbs.db`` -> ``.db``,
    ``hidden``, ``no extension``), added to in place.
    """
    from sdi.io.fingerprints import require_utf8

    found = []
    skipped = {} if skipped is None else skipped
    walked: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in walked:
            dirs[:] = []
            skipped["symlinked folder walked already"] = skipped.get("symlinked folder walked already", 0) + 1
            continue
        walked.add((st.st_dev, st.st_ino))
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
    """``3 file(s) that are not images (.txt: 1, .db: 1, hidden: 1)``, or '' when none; folders that a
    symbolic link leads back to are named apart (each real folder's images are read once)."""
    loops = skipped.get("symlinked folder walked already", 0)
    files = {k: n for k, n in skipped.items() if k != "symlinked folder walked already"}
    parts = []
    if files:
        kinds = ", ".join(f"{k}: {n}" for k, n in files.items())
        parts.append(f"{sum(files.values())} file(s) that are not images ({kinds}; a hidden folder counts once)")
    if loops:
        parts.append(f"{loops} symbolic link(s) to a folder read already (a loop such as 'again -> .'; "
                     "its images were read once)")
    return "; ".join(parts)


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
