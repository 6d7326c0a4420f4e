"""GPU slots on a workstation: parallel local jobs each get GPUs of their own."""

import os
import subprocess
import sys
import time

import pytest

from sdi.io.jobs import claim_gpus

CLAIM = """
import os, sys, time
os.environ.pop("CUDA_VISIBLE_DEVICES", None)
from sdi.io.jobs import claim_gpus
ids = claim_gpus(int(sys.argv[1]), available=2, lock_dir=sys.argv[2], poll_s=0.05)
print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
time.sleep(float(sys.argv[3]))
"""


def _claim(n, lock_dir, hold_s):
    return subprocess.Popen([sys.executable, "-c", CLAIM, str(n), str(lock_dir), str(hold_s)],
                            stdout=subprocess.PIPE, text=True)


def test_parallel_jobs_get_different_gpus(tmp_path):
    a, b = _claim(1, tmp_path, 1.5), _claim(1, tmp_path, 1.5)
    gpus = {a.stdout.readline().strip(), b.stdout.readline().strip()}
    assert gpus == {"0", "1"}
    a.wait(), b.wait()


def test_a_job_waits_until_gpus_are_free_and_locks_die_with_the_process(tmp_path):
    holder = _claim(2, tmp_path, 1.0)
    assert holder.stdout.readline().strip() == "0,1"
    start = time.monotonic()
    waiter = _claim(1, tmp_path, 0)
    assert waiter.stdout.readline().strip() == "0"
    assert time.monotonic() - start > 0.5  # it could only start once the holder exited
    holder.wait(), waiter.wait()


def test_scheduler_choice_and_cpu_jobs_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert claim_gpus(1, available=4, lock_dir=tmp_path) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert claim_gpus(0, available=4, lock_dir=tmp_path) is None
    assert claim_gpus(1, available=0, lock_dir=tmp_path) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with pytest.raises(RuntimeError, match="asks for 3 GPUs but the machine has 2"):
        claim_gpus(3, available=2, lock_dir=tmp_path)
