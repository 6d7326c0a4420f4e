"""sdi: Semantic Distribution Infilling, dataset augmentation with Stable Diffusion.

Importing the package puts the Hugging Face libraries in offline mode: every model is
loaded from a local folder and nothing may reach a hub at run time.

The stage functions that the workflow scripts call are the package's Python API (README
"Using the augmented dataset"); each takes and returns tables (pandas DataFrames) and paths:

========================  ===========================================================
``read_dataset``          a dataset release as one table (image_id, path, label, class_name, subset)
``make_split``            train / val / test manifests of that table
``train_projector``       the semantic projector (CLIP image embedding -> SD conditioning)
``extract_embeddings``    CLIP and projected embeddings of a manifest's images
``sample_class_embeddings``  conditioning vectors per class (Gaussian, GMM or text baseline)
``ImageGenerator``        a Stable Diffusion pipeline (``from_folders``: loaded once), for ``generate_shard``
``GenerationSettings``    what the images depend on besides samples and models (steps, guidance, ...)
``generate_shard``        images of a table of samples, with their provenance manifest
``filter_generated``      CLIP scores, per-class ranks and the kept images
``method_training_set``   an experiment method's exact training set (real + synthetic rows)
``train_classifier``      ResNet50 from scratch on a training set; metrics
``export_dataset``        a training set as an ImageFolder / Hugging Face dataset folder
========================  ===========================================================

They are loaded on first use (module ``__getattr__``), so ``import sdi`` stays light: the
workflow imports it while planning, before any job needs torch.
"""

import importlib
import os
import sys
import types

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "DIFFUSERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

# The method's conditioning prompt; its `class</w>` token is replaced by a projected
# CLIP image embedding (METHOD.md section 2).
PROMPT = "a high quality photo of a class."
PLACEHOLDER_TOKEN = "class</w>"
NEGATIVE_PROMPT = "monochrome, lowres, bad anatomy, worst quality, low quality"

# The Python API: name -> the module that defines it (imported on first use).
_API = {
    "read_dataset": "sdi.datasets",
    "make_split": "sdi.datasets",
    "train_projector": "sdi.train_projector",
    "extract_embeddings": "sdi.embeddings",
    "sample_class_embeddings": "sdi.sampling",
    "ImageGenerator": "sdi.generation",
    "GenerationSettings": "sdi.generation",
    "generate_shard": "sdi.generation",
    "filter_generated": "sdi.filtering",
    "method_training_set": "sdi.training_set",
    "train_classifier": "sdi.classifier",
    "export_dataset": "sdi.export",
}
__all__ = ["PROMPT", "PLACEHOLDER_TOKEN", "NEGATIVE_PROMPT", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'sdi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})


class _Package(types.ModuleType):
    """``sdi.train_projector`` is both a module and its stage function. Importing the module binds it on
    the package; this keeps the name for the function (``from sdi.train_projector import ...`` is unchanged)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
