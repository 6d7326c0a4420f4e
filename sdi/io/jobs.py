"""Glue for the thin scripts in workflow_scripts/: logging to the rule's log file."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import sys
import time
from pathlib import Path


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()

    def isatty(self):
        return False


# Where a job ran and which devices it was given: GPUs by SLURM or by the user.
DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_JOB_GPUS", "LOCAL_RANK", "WORLD_SIZE")


def job_environment() -> str:
    """'host=<name> CUDA_VISIBLE_DEVICES=0 ...' with the DEVICE_VARIABLES that are set."""
    found = [f"{k}={os.environ[k]}" for k in DEVICE_VARIABLES if k in os.environ]
    return " ".join([f"host={socket.gethostname()}", *found])


GPU_LOCK_DIR = Path(".snakemake") / "sdi-gpu-locks"
_held_gpu_locks: list = []  # open lock files: held for the life of the job process


def visible_gpu_count() -> int:
    """GPUs of the NVIDIA driver, counted without initialising CUDA (which would freeze
    CUDA_VISIBLE_DEVICES for this process)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def claim_gpus(n: int, available: int | None = None, lock_dir: str | Path = GPU_LOCK_DIR,
               poll_s: float = 5.0) -> list[int] | None:
    """Give this job n GPUs of its own on a workstation; returns their indices or None.

    Snakemake's local executor limits how many GPU jobs run at once (the ``gpu`` resource)
    but does not say which GPU each should use. Here each job takes an exclusive lock per GPU
    (released by the OS when the process ends, also when killed) and sets
    CUDA_VISIBLE_DEVICES before CUDA is initialised. Nothing happens when the scheduler
    already chose (SLURM sets CUDA_VISIBLE_DEVICES), for CPU jobs, or without GPUs.
    """
    available = visible_gpu_count() if available is None else available
    if n <= 0 or "CUDA_VISIBLE_DEVICES" in os.environ or available == 0:
        return None
    if n > available:
        raise RuntimeError(f"this job asks for {n} GPUs but the machine has {available}; "
                           "lower config.resources.<rule>.gpus")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        taken = []
        for gpu in range(available):
            handle = open(lock_dir / f"gpu{gpu}.lock", "w")  # noqa: SIM115 - held until exit
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            taken.append((gpu, handle))
            if len(taken) == n:
                _held_gpu_locks.extend(h for _, h in taken)
                ids = [g for g, _ in taken]
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
                return ids
        for _, handle in taken:
            handle.close()
        if not waited:
            logging.getLogger("sdi").info("waiting for %d free GPU(s) of %d", n, available)
            waited = True
        time.sleep(poll_s)


@contextlib.contextmanager
def logged(log_path: str | Path, gpus: int = 0, execution: dict | None = None):
    """Send logging records, warnings and stderr (tqdm progress) to log_path and the console.

    gpus: GPUs the job was given (its ``gpu`` resource); see :func:`claim_gpus`.
    execution: the job's execution-only settings (:func:`sdi.config.settings.execution_settings`),
        written to the log: they are in no params, so the log is their record.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as log_file:
        tee = _Tee(sys.__stderr__, log_file)
        handler = logging.StreamHandler(tee)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        old_stderr, sys.stderr = sys.stderr, tee
        claim_gpus(gpus)
        logging.getLogger("sdi").info("job environment: %s", job_environment())
        if execution is not None:
            logging.getLogger("sdi").info("execution settings (changing them reruns nothing): %s",
                                          " ".join(f"{k}={v}" for k, v in execution.items()))
        try:
            yield logging.getLogger("sdi")
        except BaseException:
            logging.getLogger("sdi").exception("failed")
            raise
        finally:
            sys.stderr = old_stderr
            root.removeHandler(handler)
