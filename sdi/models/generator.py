"""The Stable Diffusion image generator (docs/method.md section 5): one loaded pipeline, called per batch.

:class:`ImageGenerator` wraps a diffusers ``StableDiffusionPipeline`` with the method's
conditioning (the prompt's ``class</w>`` hidden state replaced by a sampled vector, or the
text-only baseline's prompt). Every image has its own seed: its initial latent is drawn from
its own CPU ``torch.Generator`` (the same on CPU and GPU), and that generator is handed on to
the scheduler for any noise it draws later (DDIM with eta > 0, SDE solvers). Which samples
share a batch therefore changes nothing but floating point summation order: on CPU fp32 the
pixels of an image generated in different batches differ by at most one 8-bit level in a
small fraction of pixels.

Throughput (bench/bench_generation.py measures it): one pipeline call denoises a whole
batch (``batch_size``, or ``'auto'``: see :func:`auto_batch_size`); on a GPU the models run
in fp16/bf16 with PyTorch SDPA attention and channels_last memory layout, the UNet
optionally under ``torch.compile`` (:func:`optimize_pipeline`); the pipeline decodes the
batch with the VAE in one call and can hand back floats (:func:`to_pil` turns them into
8-bit pixels off the critical path).

:mod:`sdi.pipeline.generation` runs the generator over a shard of samples (provenance,
resume, PNG writing); :mod:`sdi.pipeline.regenerate` regenerates one image of a manifest.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from sdi import NEGATIVE_PROMPT, PROMPT
from sdi.io.faults import kill_point
from sdi.models.devices import DTYPES, resolve_device, resolve_dtype
from sdi.models.folders import check_sd_folder, check_vae_folder
from sdi.models.schedulers import make_scheduler, scheduler_json

logger = logging.getLogger(__name__)


MODES = ("sei", "text")
TEXT_PROMPT = "a photo of a {class_name}"  # the text-only baseline ("SD" row of the paper)


# batch_size 'auto': memory per image of one pipeline call, SD v1.5 at 512x512 with classifier-free
# guidance (the UNet runs on 2 samples per image; the VAE decode of the whole batch is the peak).
# Measured on the CPU in fp32 (bench/memory_per_stage.py; README "Memory per stage"): the peak RSS
# of generate_shard grows by 0.75 GiB per image from batch 8 (11.2 GiB) to 16 (17.2 GiB).
AUTO_CPU_GIB_PER_IMAGE_512_FP32 = 0.75


# On a GPU in fp16/bf16 the same tensors take half the bytes (0.37 GiB), times AUTO_GPU_MARGIN for
# what a CPU run cannot show (the CUDA caching allocator's rounding and fragmentation, cuDNN
# workspaces): 0.6 GiB. An estimate, not a GPU measurement; the architecture gives about the same
# (the VAE decoder's last up blocks hold some four 256-channel 512x512 tensors at once: 0.5 GiB in
# fp16). Scaled by pixel count and dtype size for other settings; AUTO_MEMORY_FRACTION of the free
# memory (after loading the models) is used, the rest is headroom.
AUTO_GPU_MARGIN = 1.6
AUTO_GIB_PER_IMAGE_512_HALF = AUTO_CPU_GIB_PER_IMAGE_512_FP32 / 2 * AUTO_GPU_MARGIN
AUTO_MEMORY_FRACTION = 0.8
AUTO_BATCH_MAX = 32  # SD v1.5 at 512x512 saturates a large GPU well below this
AUTO_BATCH_CPU = 16  # CPU: a fixed batch (the per-call overhead is amortised by then)
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


class GenerationError(ValueError):
    """Samples, settings or a manifest row cannot be used for generation."""


def optimize_pipeline(pipe, *, compile_unet: bool = False):
    """Set up a loaded StableDiffusionPipeline for throughput; returns it.

    PyTorch's fused scaled-dot-product attention (``AttnProcessor2_0``) in UNet and VAE
    (diffusers' default on recent PyTorch; set explicitly so it cannot silently fall back);
    channels_last memory layout for UNet and VAE on CUDA (faster convolutions in half
    precision) and for bf16 on the CPU (oneDNN's bf16 convolutions need it: 9x faster than
    the contiguous layout, measured on an AVX2 CPU without native bf16); with compile_unet
    the UNet is compiled in place with ``torch.compile``
    (first batch of each new batch size slower; then faster on a GPU).
    None of this changes what is computed, only how (up to float rounding on CUDA).
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    if pipe.device.type == "cuda" or pipe.unet.dtype == torch.bfloat16:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if compile_unet:
        pipe.unet.compile()  # nn.Module.compile: in place, so pipe.unet.config etc. stay as they are
    return pipe


def auto_batch_size(device: torch.device, dtype: torch.dtype, height: int, width: int) -> int:
    """Batch size for ``batch_size: auto``, to call once the models are on the device.

    CUDA: AUTO_MEMORY_FRACTION of the free memory (``torch.cuda.mem_get_info``) divided by
    the per-image estimate AUTO_GIB_PER_IMAGE_512_HALF x (height*width / 512^2) x (dtype
    bytes / 2), between 1 and AUTO_BATCH_MAX. E.g. at 512x512 in fp16 with SD v1.5 loaded: an
    80 GB H100 (~75 GiB free): 100 -> 32; a 24 GB GPU (~20 GiB free): 26; a 12 GB GPU: 12
    (estimates, see AUTO_GIB_PER_IMAGE_512_HALF). CPU and other devices:
    AUTO_BATCH_CPU. A batch that still runs out of memory is halved and retried
    (:func:`sdi.pipeline.generation.generate_shard`).
    """
    if device.type != "cuda":
        return AUTO_BATCH_CPU
    free, _ = torch.cuda.mem_get_info(device)
    per_image = (AUTO_GIB_PER_IMAGE_512_HALF * 2**30 * (height * width) / 512**2
                 * torch.finfo(dtype).bits / 16)
    return int(max(1, min(AUTO_BATCH_MAX, AUTO_MEMORY_FRACTION * free // per_image)))


def _weights_fingerprint(folder: Path, hasher, chunk: int = 1 << 20) -> None:
    # Fine-tunes of SD share its configs exactly; the first and last MiB of each weight file
    # tell them apart without reading gigabytes.
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name.endswith((".safetensors", ".bin")):
            size = f.stat().st_size
            hasher.update(f"{f.name}:{size}".encode())
            with open(f, "rb") as fh:
                hasher.update(fh.read(chunk))
                if size > chunk:
                    fh.seek(max(chunk, size - chunk))
                    hasher.update(fh.read(chunk))


def model_id(sd_path: str | Path, vae_path: str | Path | None = None) -> str:
    """Short hash (16 hex) identifying the models: configs plus a fingerprint of the weights.

    Covers ``model_index.json``, the ``config.json`` of unet/, vae/ and text_encoder/, the
    separate VAE folder's config when given, and for each of those folders the weight file
    names, sizes, first and last MiB. Folder paths are not part of it.
    """
    sd = check_sd_folder(sd_path)
    hasher = hashlib.sha256()
    hasher.update((sd / "model_index.json").read_bytes())
    folders = [sd / "unet", sd / "vae", sd / "text_encoder"]
    if vae_path:
        folders.append(check_vae_folder(vae_path))
    for folder in folders:
        hasher.update((folder / "config.json").read_bytes())
        _weights_fingerprint(folder, hasher)
    return hasher.hexdigest()[:16]


@dataclass(frozen=True)
class GenerationSettings:
    """What an image depends on besides its sample and the generator's models, scheduler and dtype.

    mode: 'sei' (default: the method prompt, its ``class</w>`` token replaced by the sample's
        vector) or 'text' (the text-only baseline, ``"a photo of a {class_name}"``).
    steps: denoising steps (default 50). guidance_scale: classifier-free guidance (default 2.0).
    resolution: image height and width in pixels, a multiple of 8; None (default): the UNet's
        native size (512 for SD v1.5).
    negative_prompt: default :data:`sdi.NEGATIVE_PROMPT`. eta: DDIM eta (default 0.0, no noise).

    How a shard is run is not in here and changes no image: device and compile
    (:meth:`ImageGenerator.from_folders`), batch_size and save_threads
    (:func:`sdi.pipeline.generation.generate_shard`); the batch size only reorders float sums
    (config.generation's ``x-execution-only`` keys).
    """

    mode: str = "sei"
    steps: int = 50
    guidance_scale: float = 2.0
    resolution: int | None = None
    negative_prompt: str = NEGATIVE_PROMPT
    eta: float = 0.0


class ImageGenerator:
    """Stable Diffusion with the method's conditioning: one loaded pipeline, called per batch.

    pipe: a ``StableDiffusionPipeline`` (its components: unet, vae, text_encoder, tokenizer and
        scheduler), already on its device and in its dtype, e.g. from :func:`sdi.models.loaders.load_sd_pipeline`
        and :func:`optimize_pipeline`; the generator runs on ``pipe.device`` in ``pipe.unet.dtype``.
    model_id: what the weights are (:func:`model_id` of their folders), recorded in every image's
        provenance.

    :meth:`from_folders` loads all of it from local model folders.
    """

    def __init__(self, pipe, *, model_id: str):
        self.pipe = pipe
        self.model_id = model_id
        self.device = pipe.device
        self.dtype = pipe.unet.dtype
        self._method_prompt = None
        self._prompt_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_folders(cls, sd_path: str | Path, vae_path: str | Path | None = None, *, scheduler="ddim",
                     dtype: str = "fp16", device: str = "auto", compile: bool = False) -> ImageGenerator:
        """Load the generator from a local SD v1.5 folder (diffusers layout) and an optional separate VAE folder.

        scheduler: 'ddim', a diffusers scheduler class name (see :func:`make_scheduler`) or an
            instantiated scheduler. dtype: 'fp16' / 'bf16' / 'fp32' (on CPU fp16 runs as fp32, which
            CPUs compute faster; bf16 stays bf16).
        device: 'auto' (cuda when present, else cpu) or a torch device name.
        compile: compile the UNet with ``torch.compile`` (see :func:`optimize_pipeline`).
        """
        from sdi.models.loaders import load_sd_pipeline

        sd = check_sd_folder(sd_path)
        vae = check_vae_folder(vae_path) if vae_path else None
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)  # fp16 -> fp32 on CPU; bf16 runs as bf16 there
        if isinstance(scheduler, str):
            scheduler = make_scheduler(scheduler, sd)
        models = model_id(sd, vae)
        kill_point("model_loading")
        logger.info("loading %s (vae %s) on %s as %s with %s%s", sd, vae, device, DTYPE_NAMES[dtype],
                    type(scheduler).__name__, ", compiled UNet" if compile else "")
        pipe = load_sd_pipeline(sd, vae, device=device, dtype=dtype, scheduler=scheduler)
        return cls(optimize_pipeline(pipe, compile_unet=compile), model_id=models)

    def auto_batch_size(self, height: int | None = None, width: int | None = None) -> int:
        """:func:`auto_batch_size` for this generator."""
        return auto_batch_size(self.device, self.dtype, int(height or self.native_resolution),
                               int(width or self.native_resolution))

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES[self.dtype]

    @property
    def native_resolution(self) -> int:
        """Image size the UNet was trained at: its sample_size x the VAE scale factor (512 for SD v1.5)."""
        return int(self.pipe.unet.config.sample_size) * self.pipe.vae_scale_factor

    @property
    def d_cross(self) -> int:
        cross = self.pipe.unet.config.cross_attention_dim
        return int(cross[0] if isinstance(cross, list | tuple) else cross)

    def settings(self) -> dict:
        """Provenance fields that depend on the generator, not on the sample."""
        scheduler = self.pipe.scheduler
        return {"scheduler": type(scheduler).__name__, "scheduler_config": scheduler_json(scheduler),
                "dtype": self.dtype_name, "device": self.device.type, "model_id": self.model_id}

    @torch.no_grad()
    def text_embeds(self, prompt: str) -> torch.Tensor:
        """[1, 77, d] text encoder hidden states of a plain prompt (the pipeline's own encoding)."""
        if prompt not in self._prompt_cache:
            embeds, _ = self.pipe.encode_prompt(prompt, self.device, 1, False)
            self._prompt_cache[prompt] = embeds
        return self._prompt_cache[prompt]

    @torch.no_grad()
    def prompt_embeds(self, samples: pd.DataFrame, mode: str) -> torch.Tensor:
        """[B, 77, d_cross] conditioning for the rows of samples, in the pipeline's dtype.

        'sei': the method prompt with its ``class</w>`` hidden state replaced by each row's vector.
        'text': the hidden states of ``"a photo of a {class_name}"``.
        """
        if mode == "text":
            return torch.cat([self.text_embeds(TEXT_PROMPT.format(class_name=c)) for c in samples.class_name])
        from sdi.models.conditioning import prompt_hidden_states, replace_placeholder

        if self._method_prompt is None:
            self._method_prompt = prompt_hidden_states(self.pipe.tokenizer, self.pipe.text_encoder, PROMPT)
        hidden, position = self._method_prompt
        vectors = torch.from_numpy(np.stack([np.asarray(v, dtype=np.float32) for v in samples.vector]))
        return replace_placeholder(hidden, vectors.to(hidden.device, hidden.dtype), position)

    def initial_latents(self, seeds, height: int, width: int) -> tuple[torch.Tensor, list[torch.Generator]]:
        """[B, C, height/8, width/8] unit-normal latents, each from its own seeded CPU generator.

        Returns the latents (pipeline device and dtype) and the generators, advanced past the
        latent draw, for the scheduler's later noise. Device-independent: drawn on the CPU in fp32.
        """
        from diffusers.utils.torch_utils import randn_tensor

        channels = self.pipe.unet.config.in_channels
        scale = self.pipe.vae_scale_factor
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        latents = torch.cat([randn_tensor((1, channels, height // scale, width // scale), generator=g,
                                          device=torch.device("cpu"), dtype=torch.float32) for g in generators])
        return latents.to(self.device, self.dtype), generators

    def generate(self, samples: pd.DataFrame, settings: GenerationSettings = GenerationSettings(),
                 output_type: str = "pil") -> list[Image.Image] | np.ndarray:
        """One pipeline call for all rows of samples (columns seed, class_name, and vector for 'sei').

        Returns one RGB PIL image (size x size, size = settings.resolution or the native one) per
        row, in order; with output_type ``'np'`` a float32 array [B, size, size, 3] in [0, 1]
        instead (:func:`to_pil` turns a row into the same PIL image, off the critical path).
        """
        size = int(settings.resolution or self.native_resolution)
        scale = self.pipe.vae_scale_factor
        if size % scale:
            raise GenerationError(f"generation.resolution: {size}x{size} is not a multiple of {scale}")
        embeds = self.prompt_embeds(samples, settings.mode)
        negative = self.text_embeds(settings.negative_prompt).expand(len(samples), -1, -1)
        latents, generators = self.initial_latents(samples.seed, size, size)
        with torch.inference_mode():
            return self.pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, latents=latents,
                             generator=generators, num_inference_steps=int(settings.steps),
                             guidance_scale=float(settings.guidance_scale), eta=float(settings.eta), height=size,
                             width=size, output_type=output_type).images


def to_pil(image: np.ndarray) -> Image.Image:
    """[H, W, 3] float image in [0, 1] -> 8-bit RGB PIL image, exactly as the pipeline's 'pil' output."""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor.numpy_to_pil(image[None])[0]
