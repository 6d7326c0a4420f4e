"""The train / val / test manifests of a dataset table (stratified, seeded)."""

from __future__ import annotations

from sdi.data.readers.base import SHOWN, DatasetError
from sdi.io.lazy import lazy_import
from sdi.io.schemas import MANIFEST_COLUMNS

np = lazy_import("numpy")  # loaded on first use: planning imports this module
pd = lazy_import("pandas")



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
