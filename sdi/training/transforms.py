"""The classifier's image transforms (torchvision's ``presets.py``): resize/crop,
RandAugment, Cutout and GridMask, at crop or on the raw image.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

# Normalisation of the reference code (CIFAR-100 statistics, used for every dataset there).
MEAN = (0.507, 0.487, 0.441)
STD = (0.267, 0.256, 0.276)
AUGMENTS = ("none", "randaugment", "cutout", "gridmask")
AUGMENT_AT = ("crop", "raw")


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
    """The transforms of docs/method.md section 7: PIL RGB image -> (3, crop, crop) float32 normalised tensor.

    train, ``augment_at='crop'`` (docs/method.md section 7, the default):
        Resize((resize, resize)) -> RandomRotation(15) -> RandomCrop(crop) -> RandomHorizontalFlip
        [-> RandAugment()] -> ToTensor -> Normalize [-> Cutout | GridMask].
    train, ``augment_at='raw'`` (how the reference ran its baselines, docs/method.md section 8):
        [RandAugment() | Cutout | GridMask on the raw image] -> Resize((resize, resize)) -> RandomRotation(15)
        -> RandomCrop(crop) -> RandomHorizontalFlip -> ToTensor -> Normalize.
    eval:  Resize((resize, resize)) -> CenterCrop(crop) -> ToTensor -> Normalize.

    Sizes of the baselines: at ``crop`` they are scaled with the crop from the papers' 224 px
    (Cutout 1 hole of ``round(32 * crop / 224)``; GridMask ``d in [round(96 * crop / 224), crop)``);
    at ``raw`` they are the reference's pixel sizes on the raw image (Cutout 32 px; GridMask
    ``d in [90, 140)``). GridMask always uses rotate 15, ratio 0.5, prob 1.0.
    ``rotation`` is RandomRotation's range in degrees (15 in docs/method.md section 7).
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
