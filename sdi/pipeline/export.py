"""The augmented dataset as a product: one experiment method's training set as a dataset folder.

:func:`export_dataset` writes the exact training set of a method (the real training images plus
the synthetic images the method uses: the filter's kept images, or its ``multiples`` draw, built by
:func:`sdi.pipeline.training_set.method_training_set` as the classifier builds it) and the split's
validation and test images, in the layout that torchvision's ``ImageFolder`` and Hugging Face
``datasets``' ``imagefolder`` read as they are::

    <out_dir>/
      README.md                what it holds, counts per class, settings, the rebuild command
      export.json              the same as data (counts, settings, how files were linked)
      train/metadata.csv       one row per file (Hugging Face imagefolder metadata, see below)
      train/<label>_<class>/real-<image_id>.<ext>, synthetic-<variant>-<sample_id>.png
      val/..., test/...        real images only
      webdataset/<split>-000000.tar ...   optional: WebDataset shards of the same rows

Class folders are ``{label:04d}_{class}``, so ImageFolder's sorted folder order gives sdi's labels.
Files are copies of the real and generated images (``link='copy'``, the default), so that a tool
that edits an exported file in place cannot edit the user's dataset or the workflow's images.
``link='hardlink'`` makes hard links instead (a relative symbolic link where a hard link is impossible,
e.g. another file system, a copy where neither works) and ``link='symlink'`` relative symbolic links (a
copy where impossible): they take no space, but editing an exported file in place edits its source.
export.json and the README say which kind each file got. Sources are never moved. Synthetic images
are checked against their shard manifest's checksum first
(:func:`sdi.pipeline.provenance.verify_generated`). A synthetic image drawn more than once
(``multiples`` with replacement) has one file per draw (``-r1``, ``-r2``... suffixes), so the files
are the training rows. The ``real_copies`` of a method are not files: they are K more passes over
``train``'s real rows, each augmented on the fly; the README says so.

``metadata.csv`` columns: ``file_name`` (relative to the split folder), ``label`` (sdi's integer
label), ``class_name``, ``source`` (``real`` / ``synthetic``), and the provenance of a synthetic
image: ``sample_id``, ``seed`` (its initial-latent seed), ``vector_sha256`` (of its conditioning
vector), ``clip_score`` (the filter's score; empty where the pool is every generated image) and
``variant``. Hugging Face infers one schema for all splits from the CSV text, so real rows carry
``none`` in the text columns and ``-1`` as seed rather than empty cells (an all-empty column would
be read as a float in val/test and clash with train's strings).

An existing export folder is replaced whole (built in a temporary sibling, then swapped in by
renames), never merged; a folder without ``export.json`` is not an export and is left alone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import unicodedata
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from sdi.io.artifacts import atomic_dir, atomic_write
from sdi.io.schemas import MANIFEST_COLUMNS, require_columns
from sdi.pipeline.provenance import verify_generated
from sdi.pipeline.training_set import method_training_set

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MARKER = "export.json"
METADATA_COLUMNS = ["file_name", "label", "class_name", "source", "sample_id", "seed", "vector_sha256",
                    "clip_score", "variant"]
COLUMNS = ["split", *METADATA_COLUMNS, "path", "link"]  # the table export_dataset returns
NONE = "none"  # text columns of real rows (see the module docstring)
LINK_WORDS = {"hardlink": "hard links", "symlink": "symbolic links", "copy": "copies"}
LINK_MODES = ("copy", "hardlink", "symlink")  # config.export.link


class ExportError(ValueError):
    """The inputs cannot be exported, or the destination is not ours to replace."""


# Characters some file system refuses in a name (Windows / NTFS, exFAT, SMB shares): the path
# separators, <>:"|?* and the control characters. Everything else, Unicode included, is kept.
_UNSAFE = re.compile(r'[/\\<>:"|?*\x00-\x1f\x7f]+')


def _safe(text: str) -> str:
    """A file-name-safe form of a name: Unicode kept (NFC), whitespace runs and characters some
    file system refuses (``/``, ``\\``, ``<>:"|?*``, control characters) become ``_``;
    leading and trailing ``.``/``_`` dropped (no hidden or dot-only names). ``café crème`` ->
    ``café_crème``."""
    text = unicodedata.normalize("NFC", str(text))
    return _UNSAFE.sub("_", re.sub(r"\s+", "_", text)).strip("._") or "x"


def class_dir(label: int, class_name: str) -> str:
    """``7, 'digit seven'`` -> ``0007_digit_seven``: sorted folder names follow the labels."""
    return f"{int(label):04d}_{_safe(class_name)}"


def read_split(folder: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """The split stage's ``{train,val,test}.parquet`` of a folder as {name: manifest}."""
    folder = Path(folder)
    missing = [s for s in SPLITS if not (folder / f"{s}.parquet").is_file()]
    if missing:
        raise ExportError(f"{folder}: no {', '.join(f'{s}.parquet' for s in missing)}; expected the split stage's "
                          "folder (results/<dataset>/split)")
    return {s: pd.read_parquet(folder / f"{s}.parquet") for s in SPLITS}


def _check_split(split: Mapping[str, pd.DataFrame]) -> None:
    for name in SPLITS:
        if name not in split:
            raise ExportError(f"split: no {name!r} manifest; expected train, val and test")
        require_columns(split[name], MANIFEST_COLUMNS, f"split[{name!r}]",
                        "expected the split stage's manifests (image_id, path, label, class_name)", ExportError)


def export_table(split: Mapping[str, pd.DataFrame], train_set: pd.DataFrame,
                 pool: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per file of the export (:data:`COLUMNS` less ``link``), from a split and a training set.

    Args:
        split: {'train', 'val', 'test'} manifests (image_id, path, label, class_name).
        train_set: a method's training set (:func:`sdi.pipeline.training_set.build_training_set`: path, label,
            source, variant); its ``real_copy`` rows are left out (they are passes, not files).
        pool: the synthetic rows it drew from (path, label, class_name, sample_id, seed, vector_sha256
            and, from the filter, score), for the provenance columns.
    """
    _check_split(split)
    real = split["train"].set_index("path")
    rows = []
    train_real = train_set[train_set.source == "real"]
    unknown = sorted(set(train_real.path) - set(real.index))
    if unknown:
        raise ExportError(f"training set: {len(unknown)} real image(s) not in split['train'], e.g. {unknown[:3]}; "
                          "the training set was built from another split")
    for name, manifest in (("train", split["train"].set_index("path").loc[train_real.path].reset_index()),
                           ("val", split["val"]), ("test", split["test"])):
        rows.append(pd.DataFrame({
            "split": name, "label": manifest.label.astype("int64").to_numpy(),
            "class_name": manifest.class_name.astype(str).to_numpy(), "source": "real",
            "image_id": manifest.image_id.astype(str).to_numpy(), "path": manifest.path.astype(str).to_numpy(),
            "sample_id": NONE, "seed": np.int64(-1), "vector_sha256": NONE, "clip_score": np.nan, "variant": NONE}))
    synthetic = train_set[train_set.source == "synthetic"]
    if len(synthetic):
        if pool is None:
            raise ExportError("training set has synthetic rows but no pool was given for their provenance")
        info = pool.drop_duplicates("path").set_index("path")
        absent = sorted(set(synthetic.path) - set(info.index))
        if absent:
            raise ExportError(f"training set: {len(absent)} synthetic image(s) not in the pool, e.g. {absent[:3]}")
        info = info.loc[synthetic.path]
        rows.append(pd.DataFrame({
            "split": "train", "label": synthetic.label.astype("int64").to_numpy(),
            "class_name": info.class_name.astype(str).to_numpy(), "source": "synthetic",
            "sample_id": info.sample_id.astype(str).to_numpy(),
            "seed": info.seed.astype("int64").to_numpy(),
            "vector_sha256": info.vector_sha256.astype(str).to_numpy() if "vector_sha256" in info else "",
            "clip_score": info.score.astype(float).to_numpy() if "score" in info else np.nan,
            "variant": synthetic.variant.astype(str).to_numpy(), "path": synthetic.path.astype(str).to_numpy()}))
    table = pd.concat(rows, ignore_index=True)  # seeds stay int64: every part has them (no NaN upcast)
    table["vector_sha256"] = table.vector_sha256.fillna("").replace("", NONE)  # the text baseline has no vector
    table = table.astype({"seed": "int64", "clip_score": "float64"})
    table["file_name"] = _file_names(table)
    order = {s: i for i, s in enumerate(SPLITS)}
    table = table.sort_values(["split", "label", "file_name"], key=lambda c: c.map(order) if c.name == "split" else c,
                              kind="stable").reset_index(drop=True)
    return table[[c for c in COLUMNS if c != "link"]]


def _file_names(table: pd.DataFrame) -> list[str]:
    """``<class dir>/real-<image_id><ext>`` or ``<class dir>/synthetic-<variant>-<sample_id>[-r<k>]<ext>``,
    unique within a split (a repeated draw or two ids that read alike get ``-r<k>``)."""
    names, seen = [], {}
    for row in table.itertuples(index=False):
        ext = Path(row.path).suffix or ".png"
        # An image id is often its relative path (``001.Albatross/img0.png``): drop the extension
        # it ends with, so that the file is ``real-..._img0.png``, not ``..._img0.png.png``.
        image_id = str(row.image_id)
        if row.source == "real" and ext and image_id.lower().endswith(ext.lower()):
            image_id = image_id[: -len(ext)]
        stem = f"real-{_safe(image_id)}" if row.source == "real" else \
            f"synthetic-{_safe(row.variant)}-{_safe(row.sample_id)}"
        base = f"{class_dir(row.label, row.class_name)}/{stem}"
        k = seen.get((row.split, base), 0)
        seen[(row.split, base)] = k + 1
        names.append(f"{base}{f'-r{k}' if k else ''}{ext}")
    return names


def _link(src: Path, dst: Path, mode: str = "copy") -> str:
    """Place src at dst as ``mode`` (:data:`LINK_MODES`) asks; returns what it became. ``copy``: a copy;
    ``hardlink``: a hard link, else a relative symbolic link, else a copy; ``symlink``: a relative symbolic
    link, else a copy."""
    if mode == "hardlink":
        try:
            os.link(src, dst)
            return "hardlink"
        except OSError:
            pass
    if mode in ("hardlink", "symlink"):
        try:
            # relative, so the link survives the rename of the temporary folder (a sibling of the same depth)
            os.symlink(os.path.relpath(src.resolve(), dst.parent.resolve()), dst)
            return "symlink"
        except OSError:
            pass
    shutil.copy2(src, dst)
    return "copy"


def _check_destination(out_dir: Path) -> None:
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise ExportError(f"{out_dir}: exists and is not a folder; remove it or choose another export folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise ExportError(f"{out_dir}: a non-empty folder without {MARKER}, so not an sdi export; it is left as it "
                          "is: move it away or choose another export folder")


def _write_webdataset(table: pd.DataFrame, folder: Path, shard_size: int) -> dict[str, list[str]]:
    """WebDataset tar shards per split: ``<split>-%06d.tar`` with ``<ext>`` (image bytes), ``cls`` (label)
    and ``json`` (the metadata row) per sample; returns {split: [shard file names]}."""
    try:
        import webdataset as wds
    except ImportError:
        raise ExportError("config.export.webdataset: true needs the webdataset package (pip install "
                          "webdataset, pinned in pyproject.toml); set it to false or install it") from None
    folder.mkdir(parents=True, exist_ok=True)
    shards = {}
    for split, rows in table.groupby("split", sort=False):
        pattern = str(folder / f"{split}-%06d.tar")
        with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0) as sink:
            for row in rows.itertuples(index=False):
                meta = {c: getattr(row, c) for c in METADATA_COLUMNS}
                meta["clip_score"] = None if pd.isna(meta["clip_score"]) else float(meta["clip_score"])
                meta = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in meta.items()}
                key = re.sub(r"[.]", "_", row.file_name.rsplit(".", 1)[0])  # webdataset keys end at the first dot
                sink.write({"__key__": key, Path(row.file_name).suffix.lstrip(".").lower():
                            Path(row.path).read_bytes(), "cls": int(row.label), "json": meta})
        shards[split] = sorted(p.name for p in folder.glob(f"{split}-*.tar"))
    return shards


def export_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per class: label, class_name, train_real, train_synthetic, train, val, test (files of the export)."""
    key = table.split + "_" + table.source
    counts = pd.crosstab([table.label, table.class_name], key)
    out = pd.DataFrame(index=counts.index)
    out["train_real"] = counts.get("train_real", 0)
    out["train_synthetic"] = counts.get("train_synthetic", 0)
    out["train"] = out.train_real + out.train_synthetic
    out["val"] = counts.get("val_real", 0)
    out["test"] = counts.get("test_real", 0)
    return out.reset_index()


def _readme_intro(name: str, t: pd.Series, info: dict) -> list[str]:
    """What the export holds and how its files relate to their sources."""
    copies = int(info["real_copies"])
    lines = [
        f"# {name}: an exported training set",
        "",
        f"Written by sdi {info['sdi_version']}. It holds the exact training set of experiment method "
        f"`{info['method']}` of dataset `{info['dataset']}`: {int(t.train_real)} real training images and "
        f"{int(t.train_synthetic)} synthetic images"
        + (f" of variant `{info['variant']}` ({info['synthetic']})" if info["variant"] else "")
        + f", plus the split's {int(t.val)} validation and {int(t.test)} test images (real only).",
        "",
        _readme_links(info["link"], info["links"]),
    ]
    if copies:
        lines += ["", f"The method trains on {copies} more copies of the real training images, each augmented "
                  "on the fly (`real_copies`). They are not duplicated as files: repeat `train`'s rows with "
                  f"`source == real` {copies} more times per epoch to train as the run did."]
    if info["repeated_draws"]:
        lines += ["", f"{info['repeated_draws']} synthetic files repeat an image that the `multiples` draw picked "
                  "more than once (suffix `-r1`, `-r2`, ...): one file per training row."]
    return lines


def _readme_links(mode: str, links: dict[str, int]) -> str:
    """How the files relate to their sources, for the link mode asked for and the kinds the files got."""
    here = "Here: " + ", ".join(f"{n} {LINK_WORDS[k]}" for k, n in links.items()) + "."
    if mode == "copy":
        return ("Files are copies of the images the workflow read and generated (`export.link: copy`): editing "
                f"one changes neither the dataset nor the generated image. {here}")
    what = ("hard links to the images the workflow read and generated (`export.link: hardlink`; a relative "
            "symbolic link where a hard link is impossible, a copy where neither is possible)" if mode == "hardlink"
            else "relative symbolic links to the images the workflow read and generated (`export.link: symlink`; "
            "a copy where a link is impossible)")
    linked = sum(n for k, n in links.items() if k != "copy")
    return (f"Files are {what}, so editing a linked file in place edits its source: the dataset's image or the "
            f"generated one. {here}" + (f" The {links['copy']} copies are independent of their sources."
                                         if links.get("copy") and linked else ""))


def _readme(name: str, counts: pd.DataFrame, info: dict) -> str:
    t = counts.sum(numeric_only=True)
    lines = _readme_intro(name, t, info)
    lines += [
        "",
        "## Rebuild",
        "",
        "```bash",
        info["command"] or "# built from Python with sdi.export_dataset(...)",
        "```",
        "",
        "## Layout",
        "",
        "- `train/`, `val/`, `test/`: one folder per class, `<label>_<class name>`, sorted in label order "
        "(torchvision `ImageFolder` gives the same labels). File names start with `real-` or `synthetic-`.",
        "- `<split>/metadata.csv`: `file_name, label, class_name, source, sample_id, seed, vector_sha256, "
        "clip_score, variant`; real rows have `none` / `-1` in the synthetic-only columns.",
    ]
    if info["webdataset"]:
        lines.append("- `webdataset/<split>-NNNNNN.tar`: the same rows as WebDataset shards "
                     "(image, `cls` = label, `json` = the metadata row).")
    lines += [
        "- `export.json`: counts, settings and link types as data.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset                 # splits train, validation, test; label = sdi's label",
        f"ds = load_dataset(\"imagefolder\", data_dir=\"{info['folder']}\")",
        "from torchvision.datasets import ImageFolder       # the same labels: folders sort in label order",
        f"train = ImageFolder(\"{info['folder']}/train\")",
        "```",
        "",
        "## Counts per class",
        "",
        "| label | class | train real | train synthetic | val | test |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r.label} | {r.class_name} | {r.train_real} | {r.train_synthetic} | {r.val} | {r.test} |"
              for r in counts.itertuples(index=False)]
    lines += [f"| | **total** | {int(t.train_real)} | {int(t.train_synthetic)} | {int(t.val)} | {int(t.test)} |"]
    if info["settings"]:
        import yaml

        lines += ["", "## Settings it came from", "", "```yaml",
                  yaml.safe_dump(info["settings"], sort_keys=False).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _place_files(table: pd.DataFrame, folder: Path, link: str = "copy") -> list[str]:
    """Each row's file copied (or linked, :func:`_link`) to ``folder/<split>/<file_name>``, and each split's
    metadata.csv; returns how each file was placed."""
    from tqdm import tqdm

    links = []
    for row in tqdm(table.itertuples(index=False), total=len(table), desc="exporting", unit="file", mininterval=2):
        dst = folder / row.split / row.file_name
        dst.parent.mkdir(parents=True, exist_ok=True)
        links.append(_link(Path(row.path), dst, link))
    placed = table.assign(link=links)
    for name, rows in placed.groupby("split", sort=False):
        atomic_write(folder / name / "metadata.csv",
                     lambda p, rows=rows: rows[METADATA_COLUMNS].to_csv(p, index=False, float_format="%.4f"))
    return links


def _export_info(table: pd.DataFrame, counts: pd.DataFrame, out_dir: Path, *, dataset: str, method: str,
                 variant: str | None, pool: str | None, multiples: float | None, draw_seed: int,
                 keep_ratio: float | None, real_copies: int, shards: dict, command: str | None,
                 settings: dict | None, link: str = "copy") -> dict:
    """export.json's content: counts, settings and link types as data (the README is written from it)."""
    from sdi import __version__

    return {
        "sdi_version": __version__, "dataset": dataset, "method": method, "variant": variant,
        "folder": out_dir.as_posix() if not out_dir.is_absolute() else "path/to/export",
        "synthetic": (f"pool {pool}" + (f", {multiples} x n_c drawn per class (seed {draw_seed})"
                                        if multiples is not None else "")
                      + (f", re-selected at keep_ratio {keep_ratio}" if keep_ratio is not None else "")),
        "real_copies": int(real_copies),
        "repeated_draws": int((table.file_name.str.contains(r"-r\d+\.[^./]+$") & (table.source == "synthetic"))
                              .sum()),
        "link": link,  # what was asked (config.export.link); links: what each file became
        "links": {k: int(v) for k, v in table.link.value_counts().items()},
        "webdataset": shards, "command": command, "settings": settings or {},
        "files": {s: int((table.split == s).sum()) for s in SPLITS},
        "counts": counts.to_dict("records"),
    }


def export_dataset(split: Mapping[str, pd.DataFrame] | str | os.PathLike, out_dir: str | os.PathLike, *,
                   generated: pd.DataFrame | None = None, variant: str | None = None, pool: str | None = "kept",
                   multiples: float | None = None, real_copies: int = 0, keep_ratio: float | None = None,
                   draw_seed: int = 0, webdataset: bool = False, shard_size: int = 1000, link: str = "copy",
                   dataset: str = "", method: str = "", settings: dict | None = None,
                   command: str | None = None) -> pd.DataFrame:
    """Write one method's training set, with the split's val and test images, as a dataset folder.

    Args:
        split: {'train', 'val', 'test'} manifests, or the split stage's folder holding them.
        out_dir: the export folder; replaced whole if it is an earlier export (see the module docstring).
        generated: the variant's filter manifest (``pool='kept'``: kept, rank, score columns) or its
            concatenated generation shard manifests (``pool='generated'``); None for a real-only method.
        variant, pool, multiples, real_copies, keep_ratio, draw_seed: the method's settings, as
            :func:`sdi.config.experiments.methods` resolves them
            (see :func:`sdi.pipeline.training_set.method_training_set`).
        webdataset: also write WebDataset tar shards of ``shard_size`` samples each.
        link: how files are placed (:data:`LINK_MODES`, config.export.link): ``copy`` (the default),
            ``hardlink`` or ``symlink`` (editing such a file in place edits its source; see the module docstring).
        dataset, method: names for the README; settings: what the export came from (written to the
            README and export.json); command: the command that rebuilds it.

    Returns:
        The export table, one row per file: :data:`COLUMNS` (``path`` is the source image, ``link``
        how it was placed).
    """
    t_start = time.monotonic()
    if not isinstance(split, Mapping):
        split = read_split(split)
    _check_split(split)
    if shard_size < 1:
        raise ExportError(f"config.export.shard_size: {shard_size} must be >= 1")
    if link not in LINK_MODES:
        raise ExportError(f"config.export.link: {link!r} must be one of {', '.join(LINK_MODES)} (copy: the default, "
                          "files independent of their sources)")
    out_dir = Path(out_dir)
    _check_destination(out_dir)
    train_set, synthetic = method_training_set(split["train"], generated, variant=variant, pool=pool,
                                               multiples=multiples, real_copies=real_copies, keep_ratio=keep_ratio,
                                               draw_seed=draw_seed)
    table = export_table(split, train_set, synthetic)
    absent = [p for p in dict.fromkeys(table.path) if not Path(p).is_file()]
    if absent:
        raise ExportError(f"{len(absent)} image file(s) of the export do not exist, e.g. {absent[:3]}; rerun the "
                          "stage that writes them (split for real images, generation for synthetic ones)")
    if synthetic is not None and len(synthetic):  # a generated image changed since generation is not exported
        used = synthetic[synthetic.path.astype(str).isin(set(table.path[table.source == "synthetic"]))]
        verify_generated(used, what="export: synthetic images", error=ExportError)

    with atomic_dir(out_dir) as tmp:  # replaced whole (module docstring)
        table["link"] = _place_files(table, tmp, link)
        shards = _write_webdataset(table, tmp / "webdataset", shard_size) if webdataset else {}
        counts = export_counts(table)
        info = _export_info(table, counts, out_dir, dataset=dataset, method=method, variant=variant, pool=pool,
                            multiples=multiples, draw_seed=draw_seed, keep_ratio=keep_ratio, real_copies=real_copies,
                            shards=shards, command=command, settings=settings, link=link)
        atomic_write(tmp / "README.md", lambda p: p.write_text(_readme(f"{dataset}/{method}".strip("/") or "export",
                                                                       counts, info)))
        atomic_write(tmp / MARKER, lambda p: p.write_text(json.dumps(info, indent=2, default=str) + "\n"))
    elapsed = time.monotonic() - t_start
    n = table.groupby(["split", "source"]).size().to_dict()
    logger.info("exported %d files in %.1f s (%.0f files/s): train %d real + %d synthetic, val %d, test %d; %s%s "
                "-> %s", len(table), elapsed, len(table) / max(elapsed, 1e-9), n.get(("train", "real"), 0),
                n.get(("train", "synthetic"), 0), n.get(("val", "real"), 0), n.get(("test", "real"), 0),
                ", ".join(f"{v} {LINK_WORDS[k]}" for k, v in info["links"].items()),
                f", {sum(len(v) for v in shards.values())} WebDataset shards" if shards else "", out_dir)
    return table[COLUMNS]
