"""The classifier's training engine: one epoch of training (:func:`train_one_epoch`) and evaluation
(:func:`evaluate`, :func:`evaluate_all`: a whole dataset, split between the processes under DDP), as
torchvision's ``references/classification/train.py`` has them. :mod:`sdi.training.classifier` runs them.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from sdi.training import distributed

logger = logging.getLogger(__name__)


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
