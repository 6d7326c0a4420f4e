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
``filter_generated``      CLIP scores, per-class ranks and the kept images (and their CLIP embeddings)
``method_training_set``   an experiment method's exact training set (real + synthetic rows)
``train_classifier``      ResNet50 from scratch (or fine-tuned from local weights) on a training set; metrics
``embed_split_images``    CLIP image embeddings of a split's real images, for the linear probe
``run_probe``             the CLIP linear probe on stored embeddings; the same metrics
``load_backbone``         a torchvision model from a local state dict, with a new head
``export_dataset``        a training set as an ImageFolder / Hugging Face dataset folder
========================  ===========================================================

They are loaded on first use (module ``__getattr__``), so ``import sdi`` stays light: the
workflow imports it while planning, before any job needs torch.
"""

import importlib
import os

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "DIFFUSERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

# The method's conditioning prompt; its `class</w>` token is replaced by a projected
# CLIP image embedding (docs/method.md section 2).
PROMPT = "a high quality photo of a class."
PLACEHOLDER_TOKEN = "class</w>"
NEGATIVE_PROMPT = "monochrome, lowres, bad anatomy, worst quality, low quality"

# The Python API: name -> the module that defines it (imported on first use).
_API = {
    "read_dataset": "sdi.data.readers",
    "make_split": "sdi.data.split",
    "train_projector": "sdi.training.projector",
    "extract_embeddings": "sdi.pipeline.embeddings",
    "sample_class_embeddings": "sdi.pipeline.sampling",
    "ImageGenerator": "sdi.models.generator",
    "GenerationSettings": "sdi.models.generator",
    "generate_shard": "sdi.pipeline.generation",
    "filter_generated": "sdi.pipeline.filtering",
    "method_training_set": "sdi.pipeline.training_set",
    "train_classifier": "sdi.training.classifier",
    "embed_split_images": "sdi.pipeline.embeddings",
    "run_probe": "sdi.training.linear_probe",
    "load_backbone": "sdi.models.backbones",
    "export_dataset": "sdi.pipeline.export",
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
