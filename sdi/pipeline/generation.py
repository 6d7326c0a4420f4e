"""Generation (METHOD.md section 5): Stable Diffusion images for sampled embeddings, by shard.

One pipeline is loaded per job and called on batches of samples. Every image has its own
seed: its initial latent is drawn from its own CPU ``torch.Generator`` (the same on CPU and
GPU), and that generator is handed on to the scheduler for any noise it draws later
(DDIM with eta > 0, SDE solvers). Which samples share a batch therefore changes nothing but
floating point summation order: on CPU fp32 the pixels of an image generated in different
batches differ by at most one 8-bit level in a small fraction of pixels. For bit-exact
regeneration the manifest records the batch each image was generated in
(:func:`regenerate_image` reruns that batch).

Each PNG carries its own provenance (the manifest row, as JSON in a ``sdi`` text chunk).
A rerun keeps an existing PNG only if it decodes fully and its provenance matches the
current settings; a missing, truncated or stale image is generated again.

Throughput (bench/bench_generation.py measures it): one pipeline call denoises a whole
batch (``batch_size``, or ``'auto'``: see :func:`auto_batch_size`); on a GPU the models run
in fp16/bf16 with PyTorch SDPA attention and channels_last memory layout, the UNet
optionally under ``torch.compile``; the pipeline decodes the batch with the VAE in one call
and hands back floats, and background threads turn them into 8-bit pixels and PNG files,
so that encoding overlaps the next batch's denoising.

The samples table (one shard of ``samples.parquet``) has a row per image to generate:
``sample_id`` (str), ``label`` (int), ``class_name`` (str), ``sample_index`` (int),
``seed`` (int), ``shard`` (int, optional here) and ``vector`` (float32 list of length
d_cross, the sampled conditioning vector; null for the text-only baseline).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from sdi import NEGATIVE_PROMPT, PROMPT
from sdi.io.artifacts import remove_stale_temps, write_parquet
from sdi.io.faults import kill_point
from sdi.io.schemas import GENERATION_INPUT_COLUMNS, SHARD_COLUMNS, require_columns
from sdi.models.devices import DTYPES, resolve_device, resolve_dtype
from sdi.models.folders import check_sd_folder, check_vae_folder
from sdi.models.schedulers import make_scheduler, scheduler_json
from sdi.pipeline.provenance import (
    _matches,
    _versions,
    image_relpath,
    model_id,
    read_provenance,
    save_png,
    vector_sha256,
)

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
    (:func:`generate_shard`).
    """
    if device.type != "cuda":
        return AUTO_BATCH_CPU
    free, _ = torch.cuda.mem_get_info(device)
    per_image = (AUTO_GIB_PER_IMAGE_512_HALF * 2**30 * (height * width) / 512**2
                 * torch.finfo(dtype).bits / 16)
    return int(max(1, min(AUTO_BATCH_MAX, AUTO_MEMORY_FRACTION * free // per_image)))


def _check_samples(samples: pd.DataFrame, mode: str, d_cross: int | None = None,
                   what: str = "samples table") -> None:
    if mode not in MODES:
        raise GenerationError(f"generation mode {mode!r} must be one of {MODES}")
    need = [*GENERATION_INPUT_COLUMNS, "vector"] if mode == "sei" else list(GENERATION_INPUT_COLUMNS)
    require_columns(samples, need, what, f"it must have {', '.join(need)} (write it with the SEI sampling stage)",
                    GenerationError)
    dup = samples.sample_id[samples.sample_id.duplicated()].tolist()
    if dup:
        raise GenerationError(f"{what}: duplicate sample_id(s) {dup[:5]}; sample ids must be unique")
    bad = [s for s in samples.sample_id if not s or s.startswith(".") or "/" in s or os.sep in s]
    if bad:
        raise GenerationError(f"{what}: sample_id(s) {bad[:5]} cannot be file names (empty, leading '.', or '/')")
    if mode == "sei":
        for sid, vec in zip(samples.sample_id, samples.vector, strict=True):
            if vec is None or (np.ndim(vec) == 0 and pd.isna(vec)):
                raise GenerationError(f"{what}: sample {sid} has no vector; mode 'sei' needs one per sample "
                                      "(use mode 'text' for the text-only baseline)")
            arr = np.asarray(vec, dtype=np.float32)
            if d_cross is not None and arr.shape != (d_cross,):
                raise GenerationError(f"{what}: sample {sid} has a vector of shape {arr.shape}, the UNet needs "
                                      f"({d_cross},) (cross_attention_dim); were the samples made for another model?")
            if not np.isfinite(arr).all():
                raise GenerationError(f"{what}: sample {sid} has a vector with NaN/inf values")


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
    (:meth:`ImageGenerator.from_folders`), batch_size and save_threads (:func:`generate_shard`);
    the batch size only reorders float sums (config.generation's ``x-execution-only`` keys).
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


def _save_array(image: np.ndarray, path: Path, provenance: Mapping) -> Path:
    return save_png(to_pil(image), path, provenance)


def _provenance(row, settings: GenerationSettings, made_by: Mapping, size: int) -> dict:
    """The manifest row of one sample, less path, shard, batch and versions (made_by: ImageGenerator.settings())."""
    mode = settings.mode
    return {
        "sample_id": str(row.sample_id), "label": int(row.label), "class_name": str(row.class_name),
        "sample_index": int(row.sample_index), "seed": int(row.seed), "mode": mode,
        "prompt": PROMPT if mode == "sei" else TEXT_PROMPT.format(class_name=row.class_name),
        "negative_prompt": settings.negative_prompt,
        "vector_sha256": vector_sha256(row.vector) if mode == "sei" else "",
        **made_by, "steps": int(settings.steps), "guidance_scale": float(settings.guidance_scale),
        "eta": float(settings.eta), "height": size, "width": size,
    }


def _existing(paths: list[Path], expected: list[dict]) -> list[dict | None]:
    """Each sample's provenance if its PNG is there, decodes fully and was made as ``expected``, else None."""
    from tqdm import tqdm

    for folder in sorted({p.parent for p in paths}):  # what killed writers left behind
        remove_stale_temps(folder)
    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:  # decoding releases the GIL
        stored = list(tqdm(pool.map(read_provenance, paths), total=len(paths), desc="checking existing images",
                           unit="img", mininterval=2, disable=len(paths) == 0))
    records = [s if _matches(s, e) else None for s, e in zip(stored, expected, strict=True)]
    todo = [i for i, r in enumerate(records) if r is None]
    logger.info("%d samples: %d already generated, %d to generate (%d existing file(s) with other settings)",
                len(paths), len(paths) - len(todo), len(todo), sum(1 for i in todo if stored[i] is not None))
    return records


def _generate_missing(samples: pd.DataFrame, generator: ImageGenerator, settings: GenerationSettings,
                      records: list[dict | None], expected: list[dict], paths: list[Path], batch_size: int,
                      save_threads: int) -> int:
    """Generate every sample whose record is None, fill in its record and save its PNG; returns how many.

    Batches are fixed groups of the shard's samples (positions k*B .. k*B+B-1), whatever was
    generated before: a resumed shard regenerates each group that misses an image as a whole
    (saving only the missing ones), so its pixels and provenance are those of an uninterrupted run.
    A batch that runs out of GPU memory is halved and the groups are formed again.
    """
    from tqdm import tqdm

    versions, pending, generated = _versions(), [], 0
    groups = _batch_groups(len(samples), batch_size, [i for i, r in enumerate(records) if r is None])
    with ThreadPoolExecutor(max(1, save_threads)) as pool, \
            tqdm(total=sum(r is None for r in records), desc=f"generating ({settings.mode})", unit="img",
                 mininterval=2) as bar:
        while groups:
            idx = groups[0]
            batch = samples.iloc[idx]
            try:
                images = generator.generate(batch, settings, output_type="np")
            except torch.OutOfMemoryError:
                if batch_size == 1:
                    raise
                batch_size = max(1, batch_size // 2)
                logger.warning("out of memory with a batch of %d images; continuing with batches of %d "
                               "(set generation.batch_size to avoid the retry)", len(idx), batch_size)
                torch.cuda.empty_cache()
                groups = _batch_groups(len(samples), batch_size, [i for g in groups for i in g if records[i] is None])
                continue
            groups.pop(0)
            ids = batch.sample_id.astype(str).tolist()
            missing = [(i, image) for i, image in zip(idx, images, strict=True) if records[i] is None]
            for i, image in missing:
                records[i] = {**expected[i], "batch": ids, "versions": versions}
                pending.append(pool.submit(_save_array, image, paths[i], records[i]))
            while len(pending) > 2 * batch_size:  # about two batches wait for encoding at most
                pending.pop(0).result()
            bar.update(len(missing))
            generated += len(missing)
            kill_point("mid_shard")
        done, _ = wait(pending)
        for f in done:
            f.result()  # re-raise a failed write
    return generated


def generate_shard(samples: pd.DataFrame, generator: ImageGenerator, out_dir: str | Path,
                   settings: GenerationSettings = GenerationSettings(), *, batch_size: int | str = "auto",
                   save_threads: int = 2) -> pd.DataFrame:
    """Generate the images of one shard of samples; resumable. Returns the shard's manifest.

    samples: rows of samples.parquet (see module docstring). Images are written to
    ``out_dir/images/{label:04d}_{class_name}/{sample_id}.png``. An existing PNG that decodes
    fully and whose embedded provenance matches the generator and settings is kept; every other
    sample is generated.
    batch_size and save_threads say how, not what (see :class:`GenerationSettings`): batch_size
    samples per pipeline call (an int, or ``'auto'``: see :func:`auto_batch_size`; a batch that
    runs out of GPU memory is halved and retried), 8-bit conversion and PNG encoding in
    save_threads background threads.

    The manifest (one row per sample, in the order of samples) has :data:`SHARD_COLUMNS`.
    """
    mode = settings.mode
    _check_samples(samples, mode, generator.d_cross if mode == "sei" else None)
    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise GenerationError(f"generation.batch_size: {batch_size!r} must be an integer >= 1 or 'auto'")
    size = int(settings.resolution or generator.native_resolution)
    out_dir = Path(out_dir)
    samples = samples.reset_index(drop=True)
    if "vector" not in samples.columns:
        samples = samples.assign(vector=None)
    made_by = generator.settings()
    expected = [_provenance(r, settings, made_by, size) for r in samples.itertuples(index=False)]
    paths = [out_dir / image_relpath(r.label, r.class_name, r.sample_id) for r in samples.itertuples(index=False)]
    records = _existing(paths, expected)
    if any(r is None for r in records) and batch_size == "auto":
        batch_size = generator.auto_batch_size(size, size)
        logger.info("batch_size auto: %d on %s", batch_size, generator.device)
    t_start = time.monotonic()
    generated = _generate_missing(samples, generator, settings, records, expected, paths, batch_size, save_threads)
    if generated:
        logger.info("generated %d images in %.1f s (%.2f img/s)", generated, time.monotonic() - t_start,
                    generated / max(time.monotonic() - t_start, 1e-9))
    manifest = pd.DataFrame(records, columns=[c for c in SHARD_COLUMNS if c not in ("path", "shard")])
    manifest.insert(5, "shard", samples["shard"].astype("int64") if "shard" in samples.columns else -1)
    manifest.insert(6, "path", [str(p) for p in paths])
    return manifest[SHARD_COLUMNS]


def _batch_groups(n: int, batch_size: int, todo: list[int]) -> list[list[int]]:
    """The fixed batches (positions k*B .. k*B+B-1 of a shard's n samples) that hold a sample of todo."""
    wanted = {i // batch_size for i in todo}
    return [list(range(k * batch_size, min(n, (k + 1) * batch_size))) for k in sorted(wanted)]


def write_manifest(manifest: pd.DataFrame, path: str | Path) -> None:
    """Write a generation manifest to Parquet atomically, after checking its columns."""
    require_columns(manifest, SHARD_COLUMNS, f"{path}: manifest", "build it with generate_shard", GenerationError)
    write_parquet(manifest[SHARD_COLUMNS], path)


def regenerate_image(manifest_row: Mapping | pd.Series, samples: pd.DataFrame | np.ndarray | None,
                     generator: ImageGenerator, out_path: str | Path, *, exact: bool = True) -> Path:
    """Regenerate one image from its manifest row and write it (PNG with provenance) to out_path.

    samples: the samples table (vectors looked up by sample_id; for exact=True it must hold
        every sample of the row's ``batch``), or for a single image the row's vector itself
        ([d_cross] float32) or None in text mode.
    generator: the models and scheduler the manifest names (same model_id and scheduler):
        ``ImageGenerator.from_folders(sd, vae, scheduler=scheduler_from_json(row["scheduler"],
        row["scheduler_config"]), dtype=row["dtype"])``.
    exact: rerun the whole batch the image was generated in, so that on the same hardware
        and software the bytes are identical; False generates the image alone (pixels may
        differ from the original by float summation order: at most one level, on few pixels).
    """
    row = dict(manifest_row)
    made_by = generator.settings()
    differ = {k: (row[k], made_by[k]) for k in ("model_id", "scheduler") if made_by[k] != row[k]}
    if differ:
        raise GenerationError(f"sample {row['sample_id']} was generated with other models or scheduler than the "
                              f"generator's ((manifest, generator): {differ}); load the generator from the SD/VAE "
                              "folders that generated it, with the manifest row's scheduler")
    if generator.device.type != row["device"]:
        logger.warning("sample %s was generated on %s, regenerating on %s: pixels may differ slightly",
                       row["sample_id"], row["device"], generator.device.type)
    mode = row["mode"]
    members = [str(s) for s in row["batch"]] if exact else [str(row["sample_id"])]
    if isinstance(samples, pd.DataFrame):
        table = samples.set_index("sample_id", drop=False)
        missing = [s for s in members if s not in table.index]
        if missing:
            raise GenerationError(f"samples table lacks {missing[:5]} of the batch of {row['sample_id']}; pass the "
                                  "full samples.parquet, or exact=False to regenerate the image alone")
        batch = table.loc[members].reset_index(drop=True)
    else:
        if len(members) > 1:
            raise GenerationError(f"sample {row['sample_id']} was generated in a batch of {len(members)}; pass the "
                                  "samples table for an exact regeneration, or exact=False")
        batch = pd.DataFrame([{**{c: row[c] for c in GENERATION_INPUT_COLUMNS}, "vector": samples}])
    if "vector" not in batch.columns:
        batch = batch.assign(vector=None)
    _check_samples(batch, mode, generator.d_cross if mode == "sei" else None, what="samples for regeneration")
    target = members.index(str(row["sample_id"]))
    mine = batch.iloc[target]
    if int(mine.seed) != int(row["seed"]) or (mode == "sei" and vector_sha256(mine.vector) != row["vector_sha256"]):
        raise GenerationError(f"sample {row['sample_id']}: seed or vector in the samples table differ from the "
                              "manifest; pass the samples table the manifest was generated from")
    settings = GenerationSettings(mode, steps=int(row["steps"]), guidance_scale=float(row["guidance_scale"]),
                                  resolution=int(row["height"]), negative_prompt=row["negative_prompt"],
                                  eta=float(row["eta"]))
    images = generator.generate(batch, settings)
    provenance = {**_provenance(mine, settings, made_by, settings.resolution), "batch": members,
                  "versions": _versions()}
    return save_png(images[target], out_path, provenance)
