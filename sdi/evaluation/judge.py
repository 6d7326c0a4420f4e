"""An independent judge of images of the mini world: which digit, and which colours.

The judge is not part of the pipeline and never sees what the pipeline trains on: the class
judge is a small CNN trained here on real digits held out of the mini world (or any labelled
images given to :func:`train_judge`), the look judge reads the colours off the pixels. Used by
``bench/mini_world.py`` (class fidelity of text-prompted samples) and the science test (tests/test_science.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from sdi.data import mini_corpus as corpus


class DigitJudge(nn.Module):
    """CNN: [B, 3, 32, 32] pixels in [0, 1] -> [B, n_classes] logits."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(256, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _as_input(images) -> torch.Tensor:
    """float [N, 3, H, W] in [0, 1] (tensor or array) or uint8 [N, H, W, 3] -> float [N, 3, 32, 32]."""
    x = torch.as_tensor(np.asarray(images))
    if x.dtype == torch.uint8:
        x = x.permute(0, 3, 1, 2).float() / 255.0
    x = x.float()
    if x.shape[-1] != corpus.IMAGE_SIZE:
        x = nn.functional.interpolate(x, size=corpus.IMAGE_SIZE, mode="bilinear", antialias=True, align_corners=False)
    return x


def _shift(x: torch.Tensor, gen: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Random translation by up to pixels in each direction (edge padding)."""
    padded = nn.functional.pad(x, (pixels,) * 4, mode="replicate")
    i, j = torch.randint(0, 2 * pixels + 1, (2,), generator=gen).tolist()
    return padded[:, :, i:i + x.shape[2], j:j + x.shape[3]]


def train_judge(images, labels, *, n_classes: int = 10, steps: int = 600, batch: int = 64, lr: float = 2e-3,
                seed: int = 0) -> DigitJudge:
    """Train a DigitJudge on labelled images (see :func:`_as_input` for the formats); returns it in eval mode.

    Random shifts of up to 2 pixels; AdamW with a cosine schedule; seeded. About a minute on one core.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = _as_input(images)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    model = DigitJudge(n_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(steps):
        i = torch.randint(0, len(x), (batch,), generator=gen)
        loss = nn.functional.cross_entropy(model(_shift(x[i], gen)), y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval().requires_grad_(False)


@torch.no_grad()
def judge_classes(judge: DigitJudge, images, batch: int = 512) -> np.ndarray:
    """The judge's class for each image: int64 [N]."""
    x = _as_input(images)
    return np.concatenate([judge(x[i:i + batch]).argmax(1).numpy() for i in range(0, len(x), batch)])


def judge_looks(images) -> dict[str, np.ndarray]:
    """{'fg', 'bg'}: the nearest palette colour (indices into FOREGROUNDS / BACKGROUNDS) of each image.

    Background: the median colour of the 2-pixel border (the digit never reaches it); foreground:
    the mean colour of the 10% of pixels farthest from that background.
    """
    x = _as_input(images).permute(0, 2, 3, 1).reshape(len(images), -1, 3).numpy()
    side = corpus.IMAGE_SIZE
    border = np.ones((side, side), dtype=bool)
    border[2:-2, 2:-2] = False
    bg = np.median(x[:, border.ravel()], axis=1)
    dist = np.linalg.norm(x - bg[:, None], axis=2)
    k = max(1, x.shape[1] // 10)
    far = np.argsort(-dist, axis=1)[:, :k]
    fg = np.take_along_axis(x, far[:, :, None], axis=1).mean(axis=1)

    def nearest(colours, table):
        palette = np.asarray(list(table.values()), dtype=np.float32) / 255.0
        return np.linalg.norm(colours[:, None] - palette[None], axis=2).argmin(1)

    return {"fg": nearest(fg, corpus.FOREGROUNDS), "bg": nearest(bg, corpus.BACKGROUNDS)}


def held_out_judge(seed: int = 0, renders: int = 3, steps: int = 600) -> DigitJudge:
    """A DigitJudge trained on the mini world's held-out ``judge`` digits, each drawn in `renders` random looks."""
    digits, labels = corpus.load_mnist()
    idx = np.tile(corpus.source_split(labels)["judge"], renders)
    rng = np.random.default_rng(seed)
    images = corpus.render(digits[idx], *corpus.random_looks(len(idx), rng))
    return train_judge(images, labels[idx], steps=steps, seed=seed)


def target_judge(seed: int = 0, looks=corpus.DEFAULT_TARGET_LOOKS, renders: int = 3, steps: int = 600) -> DigitJudge:
    """A DigitJudge trained on the held-out ``judge`` digits drawn in the target dataset's looks only.

    The issue's judge: real images of the target's part of the attribute space that neither the mini
    world nor the pipeline ever saw (the target dataset's digits are disjoint from them).
    """
    digits, labels = corpus.load_mnist()
    idx = np.tile(corpus.source_split(labels)["judge"], renders)
    rng = np.random.default_rng(seed)
    parsed = [corpus.Look.named(*look) for look in looks]
    chosen = [parsed[k] for k in rng.integers(len(parsed), size=len(idx))]
    images = corpus.render(digits[idx], np.array([lk.fg for lk in chosen]), np.array([lk.bg for lk in chosen]),
                           np.array([lk.stroke for lk in chosen]))
    return train_judge(images, labels[idx], steps=steps, seed=seed)


def in_looks(colours: dict[str, np.ndarray], looks=corpus.DEFAULT_TARGET_LOOKS) -> np.ndarray:
    """bool [N]: the (foreground, background) pair the look judge read is one of looks'."""
    pairs = {(corpus.Look.named(*look).fg, corpus.Look.named(*look).bg) for look in looks}
    return np.array([(f, b) in pairs for f, b in zip(colours["fg"], colours["bg"], strict=True)])


def class_verdicts(judge: DigitJudge, images, labels, classes: list[corpus.TargetClass]) -> dict[str, np.ndarray]:
    """Per image (uint8 [N, H, W, 3] or float [N, 3, H, W]) generated for class ``labels[i]`` of classes
    (:func:`sdi.data.mini_corpus.target_classes`): bool arrays 'digit' (the judge reads the class's digit),
    'look' (its colours are one of the class's looks) and 'class' (the digit and, for classes defined by
    look, the look too)."""
    by_label = {c.label: c for c in classes}
    owners = [by_label[int(k)] for k in labels]
    digit = judge_classes(judge, images) == np.array([c.digit for c in owners])
    colours = judge_looks(images)
    look = np.array([(f, b) in {(lk.fg, lk.bg) for lk in c.looks}
                     for f, b, c in zip(colours["fg"], colours["bg"], owners, strict=True)])
    by_look = np.array([c.look_name is not None for c in owners])
    return {"digit": digit, "look": look, "class": digit & (look | ~by_look)}


def judge_filtered(judge: DigitJudge, filtered_dir, workdir=".", looks=corpus.DEFAULT_TARGET_LOOKS,
                   classes: list[corpus.TargetClass] | None = None) -> dict:
    """The judge's verdict on a filter's output folder (``manifest.parquet``: path, label, kept).

    Returns {'kept', 'dropped', 'all'}: each {'images', 'class_accuracy', 'look_accuracy',
    'digit_accuracy'}: the fractions of :func:`class_verdicts` (class, look and digit right).
    classes: the dataset's classes (:func:`sdi.data.mini_corpus.target_classes`, e.g. defined by look);
    None: one class per digit, label = digit, each in any of looks.
    """
    table = pd.read_parquet(Path(filtered_dir) / "manifest.parquet")
    images = np.stack([np.asarray(Image.open(Path(workdir) / p).convert("RGB").resize(
        (corpus.IMAGE_SIZE, corpus.IMAGE_SIZE), Image.Resampling.BILINEAR)) for p in table.path])
    verdicts = class_verdicts(judge, images, table.label.to_numpy(), classes or corpus.target_classes(looks))
    out = {}
    for name, mask in (("kept", table.kept.to_numpy()), ("dropped", ~table.kept.to_numpy()),
                       ("all", np.ones(len(table), dtype=bool))):
        n = int(mask.sum())
        out[name] = {"images": n, **{f"{key}_accuracy": float(verdicts[key][mask].mean()) if n else float("nan")
                                     for key in ("class", "look", "digit")}}
    return out
