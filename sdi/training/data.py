"""The trainers' data: datasets and loaders of the classifier (:mod:`sdi.training.classifier`) and of the
projector (:mod:`sdi.training.projector`), in the place of torchvision's ``references/classification``
data-loading code.

Classifier: manifests (``path``, ``label``) checked and wrapped in :class:`ManifestDataset` with the
transforms of docs/method.md section 7 (:func:`build_datasets`), and the shuffled training loader, under DDP
one shard per process (:func:`build_train_loader`). Projector: images resized, center-cropped and scaled to
[-1, 1] with their CLIP embeddings (:class:`ProjectorTrainingDataset`) and their loader
(:func:`build_projector_loader`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import transforms

from sdi.io.images import load_rgb
from sdi.io.schemas import require_columns
from sdi.pipeline import training_set
from sdi.training import distributed
from sdi.training.transforms import build_transforms


# --------------------------------------------------------------------------- classifier
class ManifestDataset(Dataset):
    """Images of a manifest: item i -> (transform(load_rgb(path_i)), label_i)."""

    def __init__(self, table: pd.DataFrame, transform):
        self.paths = table["path"].astype(str).tolist()
        self.labels = table["label"].astype("int64").tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_rgb(self.paths[i])), self.labels[i]


def _check_manifest(table: pd.DataFrame | None, name: str, num_classes: int, allow_empty: bool = False) -> pd.DataFrame:
    if table is None:
        table = pd.DataFrame({"path": pd.Series(dtype=str), "label": pd.Series(dtype="int64")})
    require_columns(table, ["path", "label"], f"classifier {name} manifest", "it needs 'path' and 'label'")
    if len(table) == 0 and not allow_empty:
        raise ValueError(f"classifier {name} manifest is empty; the split stage must give it at least one image")
    if len(table) and (table["label"].min() < 0 or table["label"].max() >= num_classes):
        raise ValueError(f"classifier {name} manifest: labels span {table['label'].min()}..{table['label'].max()}, "
                         f"outside 0..{num_classes - 1}; check num_classes")
    return table[["path", "label"]].astype({"path": str, "label": "int64"}).reset_index(drop=True)


def _training_rows(train: pd.DataFrame, synthetic: pd.DataFrame | None, num_classes: int) -> pd.DataFrame:
    """train (+ synthetic) as a training-set table (:data:`sdi.pipeline.training_set.COLUMNS`), checked."""
    parts = []
    for table, name, source in ((train, "train", "real"), (synthetic, "synthetic", "synthetic")):
        if table is None:
            continue
        rows = _check_manifest(table, name, num_classes, allow_empty=name == "synthetic")
        rows["source"] = table["source"].astype(str).to_numpy() if "source" in table.columns else source
        rows["variant"] = table["variant"].to_numpy() if "variant" in table.columns else None
        parts.append(rows)
    rows = pd.concat(parts, ignore_index=True)
    unknown = sorted(set(rows["source"]) - set(training_set.SOURCES))
    if unknown:
        raise ValueError(f"classifier train manifest: unknown source(s) {unknown}; "
                         f"allowed: {', '.join(training_set.SOURCES)}")
    return rows[training_set.COLUMNS]


def seed_worker(worker_id: int) -> None:
    """DataLoader workers: seed numpy and random from the per-worker torch seed (PyTorch's recipe)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


@dataclass
class Datasets:
    """The run's data: ``rows`` is the training set (:data:`sdi.pipeline.training_set.COLUMNS`, one row per
    example of an epoch); ``train`` applies the training transforms to it, ``val`` and ``test`` the
    evaluation ones."""

    rows: pd.DataFrame
    train: ManifestDataset
    val: ManifestDataset
    test: ManifestDataset


def build_datasets(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, *, num_classes: int, resize: int,
                   crop: int, augment: str, augment_at: str, synthetic: pd.DataFrame | None = None) -> Datasets:
    """Check the manifests (see :func:`sdi.training.classifier.train_classifier`) and wrap them in datasets
    with the transforms of docs/method.md section 7."""
    rows = _training_rows(train, synthetic, num_classes)
    val, test = _check_manifest(val, "val", num_classes), _check_manifest(test, "test", num_classes)
    eval_tf = build_transforms(resize, crop, "none", train=False)
    return Datasets(rows, ManifestDataset(rows, build_transforms(resize, crop, augment, train=True,
                                                                 augment_at=augment_at)),
                    ManifestDataset(val, eval_tf), ManifestDataset(test, eval_tf))


def build_train_loader(dataset: ManifestDataset, batch_size: int, seed: int, generator: torch.Generator,
                       **loader_kw) -> DataLoader:
    """Shuffled batches of the global ``batch_size``; under DDP each process loads its share.

    One process: a last batch of one image is dropped (it breaks BatchNorm on small inputs,
    1x1 feature maps). Several: a DistributedSampler gives every process an equal shard (padded
    by repeating images) reshuffled per epoch (``set_epoch``); SyncBatchNorm sees the whole batch.
    ``generator`` (reseeded per epoch by the caller) draws the shuffle and the workers' seeds.
    """
    world = distributed.world_size()
    if world == 1:
        n = len(dataset)
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                          drop_last=n % batch_size == 1 < n, **loader_kw)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=distributed.rank(), shuffle=True, seed=seed)
    return DataLoader(dataset, batch_size=max(1, batch_size // world), sampler=sampler, generator=generator,
                      **loader_kw)


# --------------------------------------------------------------------------- projector
def image_transform(size: int) -> transforms.Compose:
    """PIL RGB -> [3, size, size] float32 in [-1, 1]: bilinear resize, center crop (docs/method.md section 2)."""
    return transforms.Compose([
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
    ])


class ProjectorTrainingDataset(Dataset):
    """Items ``{"pixels": [3, S, S] float32 in [-1, 1], "clip_embeds": [d_clip] float32}``."""

    def __init__(self, paths: list[str], clip_embeds: torch.Tensor, image_size: int):
        if len(paths) != len(clip_embeds):
            raise ValueError(f"{len(paths)} images but {len(clip_embeds)} CLIP embeddings")
        self.paths = list(paths)
        self.clip_embeds = clip_embeds
        self.transform = image_transform(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixels": self.transform(load_rgb(self.paths[index])), "clip_embeds": self.clip_embeds[index]}


def build_projector_loader(dataset: ProjectorTrainingDataset, batch_size: int, seed: int,
                           generator: torch.Generator, num_workers: int) -> DataLoader:
    """Shuffled batches of ``batch_size`` per process; under DDP each process loads its share of an
    epoch (DistributedSampler, reshuffled per epoch by ``set_epoch``). ``generator`` (reseeded per
    epoch by the caller) draws the single-process shuffle and the workers' seeds."""
    world = distributed.world_size()
    sampler = None if world == 1 else DistributedSampler(dataset, num_replicas=world, rank=distributed.rank(),
                                                           shuffle=True, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, generator=generator,
                      num_workers=num_workers, drop_last=False)
