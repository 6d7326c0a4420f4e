"""Downstream classifier: ResNet50 from scratch on real (+ synthetic) images (docs/method.md sections 7 and 8),
or, with protocol ``finetune``, any torchvision model started from a local pretrained state dict
(:mod:`sdi.models.backbones`). The third protocol, the CLIP linear probe, is :mod:`sdi.training.linear_probe`.

The loop follows torchvision's ``references/classification/train.py``: build data, model,
optimizer and scheduler; per epoch train, evaluate on validation, save a resumable
checkpoint; at the end load the checkpoint chosen on validation and evaluate the test set
once. Its parts are where torchvision's reference has them: the data in :mod:`sdi.training.data`,
one epoch of training and the evaluation in :mod:`sdi.training.engine`, the model in
:func:`sdi.models.backbones.make_model`, the checkpoints in :mod:`sdi.training.checkpoints`; the run
(its parameters, setup, epochs, test) is here. Everything a run produces is written as data into ``out_dir``:

- ``metrics.json``: test metrics of :func:`sdi.evaluation.metrics.classification_metrics` plus
  ``best_epoch``, ``best_val_top1`` (with checkpoint 'last' also ``checkpoint`` and ``tested_epoch``),
  the training-set counts ``n_real``, ``n_real_copies``,
  ``n_synthetic``, ``n_train`` (rows of one epoch) and ``steps_per_epoch``, ``epochs``,
  ``wall_time_s``, ``device`` and the hyperparameters (``params``);
- ``train_set.parquet``: the exact training set, one row per example of one epoch
  (``path``, ``label``, ``source``, ``variant``; see :mod:`sdi.pipeline.training_set`);
- ``log.csv``: one row per epoch (epoch, lr, train_loss, train_top1, val_loss, val_top1, val_balanced);
- ``best/``: the weights of the best validation epoch, ``model.safetensors`` and ``config.json``
  (architecture, classes, image sizes, normalisation, epoch); :func:`sdi.training.checkpoints.load_classifier`
  reads it;
- ``tensorboard/``: the log.csv curves and the test metrics as TensorBoard scalars (``tracking``, see
  :mod:`sdi.training.tracking`; optionally a W&B run too);
- ``last/``: the resumable state after the latest epoch (:class:`sdi.training.checkpoints.ClassifierState`:
  weights, optimizer and scheduler state, epoch, best so far, history, random streams), safetensors and
  JSON. A new call with the same data and hyperparameters resumes from it; a ``last/`` written for other data
  or hyperparameters is ignored (with a warning) and overwritten.

Every file and folder is written under a temporary name and renamed, so a killed job never
leaves a half-written one.

Several GPUs (torchvision's recipe): run under ``torchrun`` (the workflow starts one process per
visible GPU with :func:`sdi.training.distributed.launch`, and this module is torchrun's entry point:
``torchrun --nproc-per-node N -m sdi.training.classifier '<job JSON>'``, see :func:`run_job`), each
process trains its share: DistributedDataParallel, SyncBatchNorm, a DistributedSampler
reshuffled per epoch, ``batch_size`` split between the processes (it stays the global batch, so
the hyperparameters mean the same on any number of GPUs), validation and test split between the
processes and their predictions gathered, so the metrics are those of the whole set; only rank 0
writes files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from sdi.config.protocols import DEFAULT, PROTOCOLS, TRAINED
from sdi.config.tracking import TrackingConfig
from sdi.evaluation.metrics import classification_metrics
from sdi.io.artifacts import atomic_write, write_parquet
from sdi.models.backbones import ARCH, make_model
from sdi.pipeline import training_set
from sdi.training import checkpoints, distributed
from sdi.training.checkpoints import ClassifierState
from sdi.training.data import Datasets, ManifestDataset, build_datasets, build_train_loader, seed_worker
from sdi.training.engine import evaluate_all, train_one_epoch
from sdi.training.tracking import Tracker
from sdi.training.transforms import MEAN, STD

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the model under DDP
def setup_distributed(model: nn.Module, device: torch.device) -> nn.Module:
    """The one hook for multi-GPU training (the paper trains with SyncBatchNorm on several GPUs).

    Single process: the model moved to ``device``. Under a process group of several ranks:
    BatchNorm -> SyncBatchNorm, moved to ``device`` and wrapped in DistributedDataParallel
    (which starts every rank from rank 0's weights). The bare model is ``model.module``.
    """
    if not distributed.is_distributed():
        return model.to(device)
    model = distributed.convert_sync_batchnorm(model, device).to(device)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


# --------------------------------------------------------------------------- the run
@dataclass
class Run:
    """One training run's parts, built by :func:`setup_run`: its data and loaders, the model (``model``,
    wrapped for DDP under several processes; ``bare`` the model itself), loss, optimizer and schedule."""

    data: Datasets
    counts: dict[str, int]
    train_loader: DataLoader
    generator: torch.Generator  # reseeded per epoch: the shuffle and the workers' seeds
    eval_kw: dict
    model: nn.Module
    bare: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    amp: bool


def run_params(*, num_classes: int, class_names: list[str] | None, epochs: int, batch_size: int, lr: float,
               momentum: float, weight_decay: float, resize: int, crop: int, augment: str, augment_at: str,
               arch: str, seed: int, amp: bool, protocol: str = DEFAULT, weights: str | None = None,
               frozen: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """(the hyperparameters a checkpoint must agree on, the best/ folder's config.json less its epoch)."""
    if protocol not in TRAINED:
        raise ValueError(f"classifier protocol {protocol!r}: this trainer runs {TRAINED}")
    if PROTOCOLS[protocol].uses_weights and not weights:
        raise ValueError(f"classifier protocol {protocol} needs classifier.weights (a local state dict of arch)")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"classifier class_names has {len(class_names)} entries, expected num_classes={num_classes}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"classifier epochs ({epochs}) and batch_size ({batch_size}) must be >= 1")
    params = {"num_classes": num_classes, "epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
              "weight_decay": weight_decay, "resize": resize, "crop": crop, "augment": augment, "seed": seed,
              "amp": amp}
    if augment_at != "crop":  # only when set, so runs made before the option keep their fingerprint
        params["augment_at"] = augment_at
    if arch != ARCH:  # likewise
        params["arch"] = arch
    if PROTOCOLS[protocol].uses_weights:  # likewise; the weights by content, so that a replaced file is a new run
        params.update({"protocol": protocol, "weights": str(weights), "weights_sha256": _sha256(weights),
                       "frozen": list(frozen)})
    best_config = {"arch": arch, "num_classes": num_classes, "class_names": class_names, "resize": resize,
                   "crop": crop, "mean": list(MEAN), "std": list(STD)}
    if protocol != DEFAULT:
        best_config["protocol"] = protocol
    return params, best_config


def _sha256(path: str | os.PathLike | None) -> str | None:
    if not path:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fingerprint(params: dict, train: pd.DataFrame, val: ManifestDataset) -> str:
    """What a resumable checkpoint must agree on: hyperparameters and the exact images and labels."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for table in (train[["path", "label"]], pd.DataFrame({"path": val.paths, "label": val.labels})):
        h.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return h.hexdigest()


def setup_run(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, synthetic: pd.DataFrame | None,
              params: dict, *, arch: str, augment_at: str, device: torch.device, amp: bool,
              num_workers: int) -> Run:
    """Data, loaders, model, optimizer and schedule of a run, seeded from ``params['seed']``."""
    world, main, seed, batch_size = (distributed.world_size(), distributed.is_main_process(), params["seed"],
                                     params["batch_size"])
    data = build_datasets(train, val, test, num_classes=params["num_classes"], resize=params["resize"],
                          crop=params["crop"], augment=params["augment"], augment_at=augment_at, synthetic=synthetic)
    if main and batch_size % world:
        logger.warning("classifier batch_size %d is not a multiple of %d processes; the global batch is %d",
                       batch_size, world, max(1, batch_size // world) * world)
    loader_kw = {"num_workers": num_workers, "pin_memory": device.type == "cuda", "worker_init_fn": seed_worker}
    generator = torch.Generator()
    checkpoints.seed_everything(seed)
    train_loader = build_train_loader(data.train, batch_size, seed, generator, **loader_kw)
    # Evaluation draws no random numbers, but a DataLoader iterator takes a seed from its generator
    # (the global RNG by default); a separate one keeps the training stream independent of evaluation.
    eval_kw = {**loader_kw, "batch_size": max(1, batch_size // world), "generator": torch.Generator().manual_seed(seed)}

    model = setup_distributed(make_model(params["num_classes"], arch, params.get("weights"),
                                         tuple(params.get("frozen", ()))), device)
    if world > 1:  # same initial weights (DDP broadcasts rank 0's), different augmentation streams
        if main:
            sync = sorted({type(m).__name__ for m in model.modules() if isinstance(m, distributed.SYNC_BATCHNORM)})
            n_sync = sum(isinstance(m, distributed.SYNC_BATCHNORM) for m in model.modules())
            logger.info("%s over %d processes, %d %s layers", type(model).__name__, world, n_sync, ", ".join(sync))
        checkpoints.seed_everything(int(np.random.SeedSequence([seed, distributed.rank(), 1]).generate_state(1)[0]))
    trained = [p for p in model.parameters() if p.requires_grad]  # all but finetune's frozen modules
    optimizer = torch.optim.SGD(trained, lr=params["lr"], momentum=params["momentum"],
                                weight_decay=params["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=params["epochs"])
    return Run(data, training_set.counts(data.rows), train_loader, generator, eval_kw, model, _bare(model),
               nn.CrossEntropyLoss(), optimizer, scheduler, device, amp)


def run_epoch(run: Run, state: ClassifierState, epoch: int) -> tuple[dict, int]:
    """Train one epoch and validate: (the epoch's log row, images this process trained on); ``state``
    takes the row, the best epoch so far and the random streams of every process."""
    epochs, world, seed = state.params["epochs"], distributed.world_size(), state.params["seed"]
    run.generator.manual_seed(checkpoints.epoch_seed(seed, epoch, bits=64) ^ distributed.rank())
    if world > 1:
        run.train_loader.sampler.set_epoch(epoch)
    epoch_lr = run.optimizer.param_groups[0]["lr"]
    train_loss, train_top1, seen = train_one_epoch(run.model, run.train_loader, run.criterion, run.optimizer,
                                                   run.device, f"epoch {epoch}/{epochs} train", run.amp)
    run.scheduler.step()
    val_loss, y_true, y_pred = evaluate_all(run.bare, run.data.val, run.criterion, run.device,
                                            f"epoch {epoch}/{epochs} val", run.amp, **run.eval_kw)
    val = classification_metrics(y_true, y_pred, state.params["num_classes"])
    row = {"epoch": epoch, "lr": epoch_lr, "train_loss": train_loss, "train_top1": train_top1,
           "val_loss": val_loss, "val_top1": val["top1"], "val_balanced": val["balanced"]}
    state.epoch, state.history = epoch, [*state.history, row]
    if val["top1"] > state.best_val_top1:  # strict: ties keep the earlier epoch
        state.best_epoch, state.best_val_top1 = epoch, val["top1"]
    state.rng = distributed.all_gather_object(checkpoints.rng_state())  # collective: every rank takes part
    return row, seen


def save_epoch(run: Run, state: ClassifierState, row: dict, out_dir: Path, best_config: dict) -> None:
    """The main process's files after an epoch: last/ first, then best/ (if killed in between,
    :func:`resume` rewrites best/ from last/), then log.csv."""
    logger.info("epoch %d/%d lr %.5f train loss %.4f top-1 %.2f%% | val loss %.4f top-1 %.2f%% balanced %.2f%% | "
                "best epoch %d", row["epoch"], run.scheduler.T_max, row["lr"], row["train_loss"], row["train_top1"],
                row["val_loss"], row["val_top1"], row["val_balanced"], state.best_epoch)
    state.save(out_dir / "last", run.bare, run.optimizer, run.scheduler)
    if state.best_epoch == row["epoch"]:
        checkpoints.save_best(out_dir / "best", run.bare,
                              {**best_config, "epoch": row["epoch"], "val_top1": row["val_top1"]})
    checkpoints.write_log(out_dir / "log.csv", state.history)


def train_epochs(run: Run, state: ClassifierState, out_dir: Path, best_config: dict, tracker: Tracker, *,
                 elapsed_before: float, t_start: float, stop_after_epoch: int | None) -> tuple[int, float] | None:
    """Epochs state.epoch + 1 .. epochs: (images one process trained on in the last epoch, training images per
    second of this call), or None when stopped after ``stop_after_epoch``."""
    epochs, main = state.params["epochs"], distributed.is_main_process()
    progress = tqdm(total=epochs, initial=state.epoch, desc="classifier", unit="epoch", disable=not main)
    seen, images_trained, t_train = 0, 0, time.time()
    for epoch in range(state.epoch + 1, epochs + 1):
        row, seen = run_epoch(run, state, epoch)
        images_trained += seen
        progress.update(1)
        tracker.scalars({"train/loss": row["train_loss"], "train/top1": row["train_top1"], "val/loss": row["val_loss"],
                         "val/top1": row["val_top1"], "val/balanced": row["val_balanced"], "lr": row["lr"]}, epoch)
        state.wall_time_s = elapsed_before + time.time() - t_start
        if main:
            save_epoch(run, state, row, out_dir, best_config)
        if stop_after_epoch is not None and stop_after_epoch <= epoch < epochs:
            if main:
                logger.info("stopping after epoch %d as asked; call again to resume from %s", epoch, out_dir / "last")
            tracker.close()
            progress.close()
            distributed.barrier()
            return None
    progress.close()
    return seen, images_trained / max(time.time() - t_train, 1e-9)


def test_run(run: Run, state: ClassifierState, out_dir: Path, class_names: list[str] | None, *, seen: int,
             wall_time_s: float, checkpoint: str = "best") -> dict:
    """metrics.json's content: the test set evaluated once, with the weights of the epoch chosen on
    validation (checkpoint 'best': best/) or of the last epoch ('last': last/), and the run's counts,
    times and hyperparameters."""
    from safetensors.torch import load_file

    run.bare.load_state_dict(load_file(out_dir / checkpoint / "model.safetensors", device=str(run.device)))
    _, y_true, y_pred = evaluate_all(run.bare, run.data.test, run.criterion, run.device, "test", run.amp,
                                     **run.eval_kw)
    metrics = classification_metrics(y_true, y_pred, state.params["num_classes"], class_names)
    metrics.update({"split": "test", "protocol": state.params.get("protocol", DEFAULT),
                    "best_epoch": state.best_epoch, "best_val_top1": state.best_val_top1,
                    **({"checkpoint": "last", "tested_epoch": state.epoch} if checkpoint == "last" else {}),
                    **run.counts, "steps_per_epoch": len(run.train_loader),
                    "n_train_real": run.counts["n_real"] + run.counts["n_real_copies"],
                    "n_train_synthetic": run.counts["n_synthetic"], "n_val": len(run.data.val),
                    "epochs": state.params["epochs"], "wall_time_s": round(wall_time_s, 3), "device": str(run.device),
                    "processes": distributed.world_size(), "train_images_per_epoch": seen, "params": state.params})
    return metrics


def _log_start(run: Run, params: dict, arch: str, start_epoch: int) -> None:
    c = run.counts
    how = "from scratch"
    if PROTOCOLS[params.get("protocol", DEFAULT)].uses_weights:
        n_frozen = sum(not p.requires_grad for p in run.bare.parameters())
        how = (f"from {params['weights']} (fine-tuning; {n_frozen} of {len(list(run.bare.parameters()))} "
               f"parameter tensors frozen: {params['frozen'] or 'none'})")
    logger.info("training %s %s on %s x %d process(es): %d real + %d real copies + %d synthetic train, "
                "%d val, %d test images, %d classes, %d steps per epoch, epochs %d-%d, augment=%s at %s", arch,
                how, run.device.type, distributed.world_size(), c["n_real"], c["n_real_copies"], c["n_synthetic"],
                len(run.data.val), len(run.data.test), params["num_classes"], len(run.train_loader), start_epoch,
                params["epochs"], params["augment"], params.get("augment_at", "crop"))


def _finish(metrics: dict, state: ClassifierState, out_dir: Path, tracker: Tracker, train_rate: float) -> None:
    """The main process: metrics.json (the run's one finished mark), the test scalars, the closing log line."""
    atomic_write(out_dir / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics, indent=2) + "\n"))
    tracker.scalars({"test/top1": metrics["top1"], "test/balanced": metrics["balanced"]}, state.best_epoch)
    tracker.close()
    logger.info("classifier done: best val top-1 %.2f%% (epoch %d of %d), test top-1 %.2f%%, balanced %.2f%%, "
                "%.1f train images/s this run -> %s", state.best_val_top1, state.best_epoch, state.params["epochs"],
                metrics["top1"], metrics["balanced"], train_rate, out_dir / "metrics.json")


def start_run(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, synthetic: pd.DataFrame | None,
              params: dict, best_config: dict, out_dir: Path, *, arch: str, augment_at: str, device: torch.device,
              amp: bool, num_workers: int) -> tuple[Run, ClassifierState]:
    """The run's parts (:func:`setup_run`), the main process's ``train_set.parquet`` (and no metrics.json of an
    older run), and the state to start from: fresh, or resumed from ``out_dir/last``
    (:func:`sdi.training.checkpoints.resume`); the main process logs what it trains."""
    world, main = distributed.world_size(), distributed.is_main_process()
    run = setup_run(train, val, test, synthetic, params, arch=arch, augment_at=augment_at, device=device, amp=amp,
                    num_workers=num_workers)
    if main:
        (out_dir / "metrics.json").unlink(missing_ok=True)  # rewritten at the end; never trusted from an older run
        write_parquet(run.data.rows, out_dir / "train_set.parquet")
    fresh = ClassifierState(_fingerprint(params, run.data.rows, run.data.val), params, world)
    state = checkpoints.resume(out_dir, fresh, run.bare, run.optimizer, run.scheduler, best_config)
    if main:
        _log_start(run, params, arch, state.epoch + 1)
    return run, state


def start_tracker(out_dir: Path, params: dict, start_epoch: int, tracking: TrackingConfig | None,
                  run_name: str | None) -> Tracker:
    """The run's TensorBoard / W&B tracker (:class:`sdi.training.tracking.Tracker`), from ``start_epoch`` on."""
    # Only the main process writes; a resumed run drops the events a killed run logged after its checkpoint.
    return Tracker(out_dir, tracking or TrackingConfig(tensorboard=False), run_name=run_name or str(out_dir),
                   config=params, resume_step=start_epoch if start_epoch > 1 else None,
                   enabled=distributed.is_main_process())


def train_classifier(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, out_dir: str | os.PathLike, *,
                     num_classes: int, class_names: list[str] | None = None, epochs: int = 100,
                     batch_size: int = 128, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-4,
                     resize: int = 256, crop: int = 224, augment: str = "none", augment_at: str = "crop",
                     arch: str = ARCH, seed: int = 0, device: str = "auto", num_workers: int = 2,
                     synthetic: pd.DataFrame | None = None, amp: bool = False,
                     stop_after_epoch: int | None = None, tracking: TrackingConfig | None = None,
                     run_name: str | None = None, protocol: str = DEFAULT, weights: str | None = None,
                     frozen: tuple[str, ...] | list[str] = (), checkpoint: str = "best") -> dict | None:
    """Train a classifier (ResNet50 by default) from scratch, choose the epoch on validation, evaluate test once.

    Runs in this process, or in each process of a torchrun job (:mod:`sdi.training.distributed`;
    the workflow starts those with :func:`sdi.training.distributed.launch` and :func:`run_job`).
    Returns metrics.json's content (the module docstring), or None when stopped early.

    train, val, test: manifests of ``path`` and ``label`` (0..C-1); ``train`` holds one row per
    example of an epoch (a :func:`sdi.pipeline.training_set.build_training_set` table, else every row
    is ``real``); ``synthetic``: (path, label) rows added as ``synthetic``. out_dir: metrics.json,
    log.csv, train_set.parquet, best/, last/. num_classes: C; class_names: C names for per-class metrics.
    epochs, batch_size (global, split between processes), lr, momentum, weight_decay: SGD, cosine
    annealing, cross-entropy (published: 100, 128, 0.01, 0.9, 1e-4). resize, crop (256, 224), augment
    ('none', 'randaugment', 'cutout', 'gridmask') at augment_at ('crop' as docs/method.md section 7, 'raw' as
    the reference ran them): :func:`sdi.training.transforms.build_transforms`. arch: a torchvision
    model name (:func:`sdi.models.backbones.build_model`). seed: init, shuffling, augmentation. device:
    'auto' or a torch device. amp: bf16 autocast on CUDA (the reference trains in fp32). stop_after_epoch:
    stop cleanly after it and return None; the same call again resumes from last/. tracking: TensorBoard /
    W&B (:class:`sdi.config.tracking.TrackingConfig`; None: nothing); run_name: W&B's (default: out_dir).
    protocol: 'scratch' (random init, the paper's) or 'finetune': ``arch`` starts from the local state
    dict ``weights`` with a new head (:func:`sdi.models.backbones.make_model`), the modules named in
    ``frozen`` not trained. checkpoint: the weights test is evaluated with: 'best' (the epoch of the highest
    validation top-1, the paper's) or 'last' (the last epoch's, for a validation set too small to choose an epoch by).
    """
    if checkpoint not in ("best", "last"):
        raise ValueError(f"classifier checkpoint {checkpoint!r}: expected 'best' or 'last'")
    t_start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = distributed.local_device(device)
    amp = bool(amp and device.type == "cuda")
    params, best_config = run_params(num_classes=num_classes, class_names=class_names, epochs=epochs,
                                     batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                     resize=resize, crop=crop, augment=augment, augment_at=augment_at, arch=arch,
                                     seed=seed, amp=amp, protocol=protocol, weights=weights,
                                     frozen=tuple(frozen))
    run, state = start_run(train, val, test, synthetic, params, best_config, out_dir, arch=arch,
                           augment_at=augment_at, device=device, amp=amp, num_workers=num_workers)
    elapsed_before = state.wall_time_s
    tracker = start_tracker(out_dir, params, state.epoch + 1, tracking, run_name)
    trained = train_epochs(run, state, out_dir, best_config, tracker, elapsed_before=elapsed_before,
                           t_start=t_start, stop_after_epoch=stop_after_epoch)
    if trained is None:
        return None
    distributed.barrier()  # best/ is written
    metrics = test_run(run, state, out_dir, class_names, seen=trained[0],
                       wall_time_s=elapsed_before + time.time() - t_start, checkpoint=checkpoint)
    if distributed.is_main_process():
        _finish(metrics, state, out_dir, tracker, trained[1])
    return metrics


# --------------------------------------------------------------------------- the workflow's job
def run_job(job: dict) -> dict | None:
    """One process's part of a workflow classifier run (rule train_classifier), from paths.

    ``job`` (JSON-able): ``split`` (folder of train/val/test.parquet), ``filtered`` / ``shards``
    (the generated images, :func:`sdi.pipeline.training_set.read_generated`), ``training_set``
    (:func:`sdi.pipeline.training_set.method_training_set` keywords), ``out_dir``, ``settings``
    (:func:`train_classifier` keywords: hyperparameters and execution settings), ``tracking``
    (:class:`sdi.config.tracking.TrackingConfig` fields) and ``run_name``. Every process builds the same
    training set; :func:`sdi.training.distributed.launch` starts them.
    """
    with distributed.process_group(job["settings"].get("device", "auto")):
        inputs = training_set.read_method_inputs(job["split"], job["training_set"], filtered=job.get("filtered"),
                                                 shards=job.get("shards"))
        if inputs.pool is not None and distributed.is_main_process():
            keep_ratio = job["training_set"].get("keep_ratio")
            logger.info("%s: %d of %d generated images in the pool (pool %s%s)", inputs.source, len(inputs.pool),
                        len(inputs.generated), job["training_set"]["pool"],
                        f", re-selected at keep_ratio {keep_ratio}" if keep_ratio is not None else "")
        tracking = job.get("tracking")
        return train_classifier(inputs.train, inputs.split["val"], inputs.split["test"], job["out_dir"],
                                num_classes=inputs.num_classes, class_names=inputs.class_names,
                                tracking=None if tracking is None else TrackingConfig(**tracking),
                                run_name=job.get("run_name"), **job["settings"])


if __name__ == "__main__":  # torchrun [...] -m sdi.training.classifier '<job JSON>'
    distributed.main_of(run_job)
