"""Load Stable Diffusion and CLIP from local folders and check that they fit together.

The same functions load the tiny models of :mod:`sdi.models.tiny` and real SD v1.5 /
CLIP ViT-L/14 checkouts; only the folder differs. Nothing here touches the network.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from sdi.models.folders import (
    ModelFolderError,
    _register_open_clip_config,
    check_clip_folder,
    check_sd_folder,
    check_vae_folder,
    filter_clip_errors,
    sd_weights_variant,
    weights_variant,
)


def _quiet_transformers() -> None:
    # Loading CLIPModel weights into the vision-only class reports every text weight
    # as unexpected; that is the intended use, not a problem.
    from transformers.utils import logging

    logging.set_verbosity_error()


def load_sd_pipeline(sd: str | Path, vae: str | Path | None = None, *,
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     scheduler=None):
    """Load a StableDiffusionPipeline (no safety checker) from local folders.

    Weights: the plain files when every component has them, else the ``fp16`` variant files
    (cast to dtype); see :func:`sd_weights_variant`.
    """
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    _quiet_transformers()
    sd = check_sd_folder(sd)
    # The safety checker and its feature extractor are never loaded, whether model_index.json
    # names them (as the hub's SD v1.5 does) or not.
    kwargs = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False,
              "dtype": dtype, "local_files_only": True, "variant": sd_weights_variant(sd)}
    if vae:
        vae = check_vae_folder(vae)
        kwargs["vae"] = AutoencoderKL.from_pretrained(vae, dtype=dtype, local_files_only=True,
                                                      variant=weights_variant(vae, "models.vae",
                                                                              "diffusion_pytorch_model"))
    if scheduler is not None:
        kwargs["scheduler"] = scheduler
    pipe = StableDiffusionPipeline.from_pretrained(sd, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_clip_vision(clip: str | Path, *, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32):
    """(CLIPVisionModelWithProjection, CLIPImageProcessor) from a CLIP folder, in eval mode."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    _quiet_transformers()
    clip = check_clip_folder(clip)
    model = CLIPVisionModelWithProjection.from_pretrained(clip, dtype=dtype, local_files_only=True,
                                                         variant=weights_variant(clip, "models.clip"))
    processor = CLIPImageProcessor.from_pretrained(clip, local_files_only=True)
    return model.to(device).eval().requires_grad_(False), processor


def load_clip(clip: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """(CLIPModel, CLIPImageProcessor, CLIPTokenizer) from a CLIP folder, in eval mode (the filter)."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    _quiet_transformers()
    clip = check_clip_folder(clip)
    model = CLIPModel.from_pretrained(clip, dtype=dtype, local_files_only=True,
                                      variant=weights_variant(clip, "models.clip"))
    processor = CLIPImageProcessor.from_pretrained(clip, local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(clip, local_files_only=True)
    return model.to(device).eval().requires_grad_(False), processor, tokenizer


_IMAGE_ENCODINGS = [0]


def count_image_encodings(n: int) -> None:
    """Add n images to this process's count of CLIP image encodings (every CLIP image forward pass of sdi)."""
    _IMAGE_ENCODINGS[0] += int(n)


def image_encodings() -> int:
    """Images this process has passed through a CLIP image encoder so far (jobs log it: each image is
    encoded once per stage that needs it, and the linear probe encodes none, reusing the filter's)."""
    return _IMAGE_ENCODINGS[0]


class ClipEmbedder:
    """Image and text embeddings of a CLIP, whatever library holds it: what the filter and the
    CLIP-space diagnostics need.

    preprocess(PIL image) -> [3, S, S] float32 pixels; image_embeds([B, 3, S, S]) and
    text_embeds(list of B strings) -> [B, D] float32 projected embeddings, not normalised.
    projection_dim: D. name: what was loaded, for logs and errors.
    """

    projection_dim: int
    name: str
    device: torch.device
    dtype: torch.dtype

    def preprocessor(self):
        """A picklable callable PIL image -> [3, S, S] float32 (for DataLoader worker processes)."""
        raise NotImplementedError

    def preprocess(self, image) -> torch.Tensor:
        return self.preprocessor()(image)

    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError


def _hf_pixels(processor, image) -> torch.Tensor:
    return processor(images=image, return_tensors="pt")["pixel_values"][0]


class TransformersClip(ClipEmbedder):
    """A ``CLIPModel`` folder (clip-vit-large-patch14 layout), see :func:`load_clip`."""

    def __init__(self, folder: str | Path, *, device: torch.device, dtype: torch.dtype):
        self.model, self.processor, self.tokenizer = load_clip(folder, device=device, dtype=dtype)
        self.projection_dim = int(self.model.config.projection_dim)
        self.name, self.device, self.dtype = str(folder), torch.device(device), dtype

    def preprocessor(self):
        return functools.partial(_hf_pixels, self.processor)

    @torch.inference_mode()
    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device, dtype=self.dtype, non_blocking=True)
        count_image_encodings(len(pixels))
        return self.model.get_image_features(pixel_values=pixels).pooler_output.float()

    @torch.inference_mode()
    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(self.device)
        return self.model.get_text_features(input_ids=tokens.input_ids,
                                            attention_mask=tokens.attention_mask).pooler_output.float()


class OpenClip(ClipEmbedder):
    """An open_clip architecture with a local weights file (``models.filter_clip``), see :func:`filter_clip_errors`."""

    def __init__(self, spec: dict, *, device: torch.device, dtype: torch.dtype):
        import open_clip

        problems = filter_clip_errors(spec)
        if problems:
            raise ModelFolderError("; ".join(problems))
        architecture = _register_open_clip_config(spec)
        model, _, self._preprocess = open_clip.create_model_and_transforms(
            architecture, pretrained=str(spec["weights"]), device="cpu", load_weights=True)
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(architecture)
        self.projection_dim = int(model.text_projection.shape[1] if getattr(model, "text_projection", None) is not None
                                  else model.visual.output_dim)
        self.name = f"open_clip {architecture} ({spec['weights']})"
        self.device, self.dtype = torch.device(device), dtype

    def preprocessor(self):
        return self._preprocess

    @torch.inference_mode()
    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        count_image_encodings(len(pixels))
        return self.model.encode_image(pixels.to(self.device, dtype=self.dtype, non_blocking=True)).float()

    @torch.inference_mode()
    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float()


def load_filter_clip(clip: str | Path, filter_clip: dict | None = None, *, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> ClipEmbedder:
    """The filter's CLIP: the open_clip model of filter_clip when given, else the CLIPModel folder clip."""
    if filter_clip:
        return OpenClip(filter_clip, device=torch.device(device), dtype=dtype)
    return TransformersClip(clip, device=torch.device(device), dtype=dtype)
