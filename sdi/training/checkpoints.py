"""Resumable training state as files that describe themselves: safetensors for tensors, JSON for the rest.

Both trainers save a checkpoint folder holding their model's weights (``model.safetensors``
or ``save_pretrained``), the optimizer's tensors (``optimizer.safetensors``, e.g. SGD momentum
or AdamW moments) and ``state.json``: epoch, progress, the optimizer's other state and param
groups, the scheduler's state, and the random streams of every process (:func:`rng_state`).
Nothing is pickled, so a checkpoint can be read without running our code.

One resume policy for both (:func:`resumable`): a checkpoint is resumed only when it was written for
the same data and hyperparameters; any other is left out with a warning that says what differs, the
run starts from scratch, and its own checkpoints replace the old ones as they are written. One epoch
seed (:func:`epoch_seed`): every random stream of an epoch restarts from (seed, epoch, stream), so a
resumed run draws what an uninterrupted one draws.

The classifier's checkpoints are here too (:mod:`sdi.training.classifier`): :class:`ClassifierState` (its
``last/`` folder), :func:`save_best` and :func:`load_classifier` (``best/``), :func:`write_log` (``log.csv``)
and :func:`resume`. The projector's ``checkpoint-epoch{N}/`` folders are ``ProjectorState`` of
:mod:`sdi.training.projector`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from sdi.io.artifacts import atomic_dir, atomic_write
from sdi.models.backbones import ARCH, build_model
from sdi.training import distributed

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.safetensors"


def epoch_seed(seed: int, epoch: int, *streams: int, bits: int = 32) -> int:
    """The seed of one random stream of one epoch, from (seed, epoch, *streams) only; ``bits``: 32 or 64."""
    dtype = np.uint64 if bits == 64 else np.uint32
    return int(np.random.SeedSequence([seed, epoch, *streams]).generate_state(1, dtype)[0])


def _differences(saved, expected) -> str:
    if isinstance(saved, dict) and isinstance(expected, dict):
        keys = [k for k in expected if saved.get(k) != expected[k]]
        return ", ".join(f"{k}: {saved.get(k)!r} -> {expected[k]!r}" for k in keys)
    return "other data or hyperparameters"


def resumable(folder: Path, key: str, expected, *, warn: bool = True) -> bool:
    """Whether the checkpoint ``folder`` belongs to this run: its ``state.json[key]`` (a fingerprint, or
    the settings a checkpoint must agree on) equals ``expected``. If not, a warning (``warn``: the main
    process) names it and what differs: the run does not resume from it and overwrites it."""
    saved = read_state(folder).get(key)
    if saved == expected:
        return True
    if warn:
        logger.warning("%s was written for another run (%s); not resuming from it: starting from scratch, "
                       "and this run's checkpoints replace it", folder, _differences(saved, expected))
    return False


def _tensor_text(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def _text_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global random streams (so a checkpoint's :func:`rng_state`
    depends on the seed only, not on the process that wrote it)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """This process's random streams (torch, CUDA, numpy, python) as JSON-able data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, python_gauss = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": _tensor_text(torch.get_rng_state()), "cuda": [_tensor_text(s) for s in cuda],
            "numpy": [kind, keys.tolist(), pos, has_gauss, gauss], "python": [version, list(internal), python_gauss]}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(_text_tensor(state["torch"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_text_tensor(s) for s in state["cuda"]])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, python_gauss = state["python"]
    random.setstate((version, tuple(internal), python_gauss))


def save_state(folder: Path, state: dict, optimizer: torch.optim.Optimizer, scheduler=None) -> None:
    """Write ``state`` (JSON-able) with the optimizer's (and scheduler's) state into ``folder``:
    ``optimizer.safetensors`` and ``state.json``. ``folder`` is a temporary folder the caller renames."""
    from safetensors.torch import save_file

    opt = optimizer.state_dict()
    tensors = {f"{i}.{k}": v.contiguous() for i, s in opt["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    other = {str(i): {k: v for k, v in s.items() if not torch.is_tensor(v)} for i, s in opt["state"].items()}
    full = {**state, "optimizer": {"param_groups": opt["param_groups"], "state": other}}
    if scheduler is not None:
        full["scheduler"] = scheduler.state_dict()
    save_file(tensors, folder / OPTIMIZER_FILE)
    (folder / STATE_FILE).write_text(json.dumps(full) + "\n")


def read_state(folder: Path) -> dict:
    """``state.json`` of a checkpoint folder (without loading anything)."""
    return json.loads((folder / STATE_FILE).read_text())


def load_state(folder: Path, optimizer: torch.optim.Optimizer, scheduler=None) -> dict:
    """Load the optimizer's (and scheduler's) state of ``folder`` into them; return the rest of ``state.json``."""
    from safetensors.torch import load_file

    state = read_state(folder)
    saved = state.pop("optimizer")
    per_param = {int(i): dict(s) for i, s in saved["state"].items()}
    for key, value in load_file(folder / OPTIMIZER_FILE).items():
        i, name = key.split(".", 1)
        per_param.setdefault(int(i), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": saved["param_groups"]})
    if scheduler is not None:
        scheduler.load_state_dict(state.pop("scheduler"))
    return state


# --------------------------------------------------------------------------- the classifier's checkpoints
LOG_COLUMNS = ["epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_balanced"]


@dataclass
class ClassifierState:
    """Where a run stands after ``epoch``; with the weights, optimizer and scheduler it resumes the run.

    Saved by :meth:`save` as a folder (written atomically) that describes itself:
    ``model.safetensors``, ``optimizer.safetensors`` (the optimizer's tensors, e.g. SGD momentum)
    and ``state.json`` (these fields, the optimizer's other state and param groups, the
    scheduler's state, and the random streams of every process, :func:`rng_state`).
    ``fingerprint`` names the data and hyperparameters; a checkpoint of another run is not resumed.
    """

    fingerprint: str
    params: dict
    world_size: int = 1
    epoch: int = 0
    best_epoch: int = 0
    best_val_top1: float = -1.0
    history: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0
    rng: list[dict] = field(default_factory=list)

    def save(self, folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> None:
        from safetensors.torch import save_file

        with atomic_dir(folder) as tmp:
            save_file(model.state_dict(), tmp / "model.safetensors")
            save_state(tmp, asdict(self), optimizer, scheduler)

    @classmethod
    def load(cls, folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> ClassifierState:
        """Load the weights, optimizer and scheduler of ``folder`` into the given objects; return the state."""
        from safetensors.torch import load_file

        model.load_state_dict(load_file(folder / "model.safetensors"))
        return cls(**load_state(folder, optimizer, scheduler))


def save_best(folder: Path, model: nn.Module, config: dict) -> None:
    """The chosen weights as a self-describing folder: ``model.safetensors`` and ``config.json``
    (architecture, classes, image sizes, normalisation, epoch and validation top-1), see :func:`load_classifier`."""
    from safetensors.torch import save_file

    with atomic_dir(folder) as tmp:
        save_file(model.state_dict(), tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_classifier(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(the model in eval mode with the weights of ``folder``, its config.json), e.g. ``<run>/best``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    model = build_model(config["num_classes"], config.get("arch", ARCH))
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.to(device).eval(), config


def write_log(path: Path, history: list[dict]) -> None:
    """The classifier's ``log.csv`` (:data:`LOG_COLUMNS`, one row per epoch), written atomically."""
    atomic_write(path, lambda tmp: pd.DataFrame(history, columns=LOG_COLUMNS).to_csv(tmp, index=False))


def resume(out_dir: Path, fresh: ClassifierState, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
           best_config: dict) -> ClassifierState:
    """The state to start from: ``fresh``, unless ``out_dir/last`` is a checkpoint of the same run.

    Then its weights, optimizer and schedule are loaded into ``model`` (the bare one),
    ``optimizer`` and ``scheduler``, each process continues its own random streams (when the
    number of processes is the same), and what a kill between two writes left behind is
    repaired: ``best/`` (if the last epoch was the best) and ``log.csv``.
    """
    last, main = out_dir / "last", distributed.is_main_process()
    if not (last / "state.json").is_file():
        return fresh
    if not resumable(last, "fingerprint", fresh.fingerprint, warn=main):
        return fresh
    state = ClassifierState.load(last, model, optimizer, scheduler)
    if state.world_size == fresh.world_size:
        set_rng_state(state.rng[distributed.rank()])
    elif main:
        logger.warning("%s was written by %d process(es), this run has %d: resuming the weights, optimizer and "
                       "schedule, with fresh random streams", last, state.world_size, fresh.world_size)
    state.world_size = fresh.world_size
    if main:
        best = out_dir / "best" / "config.json"
        if state.best_epoch == state.epoch and (not best.is_file()
                                                or json.loads(best.read_text())["epoch"] != state.best_epoch):
            save_best(out_dir / "best", model, {**best_config, "epoch": state.epoch, "val_top1": state.best_val_top1})
        write_log(out_dir / "log.csv", state.history)
        logger.info("resuming from %s after epoch %d (best so far: epoch %d, val top-1 %.2f%%)", last, state.epoch,
                    state.best_epoch, state.best_val_top1)
    return state
