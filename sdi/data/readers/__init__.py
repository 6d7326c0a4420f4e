"""Dataset readers, one module per format (torchvision's ``datasets/`` layout).

Each format is one :class:`Format` in :data:`FORMATS`: how to read its rows (one table of
image_id, path, label, class_name, subset) and how to list the files its split reads (the
fingerprint that reruns the split when the dataset changes). ``read_dataset`` and
``dataset_listing`` dispatch on the format here, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sdi.data.readers import imagefolder, medmnist, table
from sdi.data.readers.base import RELEASES, DatasetError, _sibling_key, release_root, require_root
from sdi.data.readers.caltech101 import read_caltech101
from sdi.data.readers.cub import read_cub
from sdi.data.readers.dtd import read_dtd
from sdi.data.readers.fgvc_aircraft import read_fgvc_aircraft
from sdi.data.readers.flowers102 import read_flowers102
from sdi.data.readers.oxford_pets import read_oxford_pets
from sdi.data.readers.stanford_cars import read_stanford_cars
from sdi.io.fingerprints import Listing, ListingError, list_files
from sdi.io.lazy import lazy_import

pd = lazy_import("pandas")


def folder_listing(fmt: str, root: Path, key: str, options: dict) -> Listing:
    """Every file below the dataset folder (CUB's layout)."""
    return list_files(require_root(root, key, f"the dataset folder ({fmt} layout)"))


def release_listing(fmt: str, root: Path, key: str, options: dict) -> Listing:
    """Every file of a release folder (root itself or the release's folder in torchvision's download root)."""
    return list_files(release_root(fmt, root, key))


def npz_listing(fmt: str, root: Path, key: str, options: dict) -> Listing:
    raise ValueError("medmnist datasets are fingerprinted by their .npz file (rule medmnist_images)")


@dataclass(frozen=True)
class Format:
    read: Callable[..., pd.DataFrame]  # (root, key, **options) -> the dataset's table
    listing: Callable[[str, Path, str, dict], Listing]  # (format, root, key, options) -> what the split reads
    seeded: bool = False  # the reader draws the split itself and takes config.split.seed


FORMATS: dict[str, Format] = {
    "cub": Format(read_cub, folder_listing),
    "imagefolder": Format(imagefolder.read_imagefolder, imagefolder.listing),
    "flowers102": Format(read_flowers102, release_listing),
    "oxford_pets": Format(read_oxford_pets, release_listing),
    "stanford_cars": Format(read_stanford_cars, release_listing),
    "dtd": Format(read_dtd, release_listing),
    "fgvc_aircraft": Format(read_fgvc_aircraft, release_listing),
    "caltech101": Format(read_caltech101, release_listing, seeded=True),
    "medmnist": Format(medmnist.read_medmnist, npz_listing),
    "table": Format(table.read_table, table.listing),
}
assert set(RELEASES) <= set(FORMATS)


def _format(fmt: str, key: str) -> Format:
    if fmt not in FORMATS:
        raise DatasetError(f"{_sibling_key(key, 'format')}: {fmt!r} is not one of {sorted(FORMATS)}")
    return FORMATS[fmt]


def read_dataset(fmt: str, root: str | Path, key: str = "datasets.<name>.root", options: dict | None = None,
                 seed: int = 0, allow_missing_test_classes: bool = False) -> pd.DataFrame:
    """Read a dataset of any format. options: the format's own keys of the dataset's config
    entry (e.g. ``partition`` for dtd); seed: config.split.seed (caltech101 draws its split);
    allow_missing_test_classes: config.split.allow_missing_test_classes (else a class without a test
    image fails; allowed, their names are in ``table.attrs["missing_test_classes"]``).
    For medmnist, root is the folder of PNGs written by sdi.data.readers.medmnist.write_medmnist_images."""
    reader = _format(fmt, key)
    options = {k: v for k, v in (options or {}).items() if k != "builtin"}
    options["allow_missing_test_classes"] = allow_missing_test_classes
    if reader.seeded:
        options["seed"] = seed
    return reader.read(root, key, **options)


def dataset_listing(fmt: str, root: str | Path, key: str = "datasets.<name>.root",
                    options: dict | None = None) -> Listing:
    """A cheap fingerprint of everything a dataset's split reads: its files (path, size,
    mtime_ns), for sdi.io.fingerprints.write_listing. No image is opened. A folder that this user cannot
    read is a DatasetError naming the folder and the key (planning fails only this dataset's targets)."""
    try:
        return _format(fmt, key).listing(fmt, Path(root), key, options or {})
    except PermissionError as exc:
        raise DatasetError(f"{key}: cannot read {exc.filename or root} ({exc.strerror}); make the dataset folder "
                           f"readable by this user (e.g. chmod -R u+rX {root}) or set it to null to leave it out"
                           ) from None
    except ListingError as exc:
        if "cannot read" not in str(exc):
            raise
        raise DatasetError(f"{key}: {exc}; or set {key} to null to leave the dataset out") from None
