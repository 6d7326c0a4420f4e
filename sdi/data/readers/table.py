"""A table of image paths and labels (CSV or Parquet), one per subset or one with a subset column."""

from __future__ import annotations

import json
from pathlib import Path

from sdi.data.readers.base import (
    SUBSETS,
    DatasetError,
    _finish,
    _listing,
    _require_images,
    _sibling_key,
    require_root,
)
from sdi.io.fingerprints import Listing, stat_files
from sdi.io.lazy import lazy_import
from sdi.io.schemas import MANIFEST_COLUMNS

pd = lazy_import("pandas")


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


def _read_lists(root: Path, files: dict, key: str, cols: dict, named: dict) -> dict[str, tuple[Path, pd.DataFrame]]:
    """Each subset's file list, after checking it has the path column and every configured column."""
    columns_key = _sibling_key(key, "columns")
    frames = {}
    for subset, path in _table_files(root, files, key).items():
        frame = read_file_list(path, f"{_sibling_key(key, 'files')}.{subset}")
        have = [str(c) for c in frame.columns]
        for field in ("path", *named):
            if cols[field] not in frame.columns:
                raise DatasetError(f"{path}: no column {cols[field]!r} (columns: {', '.join(have)}); "
                                   f"set {columns_key}.{field} to one of them")
        frames[subset] = (path, frame)
    return frames


def _class_fields(first_path: Path, first: pd.DataFrame, cols: dict, columns_key: str) -> list[str]:
    """Which of label and class_name the lists hold (as the train list has them); at least one."""
    use = [f for f in ("label", "class_name") if cols[f] in first.columns]
    if not use:
        raise DatasetError(f"{first_path}: neither a label column {cols['label']!r} nor a class name column "
                           f"{cols['class_name']!r} (columns: {', '.join(map(str, first.columns))}); set "
                           f"{columns_key}.label or {columns_key}.class_name")
    return use


def _subset_rows(subset: str, path: Path, frame: pd.DataFrame, use: list[str], cols: dict, first_path: Path,
                 columns_key: str) -> pd.DataFrame:
    """One list's rows: image_id, subset, listed_in, and raw_label and/or class_name (those of use)."""
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
    return part


def _check_unique_paths(table: pd.DataFrame, key: str) -> None:
    """Raise DatasetError if a path is listed more than once (in one list or across lists)."""
    dup = table[table.image_id.duplicated(keep=False)]
    if len(dup):
        lines = [f"{p} ({', '.join(sorted(set(g.listed_in)))})" for p, g in dup.groupby("image_id")]
        raise DatasetError(f"{len(lines)} path(s) listed more than once in the file lists of "
                           f"{_sibling_key(key, 'files')}; an image belongs to one split only:{_listing(lines)}")


def _check_one_name_per_label(table: pd.DataFrame, cols: dict, key: str) -> None:
    """With both labels and class names: raise DatasetError unless they map one to one."""
    if "raw_label" not in table or "class_name" not in table:
        return
    for column, other in (("raw_label", "class_name"), ("class_name", "raw_label")):
        clash = table.groupby(column)[other].nunique()
        clash = clash[clash > 1]
        if len(clash):
            first_clash = clash.index[0]
            found = sorted(map(str, table[table[column] == first_clash][other].unique()))
            raise DatasetError(f"file lists of {_sibling_key(key, 'files')}: {cols[column.replace('raw_', '')]} "
                               f"{first_clash!r} goes with several {cols[other.replace('raw_', '')]} values "
                               f"({', '.join(found)}); each class needs one label and one name")


def _assign_labels(table: pd.DataFrame) -> list[str]:
    """Set table's label (0..C-1, in the order of the raw labels, else of the sorted class names)
    and class_name (a raw label's text where the lists have none); returns the class names."""
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
    return class_names


def read_table(root: str | Path, key: str = "datasets.<name>.root", files: dict | None = None,
               columns: dict | None = None, allow_missing_test_classes: bool = False) -> pd.DataFrame:
    """Images named by file lists (``files: {train, test, val?}``, relative to root unless
    absolute); image paths in the lists are relative to root. Columns (``columns``, defaults
    path / label / class_name): a path and a label or a class name or both. Without labels,
    labels follow the sorted class names; without class names, a label's text is its name."""
    root = require_root(root, key, "the folder the image paths of the file lists are relative to")
    columns_key = _sibling_key(key, "columns")
    named = {k: v for k, v in (columns or {}).items() if v}
    cols = {**TABLE_COLUMNS, **named}
    frames = _read_lists(root, files or {}, key, cols, named)
    first_path, first = frames["train"]
    use = _class_fields(first_path, first, cols, columns_key)
    parts = [_subset_rows(subset, path, frame, use, cols, first_path, columns_key)
             for subset, (path, frame) in frames.items()]
    table = pd.concat(parts, ignore_index=True)
    _check_unique_paths(table, key)
    _check_one_name_per_label(table, cols, key)
    class_names = _assign_labels(table)
    table["path"] = [str(root / p) for p in table.image_id]
    for listed_in, group in table.groupby("listed_in"):
        _require_images(group.path, listed_in)
    return _finish(table[[*MANIFEST_COLUMNS, "subset"]].to_dict("records"), class_names, root,
                   names_from=f"The names come from the {cols['class_name']!r} column of the file lists of "
                   f"{_sibling_key(key, 'files')}: give the classes distinct names there (or set "
                   f"{columns_key}.class_name to a column that has them).",
                   allow_missing_test_classes=allow_missing_test_classes)


def listing(fmt: str, root: Path, key: str, options: dict) -> Listing:
    """The table files and every image path they list (not the whole folder)."""
    require_root(root, key, f"the dataset folder ({fmt} layout)")
    lists = [str(options["files"][s]) for s in _table_files(root, options.get("files") or {}, key)]
    return stat_files([*lists, *table_paths(root, key, options.get("files"), options.get("columns"))], base=root)
