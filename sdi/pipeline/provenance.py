"""Provenance of generated images: the file layout and PNG metadata that let a shard resume
and any image be regenerated bit for bit (the models' id: :func:`sdi.models.generator.model_id`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from sdi.io.artifacts import atomic_write

# Provenance fields that describe how an image was made but not what it should look like:
# a stored image whose other fields match the current settings is kept on resume.
_NOT_COMPARED = ("batch", "versions")
PNG_KEY = "sdi"


def class_folder(label: int, class_name: str) -> str:
    """``7, 'digit seven'`` -> ``0007_digit_seven`` (anything but letters, digits, ``._-`` -> ``_``)."""
    return f"{int(label):04d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', str(class_name))}"


def image_relpath(label: int, class_name: str, sample_id: str) -> str:
    """Path of an image below the generation folder: ``images/{label:04d}_{class}/{sample_id}.png``."""
    return f"images/{class_folder(label, class_name)}/{sample_id}.png"


def vector_sha256(vector) -> str:
    """SHA-256 of a conditioning vector's little-endian float32 bytes; '' for no vector."""
    if vector is None:
        return ""
    return hashlib.sha256(np.ascontiguousarray(vector, dtype="<f4").tobytes()).hexdigest()


def _versions() -> str:
    import diffusers

    return f"torch {torch.__version__}, diffusers {diffusers.__version__}"


def save_png(image: Image.Image, path: str | Path, provenance: Mapping) -> Path:
    """Write image as PNG atomically (temp name in the same folder, then rename), with
    provenance as JSON in its ``sdi`` text chunk. Same pixels + provenance -> same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, json.dumps(dict(provenance), sort_keys=True))
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info), clean=False)


def read_provenance(path: str | Path) -> dict | None:
    """The provenance stored in a generated PNG, or None if the file is missing, does not
    decode fully (truncated, corrupt) or carries none."""
    try:
        with Image.open(path) as img:
            img.verify()  # chunk CRCs up to IEND
        with Image.open(path) as img:
            img.load()  # full pixel decode: verify() misses truncated image data
            text = img.text.get(PNG_KEY)
        return json.loads(text) if text else None
    except Exception:  # noqa: BLE001 - any failure means the file cannot be trusted
        return None


def _matches(stored: dict | None, expected: Mapping) -> bool:
    if stored is None:
        return False
    strip = lambda d: {k: v for k, v in d.items() if k not in _NOT_COMPARED}  # noqa: E731
    return strip(stored) == strip(expected)
