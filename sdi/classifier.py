"""Downstream classifier: ResNet50 from scratch on real (+ synthetic) images (METHOD.md sections 7 and 8).

The loop follows torchvision's ``references/classification/train.py``: build data, model,
optimizer and scheduler; per epoch train, evaluate on validation, save a resumable
checkpoint; at the end load the checkpoint chosen on validation and evaluate the test set
once. Everything a run produces is written as data into ``out_dir``:

- ``metrics.json``: test metrics of :func:`sdi.metrics.classification_metrics` plus
  ``best_epoch``, ``best_val_top1``, the training-set counts ``n_real``, ``n_real_copies``,
  ``n_synthetic``, ``n_train`` (rows of one epoch) and ``steps_per_epoch``, ``epochs``,
  ``wall_time_s``, ``device`` and the hyperparameters (``params``);
- ``train_set.parquet``: the exact training set, one row per example of one epoch
  (``path``, ``label``, ``source``, ``variant``; see :mod:`sdi.training_set`);
- ``log.csv``: one row per epoch (epoch, lr, train_loss, train_top1, val_loss, val_top1, val_balanced);
- ``best.pt``: the weights of the best validation epoch (``{"model": state_dict, "epoch", ...}``);
- ``tensorboard/``: the log.csv curves and the test metrics as TensorBoard scalars (``tracking``, see
  :mod:`sdi.tracking`; optionally a W&B run too);
- ``last.pt``: the resumable state after the latest epoch (model, optimizer, scheduler, epoch,
  best so far, history, RNG states). A new call with the same data and hyperparameters resumes
  from it; a ``last.pt`` written for other data or hyperparameters is ignored (with a warning)
  and overwritten.

Every file is written under a temporary name and renamed, so a killed job never leaves a
half-written file.

Several GPUs (torchvision's recipe): with more than one visible GPU (or ``processes`` > 1) the
run is spread over one process per GPU (:mod:`sdi.distributed`): DistributedDataParallel,
SyncBatchNorm, a DistributedSampler reshuffled per epoch, ``batch_size`` split between the
processes (it stays the global batch, so the hyperparameters mean the same on any number of
GPUs), validation and test split between the processes and their predictions gathered, so
the metrics are those of the whole set; only rank 0 writes files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from tqdm import tqdm

from sdi import distributed, training_set
from sdi.datasets import load_rgb
from sdi.metrics import classification_metrics
from sdi.tables import atomic_write, write_parquet
from sdi.tracking import Tracker, TrackingConfig

logger = logging.getLogger(__name__)

# Normalisation of the reference code (CIFAR-100 statistics, used for every dataset there).
MEAN = (0.507, 0.487, 0.441)
STD = (0.267, 0.256, 0.276)
AUGMENTS = ("none", "randaugment", "cutout", "gridmask")
AUGMENT_AT = ("crop", "raw")
LOG_COLUMNS = ["epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_balanced"]


# --------------------------------------------------------------------------- augmentations
class Cutout(nn.Module):
    """Zero one square hole per image (DeVries & Taylor 2017), on a normalised tensor.

    The hole's centre is uniform over the image and the square is clipped at the border,
    as in the authors' code, so a hole near an edge is smaller than ``length``.

    Args:
        length: side of the square hole in pixels.
        n_holes: number of holes.
    Input/output: (C, H, W) tensor (float, or uint8 on a raw image); the hole is zero in every channel.
    """

    def __init__(self, length: int, n_holes: int = 1):
        super().__init__()
        if length < 1 or n_holes < 1:
            raise ValueError(f"Cutout needs length >= 1 and n_holes >= 1, got length={length}, n_holes={n_holes}")
        self.length, self.n_holes = length, n_holes

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        mask = torch.ones((h, w), dtype=img.dtype)
        for _ in range(self.n_holes):
            y, x = int(torch.randint(h, ())), int(torch.randint(w, ()))
            y0, y1 = max(0, y - self.length // 2), min(h, y + self.length // 2)
            x0, x1 = max(0, x - self.length // 2), min(w, x + self.length // 2)
            mask[y0:y1, x0:x1] = 0
        return img * mask

    def extra_repr(self) -> str:
        return f"length={self.length}, n_holes={self.n_holes}"


class GridMask(nn.Module):
    """GridMask (Chen et al. 2020): remove a rotated grid of squares, on a normalised tensor.

    torchvision has no GridMask; this follows the authors' ``Grid`` class with ``mode=1``
    (the paper's definition): the grid has period ``d ~ U{d_min, ..., d_max - 1}`` and random
    offsets; stripes of width ``l = ceil(ratio * d)`` are kept and the squares of side
    ``d - l`` between them are zeroed (ratio 0.5 removes a quarter of the image). The mask is
    built on the image's diagonal, rotated by an integer angle ``U{0, ..., rotate - 1}`` degrees
    and centre-cropped, and applied with probability ``prob``. The authors ramp ``prob`` up over
    training; here it is constant, as in the setting the SDI paper names (prob 1.0).

    Input/output: (C, H, W) tensor (float, or uint8 on a raw image); removed pixels are zero in every channel.
    """

    def __init__(self, d_min: int, d_max: int, ratio: float = 0.5, rotate: int = 15, prob: float = 1.0):
        super().__init__()
        if not 2 <= d_min < d_max:
            raise ValueError(f"GridMask needs 2 <= d_min < d_max, got d_min={d_min}, d_max={d_max}")
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"GridMask ratio must lie in (0, 1), got {ratio}")
        self.d_min, self.d_max, self.ratio, self.rotate, self.prob = d_min, d_max, ratio, rotate, prob

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if self.prob < 1.0 and float(torch.rand(())) >= self.prob:
            return img
        h, w = img.shape[-2:]
        side = math.ceil(math.hypot(h, w))  # any rotation of this square still covers the H x W centre
        d = int(torch.randint(self.d_min, self.d_max, ()))
        keep = math.ceil(d * self.ratio)
        off_y, off_x = (int(v) for v in torch.randint(d, (2,)))
        idx = torch.arange(side)
        rows = (idx - off_y) % d < keep
        cols = (idx - off_x) % d < keep
        mask = (rows[:, None] | cols[None, :]).to(img.dtype)[None]
        if self.rotate > 1:
            angle = float(torch.randint(self.rotate, ()))
            mask = TF.rotate(mask, angle, interpolation=InterpolationMode.NEAREST)
        top, left = (side - h) // 2, (side - w) // 2
        return img * mask[:, top:top + h, left:left + w]

    def extra_repr(self) -> str:
        return f"d_min={self.d_min}, d_max={self.d_max}, ratio={self.ratio}, rotate={self.rotate}, prob={self.prob}"


class OnPILImage(nn.Module):
    """Apply a tensor augmentation (Cutout, GridMask) to a PIL image: PIL -> uint8 tensor -> PIL."""

    def __init__(self, augmentation: nn.Module):
        super().__init__()
        self.augmentation = augmentation

    def forward(self, img):
        return TF.to_pil_image(self.augmentation(TF.pil_to_tensor(img)))


def build_transforms(resize: int = 256, crop: int = 224, augment: str = "none", train: bool = True,
                     augment_at: str = "crop", rotation: float = 15):
    """The METHOD transforms: PIL RGB image -> (3, crop, crop) float32 normalised tensor.

    train, ``augment_at='crop'`` (METHOD section 7, the default):
        Resize((resize, resize)) -> RandomRotation(15) -> RandomCrop(crop) -> RandomHorizontalFlip
        [-> RandAugment()] -> ToTensor -> Normalize [-> Cutout | GridMask].
    train, ``augment_at='raw'`` (how the reference ran its baselines, METHOD section 8):
        [RandAugment() | Cutout | GridMask on the raw image] -> Resize((resize, resize)) -> RandomRotation(15)
        -> RandomCrop(crop) -> RandomHorizontalFlip -> ToTensor -> Normalize.
    eval:  Resize((resize, resize)) -> CenterCrop(crop) -> ToTensor -> Normalize.

    Sizes of the baselines: at ``crop`` they are scaled with the crop from the papers' 224 px
    (Cutout 1 hole of ``round(32 * crop / 224)``; GridMask ``d in [round(96 * crop / 224), crop)``);
    at ``raw`` they are the reference's pixel sizes on the raw image (Cutout 32 px; GridMask
    ``d in [90, 140)``). GridMask always uses rotate 15, ratio 0.5, prob 1.0.
    ``rotation`` is RandomRotation's range in degrees (15 in the METHOD).
    """
    from torchvision import transforms as T

    if augment not in AUGMENTS:
        raise ValueError(f"classifier augment {augment!r} is not one of {list(AUGMENTS)}")
    if augment_at not in AUGMENT_AT:
        raise ValueError(f"classifier augment_at {augment_at!r} is not one of {list(AUGMENT_AT)}")
    if crop > resize:
        raise ValueError(f"classifier crop ({crop}) must not exceed resize ({resize})")
    normalize = [T.ToTensor(), T.Normalize(mean=MEAN, std=STD)]
    if not train:
        return T.Compose([T.Resize((resize, resize)), T.CenterCrop(crop), *normalize])
    geometry = [T.Resize((resize, resize)), T.RandomRotation(rotation), T.RandomCrop(crop), T.RandomHorizontalFlip()]
    if augment_at == "raw":
        raw = {"none": [], "randaugment": [T.RandAugment()], "cutout": [OnPILImage(Cutout(length=32))],
               "gridmask": [OnPILImage(GridMask(d_min=90, d_max=140, ratio=0.5, rotate=15, prob=1.0))]}[augment]
        return T.Compose([*raw, *geometry, *normalize])
    steps = list(geometry)
    if augment == "randaugment":
        steps.append(T.RandAugment())
    steps += normalize
    if augment == "cutout":
        steps.append(Cutout(length=max(1, round(32 * crop / 224))))
    elif augment == "gridmask":
        steps.append(GridMask(d_min=max(2, round(96 * crop / 224)), d_max=crop, ratio=0.5, rotate=15, prob=1.0))
    return T.Compose(steps)


# --------------------------------------------------------------------------- data
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
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise ValueError(f"classifier {name} manifest: missing column(s) {missing}; it needs 'path' and 'label'")
    if len(table) == 0 and not allow_empty:
        raise ValueError(f"classifier {name} manifest is empty; the split stage must give it at least one image")
    if len(table) and (table["label"].min() < 0 or table["label"].max() >= num_classes):
        raise ValueError(f"classifier {name} manifest: labels span {table['label'].min()}..{table['label'].max()}, "
                         f"outside 0..{num_classes - 1}; check num_classes")
    return table[["path", "label"]].astype({"path": str, "label": "int64"}).reset_index(drop=True)


def _training_rows(train: pd.DataFrame, synthetic: pd.DataFrame | None, num_classes: int) -> pd.DataFrame:
    """train (+ synthetic) as a training-set table (:data:`sdi.training_set.COLUMNS`), checked."""
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


def _seed_worker(worker_id: int) -> None:
    """DataLoader workers: seed numpy and random from the per-worker torch seed (PyTorch's recipe)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    """Shuffling and worker seeds of an epoch depend on (seed, epoch) only, so a resumed run repeats them."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])


# --------------------------------------------------------------------------- model
def build_model(num_classes: int) -> nn.Module:
    """torchvision ResNet50 with random weights (``weights=None``) and a ``num_classes``-way head."""
    return torchvision.models.resnet50(weights=None, num_classes=num_classes)


def setup_distributed(model: nn.Module, device: torch.device) -> nn.Module:
    """The one hook for multi-GPU training (the paper trains with SyncBatchNorm on several GPUs).

    Single process: the model moved to ``device``. Under a process group of several ranks:
    BatchNorm -> SyncBatchNorm, moved to ``device`` and wrapped in DistributedDataParallel
    (which starts every rank from rank 0's weights). The bare model is ``model.module``.
    """
    if not distributed.is_distributed():
        return model.to(device)
    model = distributed.convert_sync_batchnorm(model, device).to(device)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


# --------------------------------------------------------------------------- train / evaluate
def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    device: torch.device, desc: str, amp: bool = False) -> tuple[float, float, int]:
    """One pass over ``loader``; returns (mean loss, top-1 % on the augmented training batches,
    images seen), each over all processes under DDP."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in tqdm(loader, desc=desc, unit="batch", leave=False, mininterval=2,
                               disable=not distributed.is_main_process()):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(images)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    if distributed.is_distributed():
        logger.info("%s: %d images on this process", desc, seen)
        total_loss, correct, seen = distributed.all_reduce_sum([total_loss, correct, seen])
        correct, seen = int(correct), int(seen)
    return total_loss / max(seen, 1), 100.0 * correct / max(seen, 1), seen


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device,
             desc: str = "eval", amp: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """Returns (mean loss, y_true (N,) int64, y_pred (N,) int64) in loader order."""
    model.eval()
    total_loss, y_true, y_pred = 0.0, [], []
    for images, labels in tqdm(loader, desc=desc, unit="batch", leave=False, mininterval=2):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(images)
        total_loss += criterion(logits.float(), labels).item() * len(labels)
        y_true.append(labels.cpu())
        y_pred.append(logits.argmax(1).cpu())
    y_true, y_pred = torch.cat(y_true).numpy(), torch.cat(y_pred).numpy()
    return total_loss / len(y_true), y_true, y_pred


def evaluate_all(model: nn.Module, dataset: Dataset, criterion: nn.Module, device: torch.device, desc: str,
                 amp: bool = False, **loader_kw) -> tuple[float, np.ndarray, np.ndarray]:
    """:func:`evaluate` on the whole ``dataset``; under DDP each process takes every W-th image
    (no padding, so nothing is counted twice) and the predictions are gathered in dataset order.
    ``model`` is the bare model (DDP's forward would sync buffers on unequal shards)."""
    world, rank = distributed.world_size(), distributed.rank()
    if world == 1:
        return evaluate(model, DataLoader(dataset, shuffle=False, **loader_kw), criterion, device, desc, amp)
    part = Subset(dataset, range(rank, len(dataset), world))
    mine = (0.0, np.zeros(0, np.int64), np.zeros(0, np.int64))
    if len(part):
        loss, y_true, y_pred = evaluate(model, DataLoader(part, shuffle=False, **loader_kw), criterion, device,
                                        desc, amp)
        mine = (loss * len(y_true), y_true, y_pred)
    parts = distributed.all_gather_object(mine)
    y_true, y_pred = np.zeros(len(dataset), np.int64), np.zeros(len(dataset), np.int64)
    for r, (_, t, p) in enumerate(parts):
        y_true[r::world], y_pred[r::world] = t, p
    return sum(part[0] for part in parts) / len(dataset), y_true, y_pred


# --------------------------------------------------------------------------- files
def _rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _fingerprint(params: dict, train: pd.DataFrame, val: pd.DataFrame) -> str:
    """What a resumable checkpoint must agree on: hyperparameters and the exact images and labels."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for table in (train, val):
        h.update(pd.util.hash_pandas_object(table[["path", "label"]], index=False).to_numpy().tobytes())
    return h.hexdigest()


def _write_log(path: Path, history: list[dict]) -> None:
    atomic_write(path, lambda tmp: pd.DataFrame(history, columns=LOG_COLUMNS).to_csv(tmp, index=False))


def _save_best(path: Path, model_state: dict, epoch: int, val_top1: float, meta: dict) -> None:
    state = {"model": model_state, "epoch": epoch, "val_top1": val_top1, **meta}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


# --------------------------------------------------------------------------- entry point
def train_classifier(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, out_dir: str | os.PathLike, *,
                     num_classes: int, class_names: list[str] | None = None, epochs: int = 100,
                     batch_size: int = 128, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-4,
                     resize: int = 256, crop: int = 224, augment: str = "none", augment_at: str = "crop",
                     seed: int = 0, device: str = "auto", num_workers: int = 2,
                     synthetic: pd.DataFrame | None = None,
                     amp: bool = False, stop_after_epoch: int | None = None,
                     processes: int | None = None, tracking: TrackingConfig | None = None,
                     run_name: str | None = None) -> dict | None:
    """Train ResNet50 from scratch, choose the epoch on validation, evaluate test once.

    Args:
        train, val, test: manifests with columns ``path`` (str) and ``label`` (int, 0..C-1). ``train`` is
            one row per training example of an epoch; it may be a :func:`sdi.training_set.build_training_set`
            table (``source``, ``variant``), else every row counts as ``real``.
        out_dir: folder for metrics.json, log.csv, train_set.parquet, best.pt and last.pt (created if missing).
        num_classes: C. class_names: C names for the per-class metrics (default: the labels).
        epochs, batch_size, lr, momentum, weight_decay: SGD with cosine annealing over ``epochs``
            and cross-entropy (published: 100, 128, 0.01, 0.9, 1e-4).
        resize, crop: image sizes of the transforms (published: 256, 224), see :func:`build_transforms`.
        augment: 'none' | 'randaugment' | 'cutout' | 'gridmask' (the paper's augmentation baselines).
        augment_at: 'crop' (after the crop, METHOD section 7) or 'raw' (on the raw image before the
            resize, as the reference ran them), see :func:`build_transforms`.
        seed: seeds model init, shuffling and augmentation (torch, numpy, random, DataLoader).
        device: 'auto' (cuda when present, else cpu) or a torch device string.
        num_workers: DataLoader worker processes.
        synthetic: optional (path, label) manifest of synthetic images, added to ``train`` as ``synthetic`` rows.
        amp: bf16 autocast on CUDA (ignored on CPU); off by default (the reference trains in fp32).
        stop_after_epoch: stop cleanly after this epoch (e.g. to fit a time-limited job) and
            return None; the next call with the same arguments resumes from last.pt.
        processes: training processes (DDP); None = one per visible GPU (1 on the CPU), see
            :func:`sdi.distributed.world_size_for`. ``batch_size`` is split between them.
        tracking: TensorBoard (``out_dir/tensorboard``) and/or W&B (:class:`sdi.tracking.TrackingConfig`);
            None tracks nothing. run_name: the W&B run name (default: out_dir).

    Returns:
        The content of metrics.json (see the module docstring), or None when stopped early.
    """
    options = {k: v for k, v in locals().items() if k != "processes"}  # the arguments above, as passed
    world = distributed.world_size_for(device, processes, key="classifier.processes")
    if world > 1:
        return distributed.launch(_train_classifier, options, world, device=device)
    return _train_classifier(**options)


def _train_classifier(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, out_dir: str | os.PathLike, *,
                      num_classes: int, class_names: list[str] | None, epochs: int, batch_size: int, lr: float,
                      momentum: float, weight_decay: float, resize: int, crop: int, augment: str, augment_at: str,
                      seed: int, device: str, num_workers: int, synthetic: pd.DataFrame | None, amp: bool,
                      stop_after_epoch: int | None, tracking: TrackingConfig | None = None,
                      run_name: str | None = None) -> dict | None:
    """The body of :func:`train_classifier`, in one process or in each rank of a process group."""
    t_start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"classifier class_names has {len(class_names)} entries, expected num_classes={num_classes}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"classifier epochs ({epochs}) and batch_size ({batch_size}) must be >= 1")
    train_all = _training_rows(train, synthetic, num_classes)
    val, test = _check_manifest(val, "val", num_classes), _check_manifest(test, "test", num_classes)
    n_rows = training_set.counts(train_all)
    device = distributed.local_device(device)
    world, rank, main = distributed.world_size(), distributed.rank(), distributed.is_main_process()
    amp = bool(amp and device.type == "cuda")
    params = {"num_classes": num_classes, "epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
              "weight_decay": weight_decay, "resize": resize, "crop": crop, "augment": augment, "seed": seed,
              "amp": amp}
    if augment_at != "crop":  # only when set, so runs made before the option keep their checkpoints
        params["augment_at"] = augment_at
    meta = {"arch": "resnet50", "num_classes": num_classes, "class_names": class_names, "resize": resize,
            "crop": crop, "mean": list(MEAN), "std": list(STD)}

    # --- data
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    train_tf = build_transforms(resize, crop, augment, train=True, augment_at=augment_at)
    eval_tf = build_transforms(resize, crop, "none", train=False)
    generator = torch.Generator()
    rank_batch = max(1, batch_size // world)  # batch_size is the global batch
    if main and rank_batch * world != batch_size:
        logger.warning("classifier batch_size %d is not a multiple of %d processes; the global batch is %d",
                       batch_size, world, rank_batch * world)
    loader_kw = {"batch_size": rank_batch, "num_workers": num_workers, "pin_memory": device.type == "cuda",
                 "worker_init_fn": _seed_worker}
    train_set = ManifestDataset(train_all, train_tf)
    if world == 1:
        # A last batch of one image breaks BatchNorm on small inputs (1x1 feature maps); drop only that case.
        train_loader = DataLoader(train_set, shuffle=True, generator=generator,
                                  drop_last=len(train_all) % batch_size == 1 < len(train_all), **loader_kw)
    else:  # equal shards (padded by repeating images); SyncBatchNorm sees the whole global batch
        sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        train_loader = DataLoader(train_set, sampler=sampler, generator=generator, **loader_kw)
    # Evaluation draws no random numbers, but a DataLoader iterator takes a seed from its generator
    # (the global RNG by default); a separate one keeps the training stream independent of evaluation.
    eval_kw = {**loader_kw, "generator": torch.Generator().manual_seed(seed)}
    val_set = ManifestDataset(val, eval_tf)

    # --- model, optimizer, scheduler
    model = setup_distributed(build_model(num_classes), device)
    bare = _bare(model)
    if main and world > 1:
        sync = [type(m).__name__ for m in model.modules() if isinstance(m, distributed.SYNC_BATCHNORM)]
        logger.info("%s over %d processes, %d %s layers", type(model).__name__, world, len(sync),
                    ", ".join(sorted(set(sync))))
    if world > 1:  # same initial weights (DDP broadcasts rank 0's), different augmentation streams
        rank_seed = int(np.random.SeedSequence([seed, rank, 1]).generate_state(1)[0])
        random.seed(rank_seed)
        np.random.seed(rank_seed)
        torch.manual_seed(rank_seed)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)

    # --- resume
    fingerprint = _fingerprint(params, train_all, val)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    start_epoch, best_epoch, best_val, history, elapsed_before = 1, 0, -1.0, [], 0.0
    if main:
        (out_dir / "metrics.json").unlink(missing_ok=True)  # rewritten at the end; never trusted from an older run
        write_parquet(train_all, out_dir / "train_set.parquet")
    if last_path.exists():
        # Our own file (written below), so a full unpickle is safe; it holds numpy/python RNG states.
        # map to CPU: torch.set_rng_state needs CPU tensors; load_state_dict moves the rest to the model's device.
        ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
        if ckpt.get("fingerprint") != fingerprint:
            if main:
                logger.warning("%s was written for other data or hyperparameters; starting from epoch 1 "
                               "and overwriting it", last_path)
        else:
            bare.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            start_epoch, best_epoch, best_val = ckpt["epoch"] + 1, ckpt["best_epoch"], ckpt["best_val_top1"]
            history, elapsed_before = ckpt["history"], ckpt["wall_time_s"]
            if ckpt.get("world_size", 1) == world:  # each process continues its own random streams
                _set_rng_states(ckpt["rng_per_rank"][rank] if world > 1 else ckpt["rng"])
            elif main:
                logger.warning("%s was written by %d process(es), this run has %d: resuming the weights, "
                               "optimizer and schedule, with fresh random streams", last_path,
                               ckpt.get("world_size", 1), world)
            # Killed between writing last.pt and best.pt: last.pt's weights are the best ones.
            if main and best_epoch == ckpt["epoch"] and (
                    not best_path.exists() or torch.load(best_path, map_location="cpu")["epoch"] != best_epoch):
                _save_best(best_path, ckpt["model"], best_epoch, best_val, meta)
            if main:
                _write_log(out_dir / "log.csv", history)  # killed before log.csv was updated: catch up
                logger.info("resuming from %s after epoch %d (best so far: epoch %d, val top-1 %.2f%%)",
                            last_path, ckpt["epoch"], best_epoch, best_val)
            del ckpt

    if main:
        logger.info("training ResNet50 from scratch on %s x %d process(es): %d real + %d real copies + %d synthetic "
                    "train, %d val, %d test images, %d classes, %d steps per epoch, epochs %d-%d, augment=%s at %s",
                    device.type, world, n_rows["n_real"], n_rows["n_real_copies"], n_rows["n_synthetic"], len(val),
                    len(test), num_classes, len(train_loader), start_epoch, epochs, augment, augment_at)
    # Only the main process writes; a resumed run drops the events a killed run logged after its checkpoint.
    tracker = Tracker(out_dir, tracking or TrackingConfig(tensorboard=False), run_name=run_name or str(out_dir),
                      config=params, resume_step=start_epoch if start_epoch > 1 else None, enabled=main)
    progress = tqdm(total=epochs, initial=start_epoch - 1, desc="classifier", unit="epoch", disable=not main)
    seen, images_trained, t_train = 0, 0, time.time()
    for epoch in range(start_epoch, epochs + 1):
        generator.manual_seed(_epoch_seed(seed, epoch) ^ rank)
        if world > 1:
            train_loader.sampler.set_epoch(epoch)
        epoch_lr = optimizer.param_groups[0]["lr"]
        train_loss, train_top1, seen = train_one_epoch(model, train_loader, criterion, optimizer, device,
                                                       f"epoch {epoch}/{epochs} train", amp)
        scheduler.step()
        val_loss, y_true, y_pred = evaluate_all(bare, val_set, criterion, device, f"epoch {epoch}/{epochs} val",
                                                amp, **eval_kw)
        val_metrics = classification_metrics(y_true, y_pred, num_classes)
        history.append({"epoch": epoch, "lr": epoch_lr, "train_loss": train_loss, "train_top1": train_top1,
                        "val_loss": val_loss, "val_top1": val_metrics["top1"], "val_balanced": val_metrics["balanced"]})
        images_trained += seen
        progress.update(1)
        tracker.scalars({"train/loss": train_loss, "train/top1": train_top1, "val/loss": val_loss,
                         "val/top1": val_metrics["top1"], "val/balanced": val_metrics["balanced"], "lr": epoch_lr},
                        epoch)
        if val_metrics["top1"] > best_val:  # strict: ties keep the earlier epoch
            best_epoch, best_val = epoch, val_metrics["top1"]
        rng = distributed.all_gather_object(_rng_states())  # collective: every rank takes part
        if main:
            logger.info("epoch %d/%d lr %.5f train loss %.4f top-1 %.2f%% | val loss %.4f top-1 %.2f%% "
                        "balanced %.2f%% | best epoch %d", epoch, epochs, epoch_lr, train_loss, train_top1, val_loss,
                        val_metrics["top1"], val_metrics["balanced"], best_epoch)
            # last.pt first, then best.pt: if killed in between, resuming rewrites best.pt from last.pt.
            state = {"model": bare.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "epoch": epoch, "best_epoch": best_epoch,
                     "best_val_top1": best_val, "history": history, "rng": rng[0], "fingerprint": fingerprint,
                     "params": params, "wall_time_s": elapsed_before + time.time() - t_start, "world_size": world}
            if world > 1:
                state["rng_per_rank"] = rng
            atomic_write(last_path, lambda tmp, state=state: torch.save(state, tmp))
            if best_epoch == epoch:
                _save_best(best_path, state["model"], epoch, best_val, meta)
            _write_log(out_dir / "log.csv", history)
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < epochs:
            if main:
                logger.info("stopping after epoch %d as asked; call again to resume from %s", epoch, last_path)
            tracker.close()
            progress.close()
            distributed.barrier()
            return None
    progress.close()
    train_rate = images_trained / max(time.time() - t_train, 1e-9)
    distributed.barrier()  # best.pt is written

    # --- test, once, with the epoch chosen on validation
    bare.load_state_dict(torch.load(best_path, map_location=device)["model"])
    _, y_true, y_pred = evaluate_all(bare, ManifestDataset(test, eval_tf), criterion, device, "test", amp, **eval_kw)
    metrics = classification_metrics(y_true, y_pred, num_classes, class_names)
    metrics.update({"split": "test", "best_epoch": best_epoch, "best_val_top1": best_val,
                    **n_rows, "steps_per_epoch": len(train_loader),
                    "n_train_real": n_rows["n_real"] + n_rows["n_real_copies"],
                    "n_train_synthetic": n_rows["n_synthetic"], "n_val": len(val),
                    "epochs": epochs, "wall_time_s": round(elapsed_before + time.time() - t_start, 3),
                    "device": str(device), "processes": world, "train_images_per_epoch": seen, "params": params})
    if not main:
        return metrics
    atomic_write(out_dir / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics, indent=2) + "\n"))
    tracker.scalars({"test/top1": metrics["top1"], "test/balanced": metrics["balanced"]}, best_epoch)
    tracker.close()
    logger.info("classifier done: best val top-1 %.2f%% (epoch %d of %d), test top-1 %.2f%%, balanced %.2f%%, "
                "%.1f train images/s this run -> %s", best_val, best_epoch, epochs, metrics["top1"],
                metrics["balanced"], train_rate, out_dir / "metrics.json")
    return metrics
