"""MedMNIST (2D) from its official ``.npz`` files: label names, arrays -> PNG files, reader.

An ``.npz`` of the release holds ``{train,val,test}_images`` (N x H x W, or N x H x W x 3,
uint8) and ``{train,val,test}_labels`` (N x 1). Images are written once to PNG files
(rule medmnist_images) so that every later stage reads image files, as for every other
dataset.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from sdi.data.readers.base import SUBSETS, DatasetError, _finish, _require_images, _sibling_key
from sdi.io.artifacts import atomic_dir
from sdi.io.lazy import lazy_import

np = lazy_import("numpy")  # loaded on first use: planning imports this module
pd = lazy_import("pandas")

# Label names of the 2D flags, exactly as the `medmnist` package's INFO has them
# (MedMNIST v2.1 / v3, github.com/MedMNIST/MedMNIST, medmnist/info.py).
MEDMNIST_LABELS: dict[str, list[str]] = {
    "pathmnist": ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"],
    "chestmnist": ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                   "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"],
    "dermamnist": ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                   "vascular lesions"],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "retinamnist": ["0", "1", "2", "3", "4"],
    "breastmnist": ["malignant", "normal, benign"],
    "bloodmnist": ["basophil", "eosinophil", "erythroblast",
                   "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
                   "monocyte", "neutrophil", "platelet"],
    "tissuemnist": ["Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
                    "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
                    "Thick Ascending Limb"],
    "organamnist": ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
                    "lung-left", "lung-right", "pancreas", "spleen"],
    "organcmnist": ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
                    "lung-left", "lung-right", "pancreas", "spleen"],
    "organsmnist": ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
                    "lung-left", "lung-right", "pancreas", "spleen"],
}
MULTI_LABEL = {"chestmnist"}  # 14 binary labels per image: not a single-label classification task
SIZES = (28, 64, 128, 224)
INDEX = "index.csv"


def _check_flag(flag: str, key: str) -> list[str]:
    flag_key = _sibling_key(key, "flag")
    if flag in MULTI_LABEL:
        raise DatasetError(f"{flag_key}: {flag} is multi-label (several findings per image); sdi trains "
                           "single-label classifiers, so choose a multi-class flag")
    if flag not in MEDMNIST_LABELS:
        raise DatasetError(f"{flag_key}: {flag!r} is not a 2D MedMNIST flag; use one of "
                           f"{', '.join(f for f in MEDMNIST_LABELS if f not in MULTI_LABEL)}")
    return MEDMNIST_LABELS[flag]


def npz_path(root: str | Path, flag: str, size: int = 28, key: str = "datasets.<name>.root") -> Path:
    """``<root>/<flag>.npz`` (28 x 28, also ``<flag>_28.npz``) or ``<root>/<flag>_<size>.npz``."""
    _check_flag(flag, key)
    if size not in SIZES:
        raise DatasetError(f"{_sibling_key(key, 'size')}: {size!r} must be one of {', '.join(map(str, SIZES))}")
    root = Path(root)
    names = [f"{flag}.npz", f"{flag}_28.npz"] if size == 28 else [f"{flag}_{size}.npz"]
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"{key}: {root} holds no {' or '.join(names)}; set it to the folder of the MedMNIST "
                       f".npz files (the medmnist package's root, e.g. ~/.medmnist) or download {names[0]}")


def _npy_member(archive: zipfile.ZipFile, name: str, npz: Path) -> zipfile.ZipInfo:
    try:
        return archive.getinfo(f"{name}.npy")
    except KeyError:
        present = sorted(n.removesuffix(".npy") for n in archive.namelist())
        raise DatasetError(f"{npz}: no array {name} (arrays: {', '.join(present) or 'none'}); use the official "
                           "MedMNIST .npz, which holds {train,val,test}_{images,labels}") from None


def _read_header(stream) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """(shape, fortran_order, dtype) of a .npy stream; None for a format version without a
    public header reader."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    return None


def _iter_rows(npz: Path, name: str, block_bytes: int = 128 << 20) -> Iterator[np.ndarray]:
    """Blocks of rows (about block_bytes each) of one array of an .npz, without loading it
    whole: the 224 x 224 files hold about 16 GB of pixels."""
    with zipfile.ZipFile(npz) as archive, archive.open(_npy_member(archive, name, npz)) as stream:
        header = _read_header(stream)
        if header is None or header[1] or header[2].hasobject:
            with np.load(npz) as data:
                yield data[name]
            return
        shape, _, dtype = header
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        chunk = max(1, block_bytes // max(1, row_bytes))
        for start in range(0, shape[0], chunk):
            n = min(chunk, shape[0] - start)
            yield np.frombuffer(stream.read(n * row_bytes), dtype=dtype).reshape((n, *shape[1:]))


def _array_shape(npz: Path, name: str) -> tuple[int, ...]:
    with zipfile.ZipFile(npz) as archive, archive.open(_npy_member(archive, name, npz)) as stream:
        header = _read_header(stream)
    if header is None:
        with np.load(npz) as data:
            return tuple(data[name].shape)
    return tuple(header[0])


def write_medmnist_images(npz: str | Path, out_dir: str | Path, flag: str, size: int = 28, threads: int = 4,
                          key: str = "datasets.<name>.root") -> pd.DataFrame:
    """Write every image of a MedMNIST .npz as ``out_dir/{train,val,test}/<index>.png`` and an
    ``index.csv`` (image_id, path relative to out_dir, label, subset). The folder is built
    under a temporary name and renamed into place. Returns the index."""
    npz, out_dir = Path(npz), Path(out_dir)
    classes = _check_flag(flag, key)
    if not zipfile.is_zipfile(npz):
        raise DatasetError(f"{npz}: not an .npz archive; use the official MedMNIST file")
    shapes = {f"{s}_{kind}": _array_shape(npz, f"{s}_{kind}") for s in SUBSETS for kind in ("images", "labels")}
    for subset in SUBSETS:
        images, labels = shapes[f"{subset}_images"], shapes[f"{subset}_labels"]
        if len(images) not in (3, 4) or (len(images) == 4 and images[-1] not in (1, 3)):
            raise DatasetError(f"{npz}: {subset}_images has shape {images}; expected N x H x W or N x H x W x 3 "
                               "(a 2D MedMNIST flag)")
        if images[1:3] != (size, size):
            raise DatasetError(f"{npz}: {subset}_images are {images[1]} x {images[2]}, but "
                               f"{_sibling_key(key, 'size')} is {size}; set it to {images[1]}")
        if len(labels) > 2 or (len(labels) == 2 and labels[1] != 1) or labels[0] != images[0]:
            raise DatasetError(f"{npz}: {subset}_labels has shape {labels} for {images[0]} images; expected "
                               f"{images[0]} x 1 (one class per image)")
    rows = []
    with atomic_dir(out_dir) as tmp, ThreadPoolExecutor(max(1, threads)) as pool:
        for subset in SUBSETS:
            labels = np.concatenate([b.reshape(len(b), -1)[:, 0] for b in _iter_rows(npz, f"{subset}_labels")])
            bad = np.flatnonzero((labels < 0) | (labels >= len(classes)))
            if len(bad):
                raise DatasetError(f"{npz}: {subset}_labels must be 0..{len(classes) - 1} ({flag} has "
                                   f"{len(classes)} classes); image {bad[0]} has {labels[bad[0]]}")
            (tmp / subset).mkdir(parents=True)
            width = max(6, len(str(len(labels))))
            start = 0
            for block in _iter_rows(npz, f"{subset}_images"):
                names = [f"{subset}/{i:0{width}d}.png" for i in range(start, start + len(block))]
                list(pool.map(lambda a, n: Image.fromarray(a.squeeze()).save(tmp / n), block, names))
                rows += [{"image_id": n.removesuffix(".png"), "path": n, "label": int(labels[start + j]),
                          "subset": subset} for j, n in enumerate(names)]
                start += len(block)
        index = pd.DataFrame(rows, columns=["image_id", "path", "label", "subset"])
        index.to_csv(tmp / INDEX, index=False)
    return index


def read_medmnist(images_dir: str | Path, key: str = "datasets.<name>.root", flag: str = "pathmnist",
                  size: int = 28, allow_missing_test_classes: bool = False) -> pd.DataFrame:
    """Read the PNG folder written by write_medmnist_images; class names from MEDMNIST_LABELS."""
    images_dir = Path(images_dir)
    classes = _check_flag(flag, key)
    index_path = images_dir / INDEX
    if not index_path.is_file():
        raise DatasetError(f"{index_path} does not exist; the folder is written by rule medmnist_images "
                           f"from the {flag} .npz (run the workflow, not the split alone)")
    index = pd.read_csv(index_path, dtype={"image_id": str, "path": str, "label": "int64", "subset": str})
    bad = index[(index.label < 0) | (index.label >= len(classes))]
    if len(bad):
        raise DatasetError(f"{index_path}: labels must be 0..{len(classes) - 1} for {flag}; "
                           f"e.g. {bad.image_id.iloc[0]} has {bad.label.iloc[0]}; delete the folder to rewrite it")
    index["path"] = [str(images_dir / p) for p in index.path]
    index["class_name"] = [classes[i] for i in index.label]
    _require_images(index.path, str(index_path))
    return _finish(index.to_dict("records"), classes, images_dir,
                   names_from=f"The names are MEDMNIST_LABELS[{flag!r}] (sdi.data.readers.medmnist).",
                   allow_missing_test_classes=allow_missing_test_classes)
