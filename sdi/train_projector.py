"""Train the semantic projector against frozen Stable Diffusion (METHOD.md section 2).

One readable loop in the style of torchvision's reference ``train.py``:

- data: image -> resize (bilinear) -> center crop -> [-1, 1]; its CLIP ``image_embeds``
  (computed once up front: CLIP is frozen and its preprocessing deterministic);
- loss: ``latents = vae.encode(x).latent_dist.sample() * scaling_factor``, ``t ~ U{0..T-1}``,
  DDPM ``add_noise``, ``MSE(unet(noisy, t, cond), noise)`` where ``cond`` is the prompt's
  hidden states with the ``class</w>`` row replaced by ``projector(clip_embeds)``, the
  CLIP embedding being zeroed with probability ``drop_prob`` per sample;
- frozen: VAE, UNet, text encoder, CLIP; trained: the projector only (AdamW);
- ``accelerate`` handles device placement, mixed precision and data parallelism: with several
  visible GPUs (or ``processes`` > 1) :mod:`sdi.distributed` starts one process per GPU, each
  with its own noise stream and its share of every epoch's batches; rank 0 writes the files;
- checkpoints ``out_dir/checkpoint-epoch{N}/`` (projector + ``training_state.pt`` + the loss
  rows so far) are written atomically; a restart resumes from the newest one. The random
  streams of an epoch are derived from (seed, epoch, process), so a resumed run draws
  exactly what an uninterrupted one would;
- the final projector goes to ``out_dir/projector/`` (or ``projector_dir``); the loss of every step to a CSV
  and, through accelerate's trackers, to TensorBoard (``tracking_dir/tensorboard``) and optionally W&B.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from tqdm import tqdm

from sdi import distributed
from sdi.conditioning import prompt_hidden_states, replace_placeholder
from sdi.datasets import load_rgb
from sdi.embeddings import clip_image_embeddings
from sdi.faults import kill_point
from sdi.models import DTYPES, load_clip_vision, load_sd_pipeline, model_dims, resolve_device
from sdi.projector import SemanticProjector
from sdi.tracking import TrackingConfig, accelerate_trackers

logger = logging.getLogger(__name__)

MIXED_PRECISION = {"no": DTYPES["fp32"], "fp16": DTYPES["fp16"], "bf16": DTYPES["bf16"]}
CHECKPOINT_PREFIX = "checkpoint-epoch"
STATE_FILE = "training_state.pt"
LOSS_FILE = "loss.csv"
LOSS_COLUMNS = ["epoch", "step", "loss", "lr"]


def drop_embeddings(embeds: torch.Tensor, drop_prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero each row of [B, d] ``embeds`` independently with probability ``drop_prob`` (out of place).

    ``drop_prob=0`` zeroes nothing and ``drop_prob=1`` everything. ``generator`` must live on
    ``embeds``' device.
    """
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"drop_prob must be in [0, 1], got {drop_prob}")
    keep = torch.rand(embeds.shape[0], generator=generator, device=embeds.device) >= drop_prob
    return embeds * keep.to(embeds.dtype)[:, None]


def image_transform(size: int) -> transforms.Compose:
    """PIL RGB -> [3, size, size] float32 in [-1, 1]: bilinear resize, center crop (METHOD section 2)."""
    return transforms.Compose([
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
    ])


class ProjectorTrainingDataset(Dataset):
    """Items ``{"pixels": [3, S, S] float32 in [-1, 1], "clip_embeds": [d_clip] float32}``."""

    def __init__(self, paths: list[str], clip_embeds: torch.Tensor, image_size: int):
        if len(paths) != len(clip_embeds):
            raise ValueError(f"{len(paths)} images but {len(clip_embeds)} CLIP embeddings")
        self.paths = list(paths)
        self.clip_embeds = clip_embeds
        self.transform = image_transform(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixels": self.transform(load_rgb(self.paths[index])), "clip_embeds": self.clip_embeds[index]}


@dataclass
class FrozenModels:
    """The frozen parts of the training graph, on one device and dtype.

    prompt_hidden: [1, 77, d_cross] hidden states of the method's prompt; position: its
    ``class</w>`` index.
    """

    vae: torch.nn.Module
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    noise_scheduler: object
    prompt_hidden: torch.Tensor
    position: int


def load_frozen_models(sd_path: str | Path, vae_path: str | Path | None = None, *,
                       device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> FrozenModels:
    """VAE, UNet and text encoder (eval, requires_grad False), a DDPMScheduler and the prompt's hidden states."""
    from diffusers import DDPMScheduler

    pipe = load_sd_pipeline(sd_path, vae_path, device=device, dtype=dtype)
    for module in (pipe.vae, pipe.unet, pipe.text_encoder):
        module.eval().requires_grad_(False)
    # The training noise schedule is DDPM with the model's own betas (diffusers' training scripts).
    noise_scheduler = DDPMScheduler.from_pretrained(sd_path, subfolder="scheduler", local_files_only=True)
    if noise_scheduler.config.prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"{sd_path}/scheduler: prediction_type {noise_scheduler.config.prediction_type!r} "
                         "is not supported; expected 'epsilon' (SD v1.5) or 'v_prediction'")
    hidden, position = prompt_hidden_states(pipe.tokenizer, pipe.text_encoder)
    return FrozenModels(pipe.vae, pipe.unet, pipe.text_encoder, noise_scheduler, hidden, position)


def projector_loss(projector: torch.nn.Module, frozen: FrozenModels, pixels: torch.Tensor, clip_embeds: torch.Tensor,
                   *, drop_prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise-prediction MSE of the frozen UNet conditioned through the projector (scalar float32).

    pixels: [B, 3, S, S] in [-1, 1]; clip_embeds: [B, d_clip]. Both on the models' device.
    Random draws, in order: drop mask, VAE posterior sample, noise, timesteps, all from ``generator``.
    """
    vae, unet, scheduler = frozen.vae, frozen.unet, frozen.noise_scheduler
    clip_embeds = drop_embeddings(clip_embeds, drop_prob, generator)
    with torch.no_grad():
        posterior = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
        latents = posterior.sample(generator=generator) * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],),
                              generator=generator, device=latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    cond = replace_placeholder(frozen.prompt_hidden, projector(clip_embeds), frozen.position)
    pred = unet(noisy, timesteps, encoder_hidden_states=cond).sample
    target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise,
                                                                                                 timesteps)
    return F.mse_loss(pred.float(), target.float())


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 32-bit seed for one random stream of one epoch, derived from the run seed."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def find_checkpoint(out_dir: str | Path, max_epoch: int | None = None) -> Path | None:
    """The newest complete ``checkpoint-epoch{N}`` in out_dir (N <= max_epoch), or None."""
    found = []
    for path in Path(out_dir).glob(f"{CHECKPOINT_PREFIX}*"):
        match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", path.name)
        if not match or not path.is_dir():
            continue
        if not all((path / f).is_file() for f in (STATE_FILE, LOSS_FILE, "config.json")):
            logger.warning("ignoring incomplete checkpoint %s", path)
            continue
        epoch = int(match.group(1))
        if max_epoch is None or epoch <= max_epoch:
            found.append((epoch, path))
    return max(found)[1] if found else None


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temp folder to its final name, replacing an older one."""
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
        shutil.rmtree(old)
    os.replace(tmp, final)


def write_loss_csv(rows: list[dict], path: str | Path) -> None:
    """Write the loss rows (epoch, step, loss, lr) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pd.DataFrame(rows, columns=LOSS_COLUMNS).to_csv(tmp, index=False)
    os.replace(tmp, path)


def _checkpoint_projector(checkpoint: Path) -> SemanticProjector:
    """The projector of a checkpoint, as a fresh instance with its weights: ``from_pretrained``
    records the folder it read (``_name_or_path``) in the config, which would make a resumed
    run's saved projector differ from an uninterrupted run's."""
    loaded = SemanticProjector.from_pretrained(checkpoint)
    projector = SemanticProjector.from_config({k: v for k, v in loaded.config.items() if not k.startswith("_")})
    projector.load_state_dict(loaded.state_dict())
    return projector


def save_projector(projector: SemanticProjector, folder: str | Path) -> Path:
    """``save_pretrained`` into a temp folder, then rename: a killed job leaves no half folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    projector.save_pretrained(tmp)
    _replace_dir(tmp, folder)
    return folder


def save_checkpoint(folder: str | Path, projector: SemanticProjector, state: dict, loss_rows: list[dict]) -> Path:
    """Write projector + ``training_state.pt`` + loss rows into folder atomically."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    projector.save_pretrained(tmp)
    torch.save(state, tmp / STATE_FILE)
    write_loss_csv(loss_rows, tmp / LOSS_FILE)
    _replace_dir(tmp, folder)
    return folder


def _fingerprint(manifest: pd.DataFrame) -> str:
    # ids and labels, not paths: a moved dataset folder is still the same training set
    text = "\n".join(f"{i}\t{lab}" for i, lab in zip(manifest.image_id, manifest.label, strict=True))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    projector_dir: Path
    resumed_from: int  # epoch of the checkpoint the run started from (0: from scratch)
    epochs: int
    global_step: int


def train_projector(manifest: pd.DataFrame, sd_path: str | Path, clip_path: str | Path, out_dir: str | Path, *,
                    vae_path: str | Path | None = None, epochs: int = 100, batch_size: int = 16, lr: float = 5e-4,
                    weight_decay: float = 0.01, drop_prob: float = 0.05, image_size: int | None = None,
                    hidden_dim: int = 1024, mixed_precision: str = "no", checkpoint_every: int = 10, seed: int = 0,
                    device: str = "auto", loss_csv: str | Path | None = None, projector_dir: str | Path | None = None,
                    num_workers: int = 0, processes: int | None = None, tracking: TrackingConfig | None = None,
                    tracking_dir: str | Path | None = None, run_name: str | None = None) -> TrainResult:
    """Train a :class:`SemanticProjector` on the manifest's images; resume from out_dir if it has checkpoints.

    Args:
        manifest: one row per training image (image_id, path, label, class_name).
        sd_path, clip_path, vae_path: local model folders (vae_path: VAE other than sd_path/vae).
        out_dir: ``checkpoint-epoch{N}/`` (and by default the final ``projector/``) go here.
        epochs: total epochs; a resumed run continues up to this number.
        batch_size: per process (the published 64 = 16 x 4 GPUs).
        image_size: training resolution; None = the SD model's native one (512 for SD v1.5).
        mixed_precision: 'no', 'fp16' or 'bf16' (accelerate); the frozen models run in that
            dtype, the projector trains in fp32. fp16 falls back to 'no' on the CPU.
        checkpoint_every: write a checkpoint every this many epochs (and after the last one).
        loss_csv: per-step losses (epoch, step, loss, lr); default ``out_dir/loss.csv``.
        projector_dir: where the final projector goes; default ``out_dir/projector``.
        num_workers: DataLoader worker processes for image decoding.
        processes: training processes (data parallel); None = one per visible GPU (1 on the
            CPU), see :func:`sdi.distributed.world_size_for`.
        tracking: TensorBoard / W&B (:class:`sdi.tracking.TrackingConfig`; None: none) of loss and lr per
            step; event files in ``tracking_dir/tensorboard`` (default out_dir). run_name: the W&B run name.
    """
    options = {k: v for k, v in locals().items() if k != "processes"}  # the arguments above, as passed
    world = distributed.world_size_for(device, processes, key="projector.processes")
    if world > 1:
        return distributed.launch(_train_projector, options, world, device=device)
    return _train_projector(**options)


def _train_projector(manifest: pd.DataFrame, sd_path: str | Path, clip_path: str | Path, out_dir: str | Path, *,
                     vae_path: str | Path | None, epochs: int, batch_size: int, lr: float, weight_decay: float,
                     drop_prob: float, image_size: int | None, hidden_dim: int, mixed_precision: str,
                     checkpoint_every: int, seed: int, device: str, loss_csv: str | Path | None,
                     projector_dir: str | Path | None, num_workers: int, tracking: TrackingConfig | None = None,
                     tracking_dir: str | Path | None = None, run_name: str | None = None) -> TrainResult:
    """The body of :func:`train_projector`, in one process or in each of several (accelerate)."""
    from accelerate import Accelerator

    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision {mixed_precision!r} is not one of {sorted(MIXED_PRECISION)}")
    for name, value in {"epochs": epochs, "batch_size": batch_size, "checkpoint_every": checkpoint_every}.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if len(manifest) == 0:
        raise ValueError("manifest has no images; the projector needs the training split")
    out_dir = Path(out_dir)
    loss_csv = Path(loss_csv) if loss_csv else out_dir / "loss.csv"
    dims = model_dims(sd_path, clip_path, vae_path)
    image_size = int(image_size or dims.resolution)
    dev = resolve_device(device)
    if mixed_precision == "fp16" and dev.type == "cpu":
        logger.info("mixed_precision fp16 is not available on the CPU; training in fp32")
        mixed_precision = "no"
    # A JSON round trip gives the checkpoint's settings objects of their own: pickle stores an
    # object shared with the optimizer (lr, weight_decay) as a back-reference, and a resumed
    # run, whose optimizer state was loaded from disk, would pickle the same state differently.
    settings = json.loads(json.dumps({
        "seed": seed, "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size, "drop_prob": drop_prob,
        "image_size": image_size, "hidden_dim": hidden_dim, "d_clip": dims.d_clip, "d_cross": dims.d_cross,
        "images": _fingerprint(manifest)}))

    checkpoint = find_checkpoint(out_dir, max_epoch=epochs)
    state = None
    if checkpoint is not None:
        state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
        changed = {k: (state["settings"].get(k), v) for k, v in settings.items() if state["settings"].get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(f"{checkpoint}: was trained with other settings ({detail}); use another out_dir "
                             f"or delete {out_dir} to start over")
        if distributed.is_main_process():
            logger.info("resuming from %s (epoch %d, step %d)", checkpoint, state["epoch"], state["global_step"])
    # A resumed run drops the events a killed run logged after its checkpoint (accelerate: main process only).
    trackers = [] if tracking is None else accelerate_trackers(
        tracking_dir or out_dir, tracking, run_name=run_name or str(out_dir), config=settings,
        resume_step=None if state is None else state["global_step"] + 1, clear=distributed.is_main_process())
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=dev.type == "cpu", log_with=trackers or None)
    main = accelerator.is_main_process
    final = Path(projector_dir) if projector_dir else out_dir / "projector"
    if main:  # temp folders left by a killed run
        stale = [*out_dir.glob(".tmp-*"), *out_dir.glob(".old-*"),
                 *final.parent.glob(f".tmp-{final.name}-*"), *final.parent.glob(f".old-{final.name}-*")]
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)
    if state is not None and state["epoch"] == epochs:  # already trained: only (re)write the outputs
        if main:
            write_loss_csv(pd.read_csv(checkpoint / LOSS_FILE).to_dict("records"), loss_csv)
            save_projector(_checkpoint_projector(checkpoint), final)
        accelerator.wait_for_everyone()
        return TrainResult(final, epochs, epochs, state["global_step"])

    paths = manifest["path"].tolist()
    clip_model, processor = load_clip_vision(clip_path, device=accelerator.device)
    clip_embeds = clip_image_embeddings(paths, clip_model, processor, batch_size=batch_size, num_workers=num_workers)
    del clip_model
    frozen = load_frozen_models(sd_path, vae_path, device=accelerator.device, dtype=MIXED_PRECISION[mixed_precision])

    if state is not None:
        projector = _checkpoint_projector(checkpoint)
    else:
        torch.manual_seed(seed)
        projector = SemanticProjector(dims.d_clip, dims.d_cross, hidden_dim)
    projector.train()
    optimizer = torch.optim.AdamW(projector.parameters(), lr=lr, weight_decay=weight_decay)
    data_generator = torch.Generator()
    loader = DataLoader(ProjectorTrainingDataset(paths, clip_embeds, image_size), batch_size=batch_size,
                        shuffle=True, generator=data_generator, num_workers=num_workers, drop_last=False)
    projector, optimizer, loader = accelerator.prepare(projector, optimizer, loader)
    noise_generator = torch.Generator(accelerator.device)

    start_epoch, global_step, loss_rows = 0, 0, []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, global_step = state["epoch"], state["global_step"]
        loss_rows = pd.read_csv(checkpoint / LOSS_FILE).to_dict("records")
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available() and state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    if main:
        write_loss_csv(loss_rows, loss_csv)

    steps_per_epoch = len(loader)
    if main:
        logger.info("training the projector: %d images, %d epochs x %d steps, batch %d x %d process(es), "
                    "image size %d, mixed precision %s, device %s", len(paths), epochs, steps_per_epoch, batch_size,
                    accelerator.num_processes, image_size, mixed_precision, accelerator.device)
    accelerator.init_trackers("sdi")  # the trackers were made above; accelerate starts them on the main process
    progress = tqdm(total=epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, desc="projector",
                    unit="step", disable=not main, mininterval=2)
    t_train, images_trained = time.monotonic(), 0
    for epoch in range(start_epoch + 1, epochs + 1):
        # Every random stream restarts from (seed, epoch): resuming draws what a full run draws.
        data_generator.manual_seed(epoch_seed(seed, epoch))
        noise_generator.manual_seed(epoch_seed(seed, epoch, 1 + accelerator.process_index))
        projector.train()
        epoch_losses, seen = [], 0
        for batch in loader:
            seen += len(batch["pixels"])
            with accelerator.autocast():
                loss = projector_loss(projector, frozen, batch["pixels"], batch["clip_embeds"],
                                      drop_prob=drop_prob, generator=noise_generator)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            value = accelerator.reduce(loss.detach(), reduction="mean").item()
            epoch_losses.append(value)
            loss_rows.append({"epoch": epoch, "step": global_step, "loss": value,
                              "lr": optimizer.param_groups[0]["lr"]})
            accelerator.log({"loss": value, "lr": optimizer.param_groups[0]["lr"]}, step=global_step)
            progress.update(1)
            progress.set_postfix(epoch=epoch, loss=f"{value:.4f}", refresh=False)
        if accelerator.num_processes > 1:
            logger.info("epoch %d/%d: %d images on this process", epoch, epochs, seen)
        images_trained += seen * accelerator.num_processes
        accelerator.log({"epoch_loss": float(np.mean(epoch_losses))}, step=global_step)
        if main:
            logger.info("epoch %d/%d: mean loss %.5f", epoch, epochs, float(np.mean(epoch_losses)))
            write_loss_csv(loss_rows, loss_csv)
            if epoch % checkpoint_every == 0 or epoch == epochs:
                rng = {"torch": torch.get_rng_state(),
                       "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
                save_checkpoint(out_dir / f"{CHECKPOINT_PREFIX}{epoch}", accelerator.unwrap_model(projector),
                                {"epoch": epoch, "global_step": global_step, "optimizer": optimizer.state_dict(),
                                 "rng": rng, "settings": settings}, loss_rows)
                kill_point("projector_checkpoint")
        accelerator.wait_for_everyone()
    progress.close()

    if main:
        save_projector(accelerator.unwrap_model(projector), final)
        elapsed = time.monotonic() - t_train
        logger.info("projector done: %d epochs, %d steps, %.1f images/s this run, last epoch mean loss %s -> %s",
                    epochs, global_step, images_trained / max(elapsed, 1e-9),
                    f"{np.mean(epoch_losses):.5f}" if start_epoch < epochs else "n/a", final)
    accelerator.wait_for_everyone()
    for tracker in accelerator.trackers:  # what end_training does, less ending the process group,
        tracker.finish()  # which belongs to sdi.distributed's launcher
    return TrainResult(final, start_epoch, epochs, global_step)
