"""Real, messy inputs: the first targeted call for a new dataset with user model folders, the
one image decoder (16-bit, EXIF orientation), ImageFolder read as torchvision reads it, and
no silent degradation (GMM components, tiny expansions, empty validation, scheduler names,
file names that are not UTF-8, export names)."""

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from sdi.config.validation import SCHEDULERS, ConfigError, validate_config
from sdi.data.readers import dataset_listing
from sdi.data.readers.base import DatasetError
from sdi.data.readers.imagefolder import read_imagefolder
from sdi.data.split import make_split, stratified_split
from sdi.io.fingerprints import ListingError
from sdi.io.images import IMG_EXTENSIONS, load_rgb
from sdi.pipeline.export import class_dir, export_table
from sdi.pipeline.sampling import n_generated, sample_class_embeddings
from sdi.pipeline.training_set import method_training_set

from helpers import ONE_THREAD_JOBS, REPO, copy_workflow, edit_config, run_snakemake, tree_digest

SCHEMA = REPO / "config" / "schema.yaml"


def _grey_png16(path: Path, grey8: int, size=(10, 6)) -> None:
    """A 16-bit greyscale PNG whose every pixel is the 8-bit grey ``grey8`` at full 16-bit scale."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], grey8 * 257, np.uint16)).save(path)


def _rotated_jpeg(path: Path, size=(40, 20)) -> None:
    """A JPEG stored size[0] x size[1] with EXIF orientation 6 (a phone held upright)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif.tobytes())


def _png(path: Path, seed: int, size=(16, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def messy_imagefolder(root: Path) -> Path:
    """train/ and test/ of three classes (one named in Unicode), with images in nested folders,
    a 16-bit PNG, an EXIF-rotated JPEG, and clutter that is no image (Thumbs.db, notes.txt, .DS_Store)."""
    k = 0
    for part, n in (("train", 4), ("test", 2)):
        for cls in ("café crème", "dog", "eagle"):
            for i in range(n):
                k += 1
                sub = "2019_batch/" if i % 2 else ""  # half of them one folder deeper
                _png(root / part / cls / f"{sub}img{i}.png", k)
    _grey_png16(root / "train" / "dog" / "scans" / "deep" / "scan16.png", 100)
    _rotated_jpeg(root / "train" / "eagle" / "phone.JPG")
    for clutter in ("train/dog/Thumbs.db", "train/dog/notes.txt", "train/eagle/.DS_Store", "test/dog/README"):
        (root / clutter).write_bytes(b"not an image")
    return root


# --- The image decoder ------------------------------------------------------------------------


@pytest.mark.parametrize("grey", [0, 1, 100, 200, 254, 255])
def test_16bit_png_keeps_its_grey(tmp_path, grey):
    path = tmp_path / "g.png"
    _grey_png16(path, grey)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # really decoded as a wide mode, not 8-bit
    pixels = np.asarray(load_rgb(path)).astype(int)
    assert pixels.shape == (6, 10, 3) and np.abs(pixels - grey).max() <= 1


def test_wide_modes_are_scaled_by_range_not_clipped(tmp_path):
    ramp16 = np.linspace(0, 65535, 64 * 8).astype(np.uint16).reshape(8, 64)
    Image.fromarray(ramp16).save(tmp_path / "ramp16.png")
    ramp_f = np.linspace(0.0, 1.0, 64 * 8, dtype=np.float32).reshape(8, 64)
    Image.fromarray(ramp_f, "F").save(tmp_path / "ramp_f.tif")
    wide = (np.linspace(-1e6, 1e6, 64 * 8).astype(np.int32)).reshape(8, 64)
    Image.fromarray(wide, "I").save(tmp_path / "wide_i.tif")
    for name in ("ramp16.png", "ramp_f.tif", "wide_i.tif"):
        grey = np.asarray(load_rgb(tmp_path / name))[..., 0]
        # a ramp over the whole range stays a ramp: every level band present, no clipping to white
        assert grey.min() == 0 and grey.max() == 255, name
        assert (grey == 255).mean() < 0.05 and len(np.unique(grey)) > 200, name


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "phone.jpg"
    _rotated_jpeg(path, size=(40, 20))
    with Image.open(path) as raw:
        assert raw.size == (40, 20)
    assert load_rgb(path).size == (20, 40)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    r, g, b = load_rgb(tmp_path / "a.gif").getpixel((4, 4))
    assert r > 200 and b < 50


# --- ImageFolder as torchvision reads it --------------------------------------------------------


def test_img_extensions_are_torchvisions():
    from torchvision.datasets.folder import IMG_EXTENSIONS as TORCHVISION

    assert IMG_EXTENSIONS == TORCHVISION


def test_imagefolder_counts_equal_torchvisions(tmp_path):
    from torchvision.datasets import ImageFolder

    root = messy_imagefolder(tmp_path / "data")
    table = read_imagefolder(root)
    for part in ("train", "test"):
        reference = ImageFolder(str(root / part))
        ours = table[table.subset == part]
        assert sorted(ours.path) == sorted(p for p, _ in reference.samples)
        folder_of = {i: c for c, i in reference.class_to_idx.items()}
        assert ours.groupby("label").size().rename(folder_of).to_dict() == \
            pd.Series([folder_of[t] for t in reference.targets]).value_counts().to_dict()
    # 12 + 2 nested images in train, 6 in test; the clutter skipped and counted by kind
    assert (table.subset == "train").sum() == 14 and (table.subset == "test").sum() == 6
    assert table.attrs["skipped"] == {".db": 1, ".txt": 1, "hidden": 1, "no extension": 1}
    assert "café crème" in set(table.class_name)


def test_non_utf8_file_name_is_named_not_a_traceback(tmp_path):
    root = messy_imagefolder(tmp_path / "data")
    bad = os.path.join(os.fsencode(root / "train" / "dog"), b"caf\xe9.png")
    with open(bad, "wb") as f:
        f.write((root / "train" / "dog" / "img0.png").read_bytes())
    with pytest.raises(ListingError, match=r"caf\\xe9\.png: file name is not valid UTF-8"):
        dataset_listing("imagefolder", root, "config.datasets.x.root", {})
    with pytest.raises(ListingError, match=r"caf\\xe9\.png"):
        read_imagefolder(root)


# --- No silent degradation -------------------------------------------------------------------------


def _embeddings(sizes: dict[int, int], d: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"image_id": f"{c}-{i}", "label": c, "class_name": f"class {c}", "embedding": rng.normal(size=d)}
            for c, n in sizes.items() for i in range(n)]
    return pd.DataFrame(rows)


def test_gmm_records_and_warns_about_fewer_components(caplog):
    with caplog.at_level(logging.WARNING, logger="sdi.pipeline.sampling"):
        samples = sample_class_embeddings(_embeddings({0: 2, 1: 8}), method="gmm", n_components=5, expansion=2,
                                          seed=0, n_shards=1)
    assert samples.groupby("label").n_components.unique().map(list).to_dict() == {0: [2], 1: [5]}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "class 0" in warned[0] and "2 component(s)" in warned[0]
    gauss = sample_class_embeddings(_embeddings({0: 2}), method="gauss", expansion=1, seed=0, n_shards=1)
    assert (gauss.n_components == 1).all()


def test_positive_expansion_gives_every_class_a_sample():
    assert n_generated(3, 0.1) == 1 and n_generated(1, 0.4) == 1 and n_generated(10, 0.1) == 1
    assert n_generated(4, 0.5) == 2 and n_generated(30, 40) == 1200 and n_generated(3, 0) == 0
    samples = sample_class_embeddings(_embeddings({0: 3, 1: 2}), method="text", expansion=0.1, seed=0, n_shards=1)
    assert samples.groupby("label").size().to_dict() == {0: 1, 1: 1}


def test_a_class_without_synthetic_images_is_reported(caplog):
    real = pd.DataFrame({"path": ["r0", "r1"], "label": [0, 1]})
    kept = pd.DataFrame({"path": ["s0"], "label": [0], "sample_id": ["0000-000000"], "rank": [1], "kept": [True]})
    with caplog.at_level(logging.WARNING, logger="sdi.pipeline.training_set"):
        train, _ = method_training_set(real, kept, variant="gauss", pool="kept")
    assert (train.source == "synthetic").sum() == 1
    assert any("no synthetic image" in r.getMessage() and "[1]" in r.getMessage() for r in caplog.records)


def _train_table(per_class: list[int]) -> pd.DataFrame:
    rows = [{"image_id": f"{c}/{i}", "path": f"{c}/{i}.png", "label": c, "class_name": f"c{c}", "subset": "train"}
            for c, n in enumerate(per_class) for i in range(n)]
    return pd.DataFrame(rows)


def test_validation_is_never_silently_empty():
    # 2 images per class and the default 0.2: per-class rounding gives 0 everywhere
    table = _train_table([2] * 10)
    train, val = stratified_split(table, 0.2, seed=0)
    assert len(val) == 4 and val.label.is_unique and len(train) + len(val) == 20
    assert train.groupby("label").size().min() == 1  # no class loses its last training image
    again = stratified_split(table, 0.2, seed=0)[1]
    assert sorted(again.image_id) == sorted(val.image_id)
    # the usual case is unchanged: round(n x f) per class
    assert stratified_split(_train_table([5, 7, 3]), 0.3, seed=1)[1].groupby("label").size().tolist() == [2, 2, 1]
    # one image per class: no validation set is possible, and the error says which key and why
    with pytest.raises(DatasetError, match=r"config\.split\.val_fraction.*images per class: 0: 1, 1: 1"):
        make_split(_train_table([1, 1]), 0.2, seed=0)


def _demo_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("change, key", [
    ({"split": {"val_fraction": 0.0}}, "config.split.val_fraction"),
    ({"generation": {"scheduler": "DDIM"}}, "config.generation.scheduler"),
])
def test_bad_split_and_scheduler_values_fail_at_planning(change, key):
    config = _demo_config()
    for section, values in change.items():
        config.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError) as exc:
        validate_config(config, SCHEMA)
    assert key in str(exc.value)
    if "scheduler" in key:
        assert "DPMSolverMultistepScheduler" in str(exc.value)  # lists the valid names


def test_variant_scheduler_override_is_checked():
    config = _demo_config()
    first = next(iter(config["variants"]))
    config["variants"][first]["scheduler"] = "euler"
    with pytest.raises(ConfigError, match=rf"config\.variants\.{first}\.scheduler: 'euler'"):
        validate_config(config, SCHEMA)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers schedulers on numpy 2
def test_every_listed_scheduler_builds(tiny_models):
    from sdi.models.schedulers import make_scheduler

    for name in SCHEDULERS:
        scheduler = make_scheduler(name, tiny_models["sd"])
        assert type(scheduler).__name__ == ("DDIMScheduler" if name == "ddim" else name)


# --- Export names ------------------------------------------------------------------------------------


def test_export_keeps_unicode_names_and_single_extensions(tmp_path):
    root = messy_imagefolder(tmp_path / "data")
    split = make_split(read_imagefolder(root), 0.25, seed=0)
    train = split["train"].assign(source="real", variant=None)[["path", "label", "source", "variant"]]
    files = export_table(split, train).file_name
    assert class_dir(0, "café crème") == "0000_café_crème"
    assert class_dir(3, 'a/b:c*"d') == "0003_a_b_c_d"
    assert any(f.startswith("0000_café_crème/real-") for f in files)
    assert not any(f.endswith((".png.png", ".JPG.JPG", ".jpg.jpg")) for f in files)
    assert "0002_eagle/real-train_eagle_phone.JPG" in set(files)


# --- The workflow on a new dataset, first call ----------------------------------------------------

SMALL = {
    "projector": {"epochs": 1, "batch_size": 4, "checkpoint_every": 1},
    "samplers": {"gauss": {"method": "gauss", "expansion": 1}, "text": {"method": "text", "expansion": 1}},
    "generation": {"shards": 1, "steps": 2, "batch_size": 8},
    "resources": ONE_THREAD_JOBS,
}


def _new_dataset_workflow(dest: Path, datasets: dict, models: dict | None) -> Path:
    workflow = copy_workflow(dest)
    user_models = {"models": {"tiny": False, **{k: str(v) for k, v in models.items()}}} if models else {}
    edit_config(workflow, **SMALL, datasets={"demo": {"root": None}, **datasets}, **user_models)
    return workflow


@pytest.mark.workflow
def test_first_targeted_call_on_a_new_dataset_with_user_models(tmp_path, tiny_models):
    data = messy_imagefolder(tmp_path / "user" / "pets")
    models = {name: shutil.copytree(folder, tmp_path / "user" / "models" / name)
              for name, folder in tiny_models.items()}
    before = tree_digest(tmp_path / "user")
    datasets = {"pets": {"format": "imagefolder", "root": str(data)}}

    # a dry run as the very first call in one fresh working directory ...
    dry = _new_dataset_workflow(tmp_path / "dry", datasets, models)
    out = run_snakemake(dry, "-n", "--cores", "2", "results/pets/filtered")
    assert "split" in out.stdout and "filter_default" in out.stdout

    # ... and the real run as the very first call in another
    workflow = _new_dataset_workflow(tmp_path / "wf", datasets, models)
    run_snakemake(workflow, "--cores", "2", "results/pets/filtered")
    run_snakemake(workflow, "--cores", "2", "results/pets/export/default")

    split = pd.concat([pd.read_parquet(workflow / "results/pets/split" / f"{p}.parquet") for p in ("train", "val")])
    assert len(split) == 14 and split.path.str.contains("/2019_batch/").sum() == 6
    log = (workflow / "logs/pets/split.log").read_text()
    assert "skipped 4 file(s) that are not images (.db: 1, .txt: 1, hidden: 1, no extension: 1" in log
    kept = pd.read_parquet(workflow / "results/pets/filtered/manifest.parquet")
    assert set(kept.class_name) == {"café crème", "dog", "eagle"}
    exported = {p.relative_to(workflow / "results/pets/export/default").as_posix()
                for p in (workflow / "results/pets/export/default").rglob("*") if p.is_file()}
    assert any(p.startswith("train/0000_café_crème/real-") for p in exported)
    assert not any(p.endswith(".png.png") for p in exported)
    assert tree_digest(tmp_path / "user") == before  # the user's folders are only ever read


@pytest.mark.workflow
def test_one_call_plans_the_split_of_several_new_datasets(tmp_path):
    datasets = {}
    for d in range(6):
        root = tmp_path / f"data{d}"
        for part in ("train", "test"):
            for cls in ("a", "b"):
                for i in range(2):
                    _png(root / part / cls / f"{i}.png", d * 10 + i)
        datasets[f"set{d}"] = {"format": "imagefolder", "root": str(root)}
    workflow = _new_dataset_workflow(tmp_path / "wf", datasets, None)
    targets = [f"results/set{d}/split" for d in range(6)]
    out = run_snakemake(workflow, "-n", "--cores", "2", *targets)
    assert out.stdout.count("rule split:") == 6


@pytest.mark.workflow
def test_non_utf8_name_fails_planning_naming_the_file(tmp_path):
    root = messy_imagefolder(tmp_path / "data")
    with open(os.path.join(os.fsencode(root / "test" / "dog"), b"\xff\xfe.png"), "wb") as f:
        f.write(b"x")
    workflow = _new_dataset_workflow(tmp_path / "wf", {"odd": {"format": "imagefolder", "root": str(root)}}, None)
    proc = run_snakemake(workflow, "-n", "--cores", "2", "results/odd/split", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config.datasets.odd.root: " in output and "\\xff\\xfe.png: file name is not valid UTF-8" in output
    assert "UnicodeEncodeError" not in output
