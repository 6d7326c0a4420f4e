"""The one image decoder of every stage: a file on disk -> the 8-bit RGB picture a viewer shows.

Every stage that reads pixels (the split's check, projector training, embeddings, the filter,
the classifier, diagnostics, report figures) goes through :func:`load_rgb`, so they all see
the same picture:

- EXIF orientation is applied (``ImageOps.exif_transpose``): a portrait phone photo stored
  sideways with orientation tag 6 comes out upright, as in an image viewer.
- 16-bit and 32-bit integer and float modes (``I;16*``, ``I``, ``F``: medical and scientific
  images) are scaled to 8 bits by their value range, never clipped (:func:`to_uint8`).
- Alpha (``RGBA``, ``LA``, ``PA``, palette with transparency) is composited on white;
  ``CMYK``, ``P``, ``1``, ``L``, ``YCbCr`` and the rest go through Pillow's ``convert``.
- Animated files (GIF, WebP, APNG, multi-page TIFF) give their first frame.

The files themselves are only ever read.
"""

from __future__ import annotations

import os

from PIL import Image, ImageOps

from sdi.io.lazy import lazy_import

np = lazy_import("numpy")  # planning imports this module (IMG_EXTENSIONS) and needs no numpy

# torchvision.datasets.folder.IMG_EXTENSIONS: what an ImageFolder dataset counts as an image
# (kept here as data so that planning need not import torchvision; a test compares the two).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# What any other format may name as an image: ImageFolder's extensions and GIF.
IMAGE_SUFFIXES = frozenset(IMG_EXTENSIONS) | {".gif"}

WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # more than 8 bits per pixel, one channel
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Map a wide single-channel array to uint8 by its value range, never by clipping.

    - unsigned integers up to 16 bits (and ``I`` images whose values all lie in 0..65535, as
      Pillow opens many 16-bit files): the 16-bit range, ``v * 255 / 65535``, so a 16-bit
      grey ``g * 257`` comes back as ``g``;
    - other integers (signed or 32-bit data): the image's own min..max;
    - floats within [0, 1]: ``v * 255``; other floats: the image's own min..max.
    A constant image outside those ranges maps to 0. Non-finite floats count as the minimum.
    """
    x = np.asarray(pixels)
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        if lo >= 0 and hi <= 65535:
            return np.floor(x.astype(np.float64) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
        return _stretch(x.astype(np.float64), lo, hi)
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        x = np.where(finite, x, np.nan)
        fill = np.nanmin(x) if finite.any() else 0.0
        x = np.where(finite, x, fill)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if lo >= 0.0 and hi <= 1.0:
        return np.floor(x * 255.0 + 0.5).astype(np.uint8)
    return _stretch(x, lo, hi)


def _stretch(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(x.shape, np.uint8)
    return np.floor((x - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any decoded Pillow image -> mode ``RGB`` (see the module docstring for each mode)."""
    if img.mode == "RGB":
        return img
    if img.mode in WIDE_MODES:
        return Image.fromarray(to_uint8(np.asarray(img)), "L").convert("RGB")
    if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image file as the upright 8-bit RGB picture a viewer shows (first frame)."""
    with Image.open(path) as img:
        img.load()
        upright = ImageOps.exif_transpose(img)  # a copy, rotated/flipped by the EXIF tag if any
    return to_rgb(upright)


def is_image_name(name: str, extensions=IMG_EXTENSIONS) -> bool:
    """Whether a file name ends with one of ``extensions`` (case-insensitive), as torchvision's
    ``has_file_allowed_extension`` decides."""
    return name.lower().endswith(tuple(extensions))
