"""Train the semantic projector against frozen Stable Diffusion (docs/method.md section 2).

One readable loop in the style of torchvision's reference ``train.py``:

- data: image -> resize (bilinear) -> center crop -> [-1, 1]; its CLIP ``image_embeds``
  (computed once up front: CLIP is frozen and its preprocessing deterministic); the dataset and
  loader are in :mod:`sdi.training.data`, next to the classifier's;
- loss: ``latents = vae.encode(x).latent_dist.sample() * scaling_factor``, ``t ~ U{0..T-1}``,
  DDPM ``add_noise``, ``MSE(unet(noisy, t, cond), noise)`` where ``cond`` is the prompt's
  hidden states with the ``class</w>`` row replaced by ``projector(clip_embeds)``, the
  CLIP embedding being zeroed with probability ``drop_prob`` per sample;
- frozen: VAE, UNet, text encoder, CLIP; trained: the projector only (AdamW);
- plain PyTorch: autocast for mixed precision (a gradient scaler for fp16); under torchrun
  (:mod:`sdi.training.distributed`; the workflow starts one process per visible GPU) the projector is
  wrapped in DistributedDataParallel, each process with its own noise stream and its share of
  every epoch's images; rank 0 writes the files;
- checkpoints ``out_dir/checkpoint-epoch{N}/`` (:class:`ProjectorState`: the projector's
  ``save_pretrained`` folder, ``optimizer.safetensors``, ``state.json``, the loss rows so far)
  are written atomically; a restart resumes from the newest one. The random streams of an
  epoch are derived from (seed, epoch, process), so a resumed run draws exactly what an
  uninterrupted one would;
- the final projector goes to ``out_dir/projector/`` (or ``projector_dir``); the loss of every step to
  a CSV and to TensorBoard (``tracking_dir/tensorboard``) and optionally W&B (:class:`sdi.training.tracking.Tracker`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from sdi.config.tracking import TrackingConfig
from sdi.io.artifacts import atomic_dir, atomic_write
from sdi.io.faults import kill_point
from sdi.models.conditioning import prompt_hidden_states, replace_placeholder
from sdi.models.devices import DTYPES
from sdi.models.folders import model_dims
from sdi.models.loaders import load_clip_vision, load_sd_pipeline
from sdi.models.projector import SemanticProjector
from sdi.pipeline.embeddings import clip_image_embeddings
from sdi.training import checkpoints, distributed
from sdi.training.data import ProjectorTrainingDataset, build_projector_loader
from sdi.training.tracking import Tracker

logger = logging.getLogger(__name__)

MIXED_PRECISION = {"no": DTYPES["fp32"], "fp16": DTYPES["fp16"], "bf16": DTYPES["bf16"]}
CHECKPOINT_PREFIX = "checkpoint-epoch"
STATE_FILE = checkpoints.STATE_FILE
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


def find_checkpoints(out_dir: str | Path, max_epoch: int | None = None) -> list[Path]:
    """The complete ``checkpoint-epoch{N}`` folders in out_dir (N <= max_epoch), newest first."""
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
    return [path for _, path in sorted(found, reverse=True)]


def write_loss_csv(rows: list[dict], path: str | Path) -> None:
    """Write the loss rows (epoch, step, loss, lr) atomically."""
    atomic_write(path, lambda tmp: pd.DataFrame(rows, columns=LOSS_COLUMNS).to_csv(tmp, index=False))


def _checkpoint_projector(checkpoint: Path) -> SemanticProjector:
    """The projector of a checkpoint, as a fresh instance with its weights: ``from_pretrained``
    records the folder it read (``_name_or_path``) in the config, which would make a resumed
    run's saved projector differ from an uninterrupted run's."""
    loaded = SemanticProjector.from_pretrained(checkpoint)
    projector = SemanticProjector.from_config({k: v for k, v in loaded.config.items() if not k.startswith("_")})
    projector.load_state_dict(loaded.state_dict())
    return projector


def save_projector(projector: SemanticProjector, folder: str | Path) -> Path:
    """``save_pretrained`` into a folder written atomically."""
    with atomic_dir(folder) as tmp:
        projector.save_pretrained(tmp)
    return Path(folder)


def _fingerprint(manifest: pd.DataFrame) -> str:
    # ids and labels, not paths: a moved dataset folder is still the same training set
    text = "\n".join(f"{i}\t{lab}" for i, lab in zip(manifest.image_id, manifest.label, strict=True))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class ProjectorState:
    """Where a run stands after ``epoch``: saved with the projector as ``checkpoint-epoch{N}/``
    (``save_pretrained``, ``optimizer.safetensors``, ``state.json`` with these fields, the
    optimizer's other state and the random streams, and ``loss.csv``: every step so far).
    ``settings`` are what a checkpoint must agree on to be resumed."""

    settings: dict
    epoch: int = 0
    global_step: int = 0
    loss_rows: list[dict] = field(default_factory=list)
    rng: dict | None = None

    def save(self, folder: Path, projector: SemanticProjector, optimizer: torch.optim.Optimizer) -> None:
        with atomic_dir(folder) as tmp:
            projector.save_pretrained(tmp)
            checkpoints.save_state(tmp, {"settings": self.settings, "epoch": self.epoch,
                                         "global_step": self.global_step, "rng": self.rng}, optimizer)
            write_loss_csv(self.loss_rows, tmp / LOSS_FILE)

    @classmethod
    def load(cls, folder: Path, optimizer: torch.optim.Optimizer) -> ProjectorState:
        state = checkpoints.load_state(folder, optimizer)
        return cls(loss_rows=pd.read_csv(folder / LOSS_FILE).to_dict("records"), **state)


def resume(out_dir: Path, settings: dict, epochs: int) -> Path | None:
    """The checkpoint to resume from: the newest of ``out_dir`` up to ``epochs`` that was trained with these
    ``settings`` (:func:`sdi.training.checkpoints.resumable`: others are left out with a warning), or None."""
    for checkpoint in find_checkpoints(out_dir, max_epoch=epochs):
        if checkpoints.resumable(checkpoint, "settings", settings, warn=distributed.is_main_process()):
            return checkpoint
    return None


def train_one_epoch(projector: torch.nn.Module, frozen: FrozenModels, loader: DataLoader,
                    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, state: ProjectorState, *,
                    drop_prob: float, generator: torch.Generator, autocast_dtype: torch.dtype | None,
                    tracker: Tracker, progress: tqdm) -> int:
    """One pass over ``loader``; appends each step's loss (mean over the processes) to ``state``.
    Returns the images this process saw."""
    projector.train()
    device, seen = frozen.prompt_hidden.device, 0
    for batch in loader:
        pixels, clip_embeds = batch["pixels"].to(device), batch["clip_embeds"].to(device)
        seen += len(pixels)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = projector_loss(projector, frozen, pixels, clip_embeds, drop_prob=drop_prob, generator=generator)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        state.global_step += 1
        value = distributed.all_reduce_sum([loss.item()])[0] / distributed.world_size()
        lr = optimizer.param_groups[0]["lr"]
        state.loss_rows.append({"epoch": state.epoch + 1, "step": state.global_step, "loss": value, "lr": lr})
        tracker.scalars({"loss": value, "lr": lr}, state.global_step)
        progress.update(1)
        progress.set_postfix(loss=f"{value:.4f}", refresh=False)
    return seen


@dataclass
class TrainResult:
    projector_dir: Path
    resumed_from: int  # epoch of the checkpoint the run started from (0: from scratch)
    epochs: int
    global_step: int


@dataclass
class ProjectorRun:
    """One training run's parts (:func:`setup_run`): the loader and the two random streams it
    reseeds per epoch, the frozen SD parts, the projector (DDP-wrapped under several processes;
    ``bare`` the module itself), AdamW, the gradient scaler and the autocast dtype."""

    loader: DataLoader
    data_generator: torch.Generator
    noise_generator: torch.Generator
    frozen: FrozenModels
    projector: torch.nn.Module
    bare: SemanticProjector
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    drop_prob: float


def _check_arguments(manifest: pd.DataFrame, mixed_precision: str, **counts: int) -> None:
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision {mixed_precision!r} is not one of {sorted(MIXED_PRECISION)}")
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if len(manifest) == 0:
        raise ValueError("manifest has no images; the projector needs the training split")


def _available_precision(mixed_precision: str, dev: torch.device) -> str:
    if mixed_precision == "fp16" and dev.type == "cpu":
        logger.info("mixed_precision fp16 is not available on the CPU; training in fp32")
        return "no"
    return mixed_precision


def setup_run(paths: list[str], settings: dict, checkpoint: Path | None, *, sd_path, clip_path, vae_path, dev,
              mixed_precision: str, num_workers: int) -> ProjectorRun:
    """Data (images and their CLIP embeddings: CLIP is frozen and its preprocessing deterministic), the
    frozen SD parts, and the projector (from ``checkpoint``, or initialised from ``settings['seed']``)."""
    seed, batch_size = settings["seed"], settings["batch_size"]
    clip_model, processor = load_clip_vision(clip_path, device=dev)
    clip_embeds = clip_image_embeddings(paths, clip_model, processor, batch_size=batch_size, num_workers=num_workers)
    del clip_model
    data_generator = torch.Generator()
    loader = build_projector_loader(ProjectorTrainingDataset(paths, clip_embeds, settings["image_size"]), batch_size,
                                    seed, data_generator, num_workers)
    frozen = load_frozen_models(sd_path, vae_path, device=dev, dtype=MIXED_PRECISION[mixed_precision])
    if checkpoint is not None:
        bare = _checkpoint_projector(checkpoint)
    else:
        checkpoints.seed_everything(seed)
        bare = SemanticProjector(settings["d_clip"], settings["d_cross"], settings["hidden_dim"])
    bare = bare.to(dev)
    projector = bare
    if distributed.world_size() > 1:
        projector = DistributedDataParallel(bare, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    return ProjectorRun(loader, data_generator, torch.Generator(dev), frozen, projector, bare, optimizer,
                        torch.amp.GradScaler(dev.type, enabled=mixed_precision == "fp16"),
                        None if mixed_precision == "no" else MIXED_PRECISION[mixed_precision], settings["drop_prob"])


def _start_state(checkpoint: Path | None, settings: dict, optimizer: torch.optim.Optimizer) -> ProjectorState:
    """A fresh state, or the checkpoint's: its optimizer state loaded, its random streams restored."""
    if checkpoint is None:
        return ProjectorState(settings)
    state = ProjectorState.load(checkpoint, optimizer)
    checkpoints.set_rng_state(state.rng)
    if distributed.is_main_process():
        logger.info("resuming from %s (epoch %d, step %d)", checkpoint, state.epoch, state.global_step)
    return state


def run_epoch(run: ProjectorRun, state: ProjectorState, epoch: int, epochs: int, tracker: Tracker,
              progress: tqdm) -> tuple[int, float]:
    """Train one epoch: (images this process saw, the epoch's mean loss). Every random stream restarts
    from (seed, epoch), so resuming draws what a full run draws."""
    seed, world = state.settings["seed"], distributed.world_size()
    run.data_generator.manual_seed(checkpoints.epoch_seed(seed, epoch, 0))
    run.noise_generator.manual_seed(checkpoints.epoch_seed(seed, epoch, 1 + distributed.rank()))
    if world > 1:
        run.loader.sampler.set_epoch(epoch)
    first_step = len(state.loss_rows)
    seen = train_one_epoch(run.projector, run.frozen, run.loader, run.optimizer, run.scaler, state,
                           drop_prob=run.drop_prob, generator=run.noise_generator, autocast_dtype=run.autocast_dtype,
                           tracker=tracker, progress=progress)
    state.epoch = epoch
    if world > 1:
        logger.info("epoch %d/%d: %d images on this process", epoch, epochs, seen)
    epoch_loss = float(np.mean([row["loss"] for row in state.loss_rows[first_step:]]))
    tracker.scalars({"epoch_loss": epoch_loss}, state.global_step)
    return seen, epoch_loss


def train_epochs(run: ProjectorRun, state: ProjectorState, epochs: int, *, out_dir: Path, loss_csv: Path,
                 checkpoint_every: int, tracker: Tracker) -> tuple[float, float]:
    """Epochs state.epoch + 1 .. epochs, the main process writing loss.csv after each and a checkpoint every
    ``checkpoint_every`` (and after the last): (images per second of this call, the last epoch's mean loss)."""
    main, world, steps = distributed.is_main_process(), distributed.world_size(), len(run.loader)
    progress = tqdm(total=epochs * steps, initial=state.epoch * steps, desc="projector", unit="step",
                    disable=not main, mininterval=2)
    t_train, images_trained, epoch_loss = time.monotonic(), 0, float("nan")
    for epoch in range(state.epoch + 1, epochs + 1):
        seen, epoch_loss = run_epoch(run, state, epoch, epochs, tracker, progress)
        images_trained += seen * world
        if main:
            logger.info("epoch %d/%d: mean loss %.5f", epoch, epochs, epoch_loss)
            write_loss_csv(state.loss_rows, loss_csv)
            if epoch % checkpoint_every == 0 or epoch == epochs:
                state.rng = checkpoints.rng_state()
                state.save(out_dir / f"{CHECKPOINT_PREFIX}{epoch}", run.bare, run.optimizer)
                kill_point("projector_checkpoint")
        distributed.barrier()
    progress.close()
    return images_trained / max(time.monotonic() - t_train, 1e-9), epoch_loss


def _finished(checkpoint: Path, loss_csv: Path, final: Path, epochs: int) -> TrainResult:
    """A run already trained to ``epochs``: only (re)write its outputs."""
    if distributed.is_main_process():
        write_loss_csv(pd.read_csv(checkpoint / LOSS_FILE).to_dict("records"), loss_csv)
        save_projector(_checkpoint_projector(checkpoint), final)
    distributed.barrier()
    return TrainResult(final, epochs, epochs, checkpoints.read_state(checkpoint)["global_step"])


def train_projector(manifest: pd.DataFrame, sd_path: str | Path, clip_path: str | Path, out_dir: str | Path, *,
                    vae_path: str | Path | None = None, epochs: int = 100, batch_size: int = 16, lr: float = 5e-4,
                    weight_decay: float = 0.01, drop_prob: float = 0.05, image_size: int | None = None,
                    hidden_dim: int = 1024, mixed_precision: str = "no", checkpoint_every: int = 10, seed: int = 0,
                    device: str = "auto", loss_csv: str | Path | None = None, projector_dir: str | Path | None = None,
                    num_workers: int = 0, tracking: TrackingConfig | None = None,
                    tracking_dir: str | Path | None = None, run_name: str | None = None) -> TrainResult:
    """Train a :class:`SemanticProjector` on the manifest's images; resume from out_dir if it has checkpoints.

    Runs in this process, or in each process of a torchrun job (:mod:`sdi.training.distributed`; the
    workflow starts those with :func:`sdi.training.distributed.launch` and :func:`run_job`).

    manifest: one row per training image (image_id, path, label, class_name). sd_path, clip_path,
    vae_path: local model folders (vae_path: a VAE other than sd_path/vae). out_dir: ``checkpoint-epoch{N}/``
    (and by default the final ``projector/``). epochs: total; a resumed run continues up to it.
    batch_size: per process (the published 64 = 16 x 4 GPUs). image_size: None = the SD model's own.
    mixed_precision: 'no', 'fp16' or 'bf16': the frozen models run in that dtype under autocast, the
    projector trains in fp32 (fp16 with a gradient scaler; 'no' on the CPU). checkpoint_every: epochs
    between checkpoints (and after the last). loss_csv: per-step losses (default ``out_dir/loss.csv``).
    projector_dir: the final projector (default ``out_dir/projector``). num_workers: DataLoader workers.
    tracking: TensorBoard / W&B of loss and lr per step (:class:`sdi.config.tracking.TrackingConfig`;
    None: none), event files in ``tracking_dir/tensorboard`` (default out_dir); run_name: W&B's.
    """
    _check_arguments(manifest, mixed_precision, epochs=epochs, batch_size=batch_size, checkpoint_every=checkpoint_every)
    out_dir = Path(out_dir)
    loss_csv = Path(loss_csv) if loss_csv else out_dir / "loss.csv"
    final = Path(projector_dir) if projector_dir else out_dir / "projector"
    dims = model_dims(sd_path, clip_path, vae_path)
    image_size = int(image_size or dims.resolution)
    dev, main = distributed.local_device(device), distributed.is_main_process()
    mixed_precision = _available_precision(mixed_precision, dev)
    settings = {"seed": seed, "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size,
                "drop_prob": drop_prob, "image_size": image_size, "hidden_dim": hidden_dim, "d_clip": dims.d_clip,
                "d_cross": dims.d_cross, "images": _fingerprint(manifest)}
    checkpoint = resume(out_dir, settings, epochs)
    if checkpoint is not None and checkpoint.name == f"{CHECKPOINT_PREFIX}{epochs}":
        return _finished(checkpoint, loss_csv, final, epochs)
    run = setup_run(manifest["path"].tolist(), settings, checkpoint, sd_path=sd_path, clip_path=clip_path,
                    vae_path=vae_path, dev=dev, mixed_precision=mixed_precision, num_workers=num_workers)
    state = _start_state(checkpoint, settings, run.optimizer)
    start_epoch = state.epoch
    if main:
        write_loss_csv(state.loss_rows, loss_csv)
        logger.info("training the projector: %d images, %d epochs x %d steps, batch %d x %d process(es), image size "
                    "%d, mixed precision %s, device %s", len(manifest), epochs, len(run.loader), batch_size,
                    distributed.world_size(), image_size, mixed_precision, dev)
    # Only the main process writes; a resumed run drops the events a killed run logged after its checkpoint.
    tracker = Tracker(tracking_dir or out_dir, tracking or TrackingConfig(tensorboard=False),
                      run_name=run_name or str(out_dir), config=settings,
                      resume_step=None if checkpoint is None else state.global_step + 1, enabled=main)
    rate, epoch_loss = train_epochs(run, state, epochs, out_dir=out_dir, loss_csv=loss_csv,
                                    checkpoint_every=checkpoint_every, tracker=tracker)
    if main:
        save_projector(run.bare, final)
        logger.info("projector done: %d epochs, %d steps, %.1f images/s this run, last epoch mean loss %.5f -> %s",
                    epochs, state.global_step, rate, epoch_loss, final)
    tracker.close()
    distributed.barrier()
    return TrainResult(final, start_epoch, epochs, state.global_step)


# --------------------------------------------------------------------------- the workflow's job
def run_job(job: dict) -> TrainResult:
    """One process's part of the workflow's projector training (rule train_projector), from paths.

    ``job`` (JSON-able): ``manifest`` (the training split's parquet file), ``sd_path``, ``clip_path``,
    ``out_dir``, ``tracking`` (:class:`sdi.config.tracking.TrackingConfig` fields or None), and
    :func:`train_projector`'s other keywords in ``settings``. :func:`sdi.training.distributed.launch` starts it.
    """
    settings = job["settings"]
    with distributed.process_group(settings.get("device", "auto")):
        tracking = job.get("tracking")
        result = train_projector(pd.read_parquet(job["manifest"]), job["sd_path"], job["clip_path"], job["out_dir"],
                                 tracking=None if tracking is None else TrackingConfig(**tracking), **settings)
        if distributed.is_main_process():
            logger.info("projector: %s (resumed from epoch %d, %d steps)", result.projector_dir,
                        result.resumed_from, result.global_step)
        return result


if __name__ == "__main__":  # torchrun [...] -m sdi.training.projector '<job JSON>'
    distributed.main_of(run_job)
