"""sdi: Semantic Distribution Infilling, dataset augmentation with Stable Diffusion.

Importing the package puts the Hugging Face libraries in offline mode: every model is
loaded from a local folder and nothing may reach a hub at run time.
"""

import os

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "DIFFUSERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

# The method's conditioning prompt; its `class</w>` token is replaced by a projected
# CLIP image embedding (METHOD.md section 2).
PROMPT = "a high quality photo of a class."
PLACEHOLDER_TOKEN = "class</w>"
NEGATIVE_PROMPT = "monochrome, lowres, bad anatomy, worst quality, low quality"
