"""Multi-process (DDP) training on the CPU: two gloo processes started by torchrun, as a job given
two GPUs starts two NCCL ones (sdi.training.distributed)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from sdi.training import distributed

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def two_threads():
    """Two processes on a 2-core machine: one intra-op thread each (launch shares the caller's out)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def rank_lines(output: str, pattern: str) -> dict[int, list[str]]:
    """{rank: messages matching pattern} among the log lines the processes wrote."""
    out: dict[int, list[str]] = {}
    for line in output.splitlines():
        m = re.search(r"\[rank (\d)/2\] (.*)", line)
        if m and re.search(pattern, m[2]):
            out.setdefault(int(m[1]), []).append(m[2])
    return out


# --------------------------------------------------------------------------- helpers
def test_world_size_follows_the_request():
    assert distributed.world_size_for("cpu") == 1  # no GPUs: one process unless asked
    assert distributed.world_size_for("cpu", 3) == 3
    with pytest.raises(ValueError, match="classifier.processes"):
        distributed.world_size_for("cpu", 0, key="classifier.processes")
    if torch.cuda.device_count() < 2:
        with pytest.raises(ValueError, match="GPU"):
            distributed.world_size_for("cuda", 2)


SYNC_BN_STEP = '''
import sys, torch
from torch import nn
from sdi.training import distributed

batch, weight, out = torch.load(sys.argv[1]), torch.load(sys.argv[2]), sys.argv[3]
with distributed.process_group("cpu"):
    rank, world = distributed.rank(), distributed.world_size()
    bn = distributed.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), "cpu")[0]
    x = batch.chunk(world)[rank].clone().requires_grad_()
    y = bn(x)
    (y * weight.chunk(world)[rank]).sum().backward()
    parts = distributed.all_gather_object((y.detach(), x.grad, bn.weight.grad, bn.running_mean, bn.running_var))
    if rank == 0:
        torch.save({"type": type(bn).__name__, "parts": parts}, out)
# as sdi.training.distributed.main_of: no interpreter teardown (gloo's threads can abort it under load)
import os
os._exit(0)
'''


def test_sync_batchnorm_on_cpu_equals_batchnorm_on_the_global_batch(tmp_path):
    """torch's SyncBatchNorm has GPU kernels only; the CPU form must give BatchNorm over the global batch."""
    gen = torch.Generator().manual_seed(0)
    batch, weight = torch.randn(6, 3, 4, 4, generator=gen) * 3 + 1, torch.randn(6, 3, 4, 4, generator=gen)
    torch.save(batch, tmp_path / "batch.pt")
    torch.save(weight, tmp_path / "weight.pt")
    (tmp_path / "step.py").write_text(SYNC_BN_STEP)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                    f"--log-dir={tmp_path / 'torchrun'}", str(tmp_path / "step.py"), str(tmp_path / "batch.pt"),
                    str(tmp_path / "weight.pt"), str(tmp_path / "out.pt")],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=REPO)
    result = torch.load(tmp_path / "out.pt")
    assert result["type"] == "CPUSyncBatchNorm"

    bn = torch.nn.BatchNorm2d(3)
    x = batch.clone().requires_grad_()
    y = bn(x)
    (y * weight).sum().backward()
    parts = result["parts"]
    torch.testing.assert_close(torch.cat([p[0] for p in parts]), y.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([p[1] for p in parts]), x.grad, atol=1e-5, rtol=1e-5)
    # each rank holds its share of the parameter gradient (DDP sums them); both ranks agree on the stats
    torch.testing.assert_close(parts[0][2] + parts[1][2], bn.weight.grad, atol=1e-5, rtol=1e-5)
    for rank in (0, 1):
        torch.testing.assert_close(parts[rank][3], bn.running_mean)
        torch.testing.assert_close(parts[rank][4], bn.running_var)


# --------------------------------------------------------------------------- classifier
def test_classifier_on_two_processes(digits_split, tmp_path, capsys, caplog):
    """The workflow's classifier job (rule train_classifier) in two torchrun processes."""
    caplog.set_level(logging.INFO, logger="sdi.training.distributed")
    split = tmp_path / "split"
    split.mkdir()
    for name in ("train", "val", "test"):
        digits_split[name].to_parquet(split / f"{name}.parquet", index=False)
    out = tmp_path / "clf"
    job = {"split": str(split), "training_set": {}, "out_dir": str(out), "tracking": None,
           "settings": {"epochs": 2, "batch_size": 16, "resize": 36, "crop": 32, "seed": 0, "device": "cpu",
                        "num_workers": 0}}
    distributed.launch("sdi.training.classifier", job, 2)
    output = capsys.readouterr().err
    # the rule's log holds the job as torchrun's processes got it, to rerun it by hand
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sdi.training.classifier job ")]
    assert len(logged) == 1 and json.loads(logged[0].split("'<job>'): ", 1)[1]) == job

    # one set of files, written once (rank 0), nothing half-written
    assert sorted(p.name for p in out.iterdir()) == ["best", "last", "log.csv", "metrics.json", "train_set.parquet"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert pd.read_csv(out / "log.csv").epoch.tolist() == [1, 2]
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["rng"][0] != state["rng"][1]
    assert not any(k.startswith("module.") for k in load_file(out / "last" / "model.safetensors"))  # loads bare

    # metrics of the whole val/test sets, gathered from both ranks
    test, train = digits_split["test"], digits_split["train"]
    assert metrics["processes"] == 2 and metrics["n"] == len(test)
    assert sum(map(sum, metrics["confusion"])) == len(test)
    # both ranks trained every epoch, each on half of the (padded) training set
    half = math.ceil(len(train) / 2)
    assert metrics["train_images_per_epoch"] == 2 * half
    seen = rank_lines(output, r"train: \d+ images on this process")
    assert seen == {rank: [f"epoch {e}/2 train: {half} images on this process" for e in (1, 2)] for rank in (0, 1)}
    # SyncBatchNorm (all 53 BatchNorm layers of ResNet50; its CPU form here) inside DistributedDataParallel
    assert rank_lines(output, "SyncBatchNorm") == {0: ["DistributedDataParallel over 2 processes, "
                                                       "53 CPUSyncBatchNorm layers"]}


def test_a_failing_process_fails_the_launch(tmp_path):
    job = {"split": str(tmp_path / "missing"), "training_set": {}, "out_dir": str(tmp_path / "clf"),
           "settings": {"device": "cpu"}}
    with pytest.raises(RuntimeError, match="sdi.training.classifier: 2 training processes"):
        distributed.launch("sdi.training.classifier", job, 2)


# --------------------------------------------------------------------------- projector
def test_projector_on_two_processes(tiny_models, digits_split, tmp_path, capsys):
    """The workflow's projector job (rule train_projector) in two torchrun processes."""
    from sdi.models.projector import SemanticProjector
    from sdi.training.projector import STATE_FILE

    manifest = tmp_path / "train.parquet"
    digits_split["train"].head(16).to_parquet(manifest, index=False)
    out = tmp_path / "proj"
    job = {"manifest": str(manifest), "sd_path": str(tiny_models["sd"]), "clip_path": str(tiny_models["clip"]),
           "out_dir": str(out), "tracking": None,
           "settings": {"epochs": 2, "batch_size": 4, "checkpoint_every": 1, "seed": 0, "device": "cpu"}}
    distributed.launch("sdi.training.projector", job, 2)
    output = capsys.readouterr().err

    # 16 images, 4 per process and step, 2 processes: 2 steps per epoch
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-epoch1", "checkpoint-epoch2", "loss.csv",
                                                     "projector"]
    loss = pd.read_csv(out / "loss.csv")
    assert loss.step.tolist() == [1, 2, 3, 4] and loss.epoch.tolist() == [1, 1, 2, 2]
    assert all(math.isfinite(v) and v > 0 for v in loss.loss)
    assert json.loads((out / "checkpoint-epoch2" / STATE_FILE).read_text())["global_step"] == 4
    trained = SemanticProjector.from_pretrained(out / "projector").state_dict()
    assert all(torch.equal(v, trained[k])
               for k, v in SemanticProjector.from_pretrained(out / "checkpoint-epoch2").state_dict().items())
    seen = rank_lines(output, r"images on this process")
    assert seen == {rank: [f"epoch {e}/2: 8 images on this process" for e in (1, 2)] for rank in (0, 1)}
    assert rank_lines(output, "training the projector") == {0: [
        "training the projector: 16 images, 2 epochs x 2 steps, batch 4 x 2 process(es), image size 64, "
        "mixed precision no, device cpu"]}
