"""Multi-process (DDP) training in one place: how many processes, starting them, rank helpers.

Both trainers (:mod:`sdi.training.projector`, :mod:`sdi.training.classifier`) are plain PyTorch DDP, started
by torch's own launcher, ``torchrun``: :func:`launch` runs ``torchrun --standalone
--nproc-per-node N -m <trainer module> <job JSON>`` (one process per GPU; gloo processes on the
CPU), or calls the trainer in this process when N is 1. Each process joins the process group
that torchrun describes in its environment with :func:`process_group` (NCCL on GPUs, each rank
on ``cuda:<LOCAL_RANK>``; gloo on the CPU). By hand, the same job runs as::

    torchrun --standalone --nproc-per-node 4 -m sdi.training.classifier '<job JSON>'

Inside a process, :func:`rank`, :func:`world_size`, :func:`is_main_process`, :func:`barrier`,
:func:`all_reduce_sum` and :func:`all_gather_object` are the only collective calls the training
code needs; in a single process they are no-ops, so the same code runs either way.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sdi.models.devices import resolve_device

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- how many processes
def world_size_for(device: str = "auto", processes: int | None = None, *, key: str = "processes") -> int:
    """Number of training processes for ``device``.

    ``processes`` None: one per visible GPU (``torch.cuda.device_count()``, which honours
    ``CUDA_VISIBLE_DEVICES``, i.e. the GPUs a SLURM job was given) when ``device`` is 'auto'
    or 'cuda'; 1 for the CPU or a single named GPU ('cuda:N'). An explicit ``processes`` is
    used as is (on the CPU it runs that many gloo processes), but may not exceed the visible
    GPUs on a GPU device.
    """
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
def launch(module: str, job: dict, world: int) -> None:
    """Run the training job ``job`` (JSON-able) of ``module`` in ``world`` processes.

    ``module`` has ``run_job(job)`` (one process's work) and, as torchrun's entry point
    (``python -m <module> '<job JSON>'``), runs it through :func:`main_of`. One process:
    ``run_job(job)`` here, on the job as JSON gives it back (as the processes see it). Several:
    ``torchrun --standalone`` on this machine, with this process's CPU threads shared out
    between them; their output (each log line prefixed ``[rank r/W]``) goes to this process's
    stderr, so into the rule's log. A failing process stops the others and raises here.
    """
    text = json.dumps(job)
    job = json.loads(text)  # what torchrun's processes get, also in one process
    # in the rule's log, so the job can be rerun by hand (README, "Several GPUs in one job")
    logger.info("%s job (by hand: torchrun --standalone --nproc-per-node=N -m %s '<job>'): %s", module, module, text)
    if world == 1:
        importlib.import_module(module).run_job(job)
        return
    threads = max(1, torch.get_num_threads() // world)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "LOGLEVEL": "WARNING"}
    # torchrun's own folder (per-rank error files) is temporary: left alone it would stay in /tmp
    with tempfile.TemporaryDirectory(prefix="sdi-torchrun-") as log_dir:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
                   f"--log-dir={log_dir}", "-m", module, text]
        logger.info("starting %d training processes with torchrun (%d CPU thread(s) each): %s", world, threads,
                    " ".join(command[:-1] + ["<job>"]))
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              bufsize=1) as proc:
            for line in proc.stdout:
                sys.stderr.write(line)
    if proc.returncode != 0:
        raise RuntimeError(f"{module}: {world} training processes (torchrun) failed with exit code "
                           f"{proc.returncode}; the lines above show which rank failed and why")


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[None]:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR/PORT`` in the environment) for the block, and leave it at the end.

    NCCL with each rank on ``cuda:<LOCAL_RANK>`` (:func:`local_device`) for a GPU ``device``,
    gloo on the CPU. Every rank logs to stderr at INFO, each line prefixed ``[rank r/W]``.
    Without torchrun's environment (a single process) nothing is joined.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world == 1:
        yield
        return
    rank_, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s: [rank {rank_}/{world}] %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)
    init: dict[str, Any] = {"timeout": timedelta(minutes=30)}
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        init.update(backend="nccl", device_id=dev)
    else:
        init.update(backend="gloo")
    dist.init_process_group(**init)
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main_of(run_job) -> None:
    """The torchrun entry point of a trainer module: ``python -m <module> <job JSON>``."""
    if len(sys.argv) != 2:
        sys.exit(f"usage: torchrun [...] -m {run_job.__module__} '<job JSON>' (see sdi.training.distributed)")
    run_job(json.loads(sys.argv[1]))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # The job is done and its files are written. Leave without the interpreter's teardown: under load,
        # gloo's threads can abort it ("terminate called without an active exception"), which torchrun
        # would report as a failed job.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
