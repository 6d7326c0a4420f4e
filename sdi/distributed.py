"""Multi-process (DDP) training in one place: how many processes, spawning them, rank helpers.

The Snakemake rules run a training script as one process. A training function that should
use every GPU its job was given calls :func:`world_size_for` and, when that is above one,
:func:`launch`, which starts one worker process per GPU on this machine (``torch.multiprocessing``
with the spawn method and a free localhost port), initialises ``torch.distributed`` in each
(NCCL on GPUs, gloo on the CPU), runs the function there and returns rank 0's result. Log
records of every worker come back to the caller's logging handlers (so into the rule's log),
prefixed ``[rank r/W]``.

Inside a worker, :func:`rank`, :func:`world_size`, :func:`is_main_process`, :func:`barrier`,
:func:`all_reduce_sum` and :func:`all_gather_object` are the only collective calls the training
code needs; outside one (a single process) they are no-ops, so the same code runs either way.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import pickle
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sdi.models import resolve_device

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- how many processes
def world_size_for(device: str = "auto", processes: int | None = None, *, key: str = "processes") -> int:
    """Number of training processes for ``device``.

    ``processes`` None: one per visible GPU (``torch.cuda.device_count()``, which honours
    ``CUDA_VISIBLE_DEVICES``, i.e. the GPUs a SLURM job was given) when ``device`` is 'auto'
    or 'cuda'; 1 for the CPU or a single named GPU ('cuda:N'). An explicit ``processes`` is
    used as is (on the CPU it runs that many gloo processes), but may not exceed the visible
    GPUs on a GPU device. Inside an already initialised process group (e.g. under torchrun)
    the answer is 1: the caller is one of the processes already.
    """
    if dist.is_available() and dist.is_initialized():
        return 1
    dev = resolve_device(device)
    gpus = torch.cuda.device_count() if dev.type == "cuda" else 0
    if processes is None:
        return gpus if dev.type == "cuda" and dev.index is None and gpus > 1 else 1
    processes = int(processes)
    if processes < 1:
        raise ValueError(f"{key}: must be >= 1 (or null for one process per visible GPU), got {processes}")
    if dev.type == "cuda" and processes > 1:
        if dev.index is not None:
            raise ValueError(f"{key}: {processes} processes need device 'cuda' or 'auto', not {device!r}")
        if processes > gpus:
            raise ValueError(f"{key}: {processes} processes but only {gpus} GPU(s) visible "
                             f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                             "lower it or request more GPUs for the job")
    return processes


# --------------------------------------------------------------------------- rank helpers
def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def local_device(device: str | torch.device = "auto") -> torch.device:
    """This process's device: ``cuda:<local rank>`` for a GPU run under DDP, else ``resolve_device(device)``."""
    dev = resolve_device(str(device))
    if dev.type == "cuda" and is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank())))
    return dev


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over all processes, as floats (``values`` alone in one process)."""
    if not is_distributed():
        return [float(v) for v in values]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# --------------------------------------------------------------------------- SyncBatchNorm
class CPUSyncBatchNorm(_BatchNorm):
    """SyncBatchNorm for CPU processes (gloo).

    torch's ``nn.SyncBatchNorm`` has GPU kernels only (and DDP refuses it on the CPU). Here the
    batch statistics are summed over the processes with the autograd-aware
    ``torch.distributed.nn.all_reduce``, so forward and backward equal BatchNorm over the
    concatenated global batch, as ``nn.SyncBatchNorm`` does on GPUs. In eval mode or in a single
    process it is plain BatchNorm. Parameters and buffers are BatchNorm's (checkpoints load into either).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or not is_distributed():
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(input)
        channels, dims = input.shape[1], [0, *range(2, input.dim())]
        count = input.new_tensor([input.numel() // channels])
        stats = all_reduce(torch.cat([input.sum(dims), (input * input).sum(dims), count]))
        n = stats[-1]
        mean = stats[:channels] / n
        var = stats[channels:2 * channels] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(factor * mean)
                self.running_var.mul_(1 - factor).add_(factor * var * n / (n - 1).clamp(min=1))
        shape = [1, channels] + [1] * (input.dim() - 2)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


SYNC_BATCHNORM = (nn.SyncBatchNorm, CPUSyncBatchNorm)


def convert_sync_batchnorm(model: nn.Module, device: torch.device | str = "cuda") -> nn.Module:
    """Every BatchNorm of ``model`` -> ``nn.SyncBatchNorm`` (GPU) or :class:`CPUSyncBatchNorm` (CPU)."""
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if torch.device(device).type == "cpu":
        for module in model.modules():
            if type(module) is nn.SyncBatchNorm:
                module.__class__ = CPUSyncBatchNorm  # same parameters and buffers, another forward
    return model


# --------------------------------------------------------------------------- launching
def free_port() -> int:
    """A TCP port on localhost that is free now (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _RankPrefix(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = f"{self.prefix} {record.getMessage()}", None
        return True


class _ToCallerLoggers(logging.Handler):
    """Hands a record from a worker to the caller's logger of the same name (and so its handlers)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


@contextlib.contextmanager
def _main_script_hidden():
    """Spawned workers import the caller's ``__main__`` unless it is hidden; a Snakemake
    ``script:`` has no ``if __name__ == "__main__"`` guard, so a worker would run the whole
    script again. The workers only need ``sdi``, so the script's path is withheld from them."""
    main = sys.modules.get("__main__")
    hide = main is not None and getattr(main, "__spec__", None) is None and hasattr(main, "__file__")
    saved = main.__file__ if hide else None
    if hide:
        del main.__file__
    try:
        yield
    finally:
        if hide:
            main.__file__ = saved


def _worker(local_rank: int, fn: Callable, kwargs: dict, world: int, port: int, backend: str, log_queue,
            log_level: int, threads: int, result_path: str) -> None:
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "OMP_NUM_THREADS": str(threads)})
    torch.set_num_threads(threads)
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.handlers.QueueHandler(log_queue)
    handler.addFilter(_RankPrefix(f"[rank {local_rank}/{world}]"))
    root.addHandler(handler)
    root.setLevel(log_level)
    logging.captureWarnings(True)
    init = {"backend": backend, "init_method": "env://", "rank": local_rank, "world_size": world,
            "timeout": timedelta(minutes=30)}
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        init["device_id"] = torch.device("cuda", local_rank)
    dist.init_process_group(**init)
    try:
        result = fn(**kwargs)
        if local_rank == 0:
            with open(result_path, "wb") as f:
                pickle.dump(result, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., Any], kwargs: dict, world: int, *, device: str | torch.device = "auto") -> Any:
    """Run ``fn(**kwargs)`` in ``world`` processes on this machine and return rank 0's result.

    ``fn`` must be importable (a module-level function of a module, not of ``__main__``); it
    runs in process group of ``world`` ranks (NCCL when ``device`` is a GPU, each rank on
    ``cuda:<rank>``; gloo on the CPU) and finds its rank with the helpers of this module.
    The caller's CPU threads are shared out between the workers. A failing worker stops the
    others and its exception is raised here (``torch.multiprocessing.ProcessRaisedException``).
    """
    import torch.multiprocessing as mp

    backend = "nccl" if resolve_device(str(device)).type == "cuda" else "gloo"
    threads = max(1, torch.get_num_threads() // world)
    ctx = mp.get_context("spawn")
    log_queue = ctx.Queue()
    listener = logging.handlers.QueueListener(log_queue, _ToCallerLoggers())
    port = free_port()
    logger.info("starting %d training processes (%s, localhost:%d, %d CPU thread(s) each)", world, backend, port,
                threads)
    listener.start()
    try:
        with tempfile.TemporaryDirectory(prefix="sdi-launch-") as tmp, _main_script_hidden():
            result_path = str(Path(tmp) / "result.pkl")
            mp.spawn(_worker, args=(fn, kwargs, world, port, backend, log_queue,
                                    logging.getLogger().getEffectiveLevel(), threads, result_path),
                     nprocs=world, join=True)
            with open(result_path, "rb") as f:
                return pickle.load(f)
    finally:
        listener.stop()
