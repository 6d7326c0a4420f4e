"""Hardening cases: what 15 bad inputs a real user gives did before and after the fixes of 3a3afb2..e7a4dbd.

Each case builds its bad input in a fresh temporary folder, runs the project's public code on it as a user
would (functions with the same name and signature in both versions, or ``python -m snakemake`` in a copy of
the workflow of the ``sdi`` that is imported), and records one line: the result, or the first line of the
error that names the problem. Every case catches everything, so the script runs on either version; tiny
random models are built once (``sdi.models.tiny``). Temporary paths are shown as ``<tmp>``.

    .venv/bin/python bench/hardening_cases.py            # this checkout's sdi: the table on stdout
    git clone -q . /tmp/before && git -C /tmp/before checkout -q 52fa24c     # the code before the fixes, once
    PYTHONPATH=/tmp/before .venv/bin/python bench/hardening_cases.py --out /tmp/hc_before.json
    PYTHONPATH=$PWD .venv/bin/python bench/hardening_cases.py --out /tmp/hc_after.json
    .venv/bin/python bench/hardening_cases.py --compare /tmp/hc_before.json /tmp/hc_after.json

(from the checkout's root). PYTHONPATH wins over the editable install: the first line on stderr names the
checkout whose ``sdi`` runs, and whose workflow files the Snakemake cases copy. A run takes about 20 s on two
busy cores (one tiny generation and three Snakemake dry runs are most of it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

import sdi

ROOT = Path(sdi.__file__).resolve().parents[1]  # the checkout whose sdi is imported: its workflow and schema
SCHEMA = ROOT / "config" / "schema.yaml"
sys.path.insert(0, str(ROOT / "tests"))
# the imported checkout's test helpers: its workflow copied as a user's checkout, its fixture image writer
from helpers import copy_workflow, write_image  # noqa: E402

KEY = "config.datasets.pets.root"

CASES: list[tuple[str, str]] = []  # (number, case), in the order they run
RUNNERS: dict[str, Callable[[Path], str]] = {}


def order(number: str) -> tuple[int, str]:
    digits = number.rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(digits), number[len(digits):]


def case(number: str, name: str):
    def register(fn: Callable[[Path], str]) -> Callable[[Path], str]:
        CASES.append((number, name))
        CASES.sort(key=lambda c: order(c[0]))
        RUNNERS[name] = fn
        return fn
    return register


def first_line(exc: BaseException) -> str:
    """'Type: first line'; where that line only introduces a list ('...:'), the list's first item too."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    head = lines[0] if lines else ""
    if head.endswith(":") and len(lines) > 1:
        head = (head if len(head) <= 90 else head[:86] + "...:") + " " + lines[1]
    return f"{type(exc).__name__}: {head}"


def short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def imagefolder(root: Path, classes=("cat", "dog"), test_classes=None, per_class: int = 2) -> Path:
    k = 0
    for part, names in (("train", classes), ("test", classes if test_classes is None else test_classes)):
        for c in names:
            for i in range(per_class):
                k += 1
                write_image(root / part / c / f"{i}.png", seed=k)
    return root


def demo_config(**sections) -> dict:
    """config/config.yaml of the imported checkout with sections merged over it, one level deep."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for section, values in sections.items():
        config[section] = {**(config.get(section) or {}), **values}
    return config


def validated(config: dict) -> str:
    from sdi.config.validation import validate_config

    validate_config(config, SCHEMA)
    return "passes validate_config"


def snakemake(workdir: Path, *args: str) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, [line.strip() for line in (proc.stdout + "\n" + proc.stderr).splitlines() if line.strip()]


def naming_line(lines: list[str], *words: str) -> str:
    """The first line holding one of words (in the order given; Snakemake's header, which echoes the command, is
    skipped), with the next line after a one-word heading ('Error:'); else the last line."""
    lines = [line.split("Using workflow specific profile")[0].strip() for line in lines]
    body = [line for line in lines if line and not line.startswith(("Command:", "Config file(s):"))]
    for word in words:
        for i, line in enumerate(body):
            if word in line:
                heading = line.endswith(":") and " " not in line  # e.g. 'MissingRuleException:'
                return f"{line} {body[i + 1]}" if heading and i + 1 < len(body) else line
    return body[-1] if body else "(no output)"


# --------------------------------------------------------------------------- config
@case("1", "model folders given, models.tiny left on")
def model_folders_with_tiny(tmp: Path) -> str:
    from sdi.config.validation import model_paths

    models = tmp.parent / "models"
    config = demo_config(models={"sd": str(models / "sd"), "clip": str(models / "clip")})
    validated(config)
    return f"passes; model_paths sd = {model_paths(config)['sd']}"


@case("7", "generation.resolution: 100")
def resolution_100(tmp: Path) -> str:
    return validated(demo_config(generation={"resolution": 100}))


@case("8", "classifier.crop: 300 > resize: 256")
def crop_over_resize(tmp: Path) -> str:
    return validated(demo_config(classifier={"resize": 256, "crop": 300}))


@case("10", "dataset root ~/data/pets")
def tilde_root(tmp: Path) -> str:
    imagefolder(tmp / "data" / "pets")
    home = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp)
    try:
        config = demo_config()
        config["datasets"]["pets"] = {"format": "imagefolder", "root": "~/data/pets"}
        validated(config)
        return f"passes; root = {config['datasets']['pets']['root']}"
    finally:
        if home is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = home


@case("11", "models.vae pointing at the CLIP folder")
def clip_as_vae(tmp: Path) -> str:
    from sdi.models.folders import model_dims

    models = tmp.parent / "models"
    dims = model_dims(models / "sd", models / "clip", vae=models / "clip")
    return f"passes model_dims: {short(repr(dims), 160)}"


# --------------------------------------------------------------------------- datasets
def class_names_read(root: Path) -> str:
    from sdi.data.readers import read_dataset

    table = read_dataset("imagefolder", root, KEY)
    names = table.drop_duplicates("label").sort_values("label").class_name.tolist()
    return f"read: {len(names)} labels, class names {names}"


@case("2", "ImageFolder classes Cat and cat")
def case_collision(tmp: Path) -> str:
    return class_names_read(imagefolder(tmp / "pets", ["Cat", "cat"]))


@case("3", "ImageFolder classes 001.cat and 002.cat")
def prefix_collision(tmp: Path) -> str:
    return class_names_read(imagefolder(tmp / "pets", ["001.cat", "002.cat"]))


@case("4", "symlink loop train/cat/again -> . (8 cat images)")
def symlink_loop(tmp: Path) -> str:
    from sdi.data.readers import read_dataset

    root = imagefolder(tmp / "pets", per_class=8)
    (root / "train" / "cat" / "again").symlink_to(".")
    table = read_dataset("imagefolder", root, KEY)
    cat = table[(table.subset == "train") & (table.class_name == "cat")]
    return f"cat: {len(cat)} training images ({cat.path.map(os.path.realpath).nunique()} distinct files)"


@case("5", "a class in train but not in test")
def missing_test_class(tmp: Path) -> str:
    from sdi.data.readers import read_dataset
    from sdi.evaluation.metrics import classification_metrics

    root = imagefolder(tmp / "pets", ["c0", "c1", "c2"], test_classes=["c0", "c1"])
    try:
        table = read_dataset("imagefolder", root, KEY)
        read = (f"read: {table[table.subset == 'train'].label.nunique()} train classes, "
                f"{table[table.subset == 'test'].label.nunique()} test classes")
    except Exception as exc:  # the outcome is the error
        read = short(first_line(exc), 150)
    y_true = np.array([0, 0, 1, 1])
    m = classification_metrics(y_true, np.array([0, 2, 1, 1]), 3, ["c0", "c1", "c2"])
    over = ", ".join(f"{k}={m[k]}" for k in ("num_classes", "test_classes", "absent_classes") if k in m)
    return f"{read}; metrics: {over}"


def as_nobody(fn: Callable[[], str]) -> str:
    """fn() in a forked child with the uid and gid of nobody (root reads any folder); its outcome line."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            if os.getuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            out = fn()
        except BaseException as exc:  # everything goes back to the parent
            out = first_line(exc)
        os.write(write, out.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


@case("9", "a dataset folder this user cannot read")
def unreadable_folder(tmp: Path) -> str:
    from sdi.data.readers import dataset_listing

    base = Path(tempfile.mkdtemp(prefix="sdi-hc-unreadable-"))  # the run's temp folder is private to its owner
    try:
        base.chmod(0o755)
        root = imagefolder(base / "pets")
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (root / "train" / "dog").chmod(0o000)

        def listing() -> str:
            entries = dataset_listing("imagefolder", root, KEY).entries
            return f"listed: {sum(1 for e in entries if str(e[0]).endswith('.png'))} of 8 images"

        return as_nobody(listing).replace(str(base), "<tmp>")
    finally:
        for p in [base, *base.rglob("*")]:
            p.chmod(0o755)
        shutil.rmtree(base)


# --------------------------------------------------------------------------- sampling
@case("6", "a one-image class under the Gaussian sampler")
def one_image_class(tmp: Path) -> str:
    from sdi.pipeline.sampling import sample_class_embeddings

    rng = np.random.default_rng(0)
    embeddings = pd.DataFrame([{"image_id": f"{c}-{i}", "label": c, "class_name": f"class{c}",
                                "embedding": rng.normal(size=4)} for c, n in ((0, 1), (1, 3)) for i in range(n)])
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("sdi")
    logger.addHandler(handler)
    try:
        samples = sample_class_embeddings(embeddings, method="gauss", expansion=4, seed=0, n_shards=1)
    finally:
        logger.removeHandler(handler)
    one = np.stack(samples[samples.label == 0].vector)
    spread = float(np.ptp(one, axis=0).max())
    warned = f"warning: {short(records[0].getMessage(), 150)}" if records else "no warning"
    return f"{warned}; class 0: {len(one)} samples, max spread {spread:.1e}"


# --------------------------------------------------------------------------- outputs
@case("12", "a generated PNG truncated after its shard finished")
def truncated_png(tmp: Path) -> str:
    from sdi.models.generator import GenerationSettings, ImageGenerator
    from sdi.pipeline.filtering import filter_generated
    from sdi.pipeline.generation import generate_shard, write_manifest

    models = tmp.parent / "models"
    generator = ImageGenerator.from_folders(models / "sd", scheduler="ddim", dtype="fp32", device="cpu")
    rng = np.random.default_rng(0)
    names = ["digit zero", "digit one"]
    samples = pd.DataFrame([{"sample_id": f"{i % 2:04d}-{i:06d}", "label": i % 2, "class_name": names[i % 2],
                             "sample_index": i // 2, "seed": 100 + i, "shard": 0,
                             "vector": rng.normal(size=32).astype(np.float32)} for i in range(4)])
    variant = tmp / "sei" / "v"
    manifest = generate_shard(samples, generator, variant, GenerationSettings(steps=2, guidance_scale=2.0),
                              batch_size=2)
    shard_file = variant / "shards" / "0.parquet"
    write_manifest(manifest, shard_file)
    victim = Path(manifest.path[1])
    os.truncate(victim, 100)
    try:
        scored = filter_generated(manifest, models / "clip", 0.5, tmp / "filtered", device="cpu")
        outcome = f"filtered: {len(scored)} images scored, {int(scored.kept.sum())} kept"
    except Exception as exc:  # the outcome is the error
        outcome = re.sub(r" \(sha256 [0-9a-f]+\.\.\.\)", "", first_line(exc).replace(str(variant), "sei/v"))
        outcome = short(outcome.split("; removed them")[0], 190)  # what was removed is checked below
    gone = [what for what, p in (("PNG", victim), ("shard manifest", shard_file)) if not p.exists()]
    return f"{outcome}; removed: {', '.join(gone) if gone else 'nothing'}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@case("15", "editing an exported real image in place")
def export_edit(tmp: Path) -> str:
    from sdi.pipeline.export import export_dataset

    split, seed = {}, 0
    for s, n in (("train", 2), ("val", 1), ("test", 1)):
        rows = []
        for label, name in enumerate(["digit zero", "digit one"]):
            for k in range(n):
                image_id = f"{s}_{label}_{k}"
                path = write_image(tmp / "data" / s / str(label) / f"{image_id}.png", seed=seed)
                seed += 1
                rows.append({"image_id": image_id, "path": str(path), "label": label, "class_name": name})
        split[s] = pd.DataFrame(rows)
    table = export_dataset(split, tmp / "export", dataset="d", method="real")
    row = table[table.split == "train"].iloc[0]
    source, exported = Path(row.path), tmp / "export" / "train" / row.file_name
    before = sha256(source)
    with open(exported, "r+b") as f:
        f.write(b"\x00" * 64)
    how = table.link.iloc[0] if "link" in table else "?"
    changed = "the source image CHANGED" if sha256(source) != before else "the source image is unchanged"
    return f"exported {len(table)} files (link: {how}); after the edit {changed}"


# --------------------------------------------------------------------------- the command line
@case("13", "target results/nope/filtered (unknown dataset)")
def unknown_target(tmp: Path) -> str:
    rc, lines = snakemake(copy_workflow(tmp / "wf"), "-n", "--cores", "1", "results/nope/filtered")
    return f"rc {rc}: {short(naming_line(lines, 'MissingRule', 'nope', 'Error'))}"


@case("14", "config/config.yaml not YAML")
def config_not_yaml(tmp: Path) -> str:
    workflow = copy_workflow(tmp / "wf")
    config = workflow / "config" / "config.yaml"
    config.write_text(config.read_text() + "extra: [1, 2\n")
    rc, lines = snakemake(workflow, "-n", "--cores", "1", "all")
    return f"rc {rc}: {short(naming_line(lines, 'not valid', 'YAML', 'yaml', 'Error'))}"


@case("14a", "--configfile bad.yaml not YAML (snakemake)")
def configfile_not_yaml(tmp: Path) -> str:
    workflow = copy_workflow(tmp / "wf")
    (workflow / "bad.yaml").write_text("datasets:\n\tpets: {format: imagefolder, root: /x}\n")
    rc, lines = snakemake(workflow, "-n", "--cores", "1", "--configfile", "bad.yaml", "all")
    return f"rc {rc}: {short(naming_line(lines, 'not valid', 'YAML', 'yaml', 'Error'))}"


@case("14b", "--configfile bad.yaml not YAML (python -m sdi.config)")
def config_checker(tmp: Path) -> str:
    workflow = copy_workflow(tmp / "wf")
    (workflow / "bad.yaml").write_text("datasets:\n\tpets: {format: imagefolder, root: /x}\n")
    proc = subprocess.run([sys.executable, "-m", "sdi.config", "bad.yaml"], cwd=workflow, capture_output=True,
                          text=True, timeout=120)
    lines = [line.strip() for line in (proc.stdout + "\n" + proc.stderr).splitlines() if line.strip()]
    return f"rc {proc.returncode}: {short(naming_line(lines, 'bad.yaml', 'Error'))}"


# --------------------------------------------------------------------------- tables
def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(cell, r)) + " |" for r in rows])


def compare(before_file: str, after_file: str) -> str:
    before, after = (json.loads(Path(f).read_text()) for f in (before_file, after_file))
    number = {name: n for n, name in CASES}
    names = list(dict.fromkeys([*before, *after]))
    names.sort(key=lambda name: order(number[name]) if name in number else (len(CASES) + 1, ""))
    return table([(number.get(name, "?"), name, before.get(name, "(not run)"), after.get(name, "(not run)"))
                  for name in names], ("#", "case", "before", "after"))


def run_all() -> dict[str, str]:
    from sdi.models.tiny import build_tiny_clip, build_tiny_sd

    outcomes = {}
    with tempfile.TemporaryDirectory(prefix="sdi-hc-") as tmp:
        models = Path(tmp) / "models"
        build_tiny_sd(models / "sd")
        build_tiny_clip(models / "clip")
        cwd = os.getcwd()
        for number, name in CASES:
            folder = Path(tmp) / f"case{number}"
            folder.mkdir()
            os.chdir(folder)  # relative paths of the config (resources/...) resolve in the case's own folder
            start = time.perf_counter()
            try:
                out = RUNNERS[name](folder)
            except Exception as exc:  # every case gives a line on either version
                out = first_line(exc)
            finally:
                os.chdir(cwd)
            outcomes[name] = short(out.replace(tmp, "<tmp>").replace(sys.executable, "python"), 220)
            print(f"  case {number}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return outcomes


def main() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # the stages' progress bars, here and in the Snakemake runs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="also write {case: outcome} as JSON to this file")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE.json", "AFTER.json"),
                        help="print the two runs side by side instead of running the cases")
    args = parser.parse_args()
    if args.compare:
        print(compare(*args.compare))
        return
    print(f"sdi from {ROOT}", file=sys.stderr)
    outcomes = run_all()
    number = {name: n for n, name in CASES}
    print(table([(number[name], name, out) for name, out in outcomes.items()], ("#", "case", "outcome")))
    if args.out:
        Path(args.out).write_text(json.dumps(outcomes, indent=1) + "\n")


if __name__ == "__main__":
    main()
