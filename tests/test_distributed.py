"""Multi-process (DDP) training on the CPU: two gloo processes started by the package itself,
as a job given two GPUs would start two NCCL ones (sdi.distributed)."""

from __future__ import annotations

import json
import logging
import math
import re

import pandas as pd
import pytest
import torch
from torch import nn

from sdi import distributed

# The heavy modules are imported inside the tests: a worker process imports this module to
# find its function, and importing diffusers twice more would double the SyncBatchNorm test.


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two processes on a 2-core machine: one intra-op thread each (launch shares the caller's out)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def rank_lines(caplog, pattern: str) -> dict[int, list[str]]:
    """{rank: messages matching pattern} among the records the workers sent back."""
    out: dict[int, list[str]] = {}
    for record in caplog.records:
        m = re.match(r"\[rank (\d)/2\] (.*)", record.getMessage())
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


def _sync_bn_step(batch: torch.Tensor, weight: torch.Tensor) -> dict:
    """One training forward/backward of SyncBatchNorm on this rank's half of ``batch``."""
    rank, world = distributed.rank(), distributed.world_size()
    bn = distributed.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), "cpu")[0]
    x = batch.chunk(world)[rank].clone().requires_grad_()
    y = bn(x)
    (y * weight.chunk(world)[rank]).sum().backward()
    return {"type": type(bn).__name__, "parts": distributed.all_gather_object(
        (y.detach(), x.grad, bn.weight.grad, bn.running_mean, bn.running_var))}


def test_sync_batchnorm_on_cpu_equals_batchnorm_on_the_global_batch():
    gen = torch.Generator().manual_seed(0)
    batch, weight = torch.randn(6, 3, 4, 4, generator=gen) * 3 + 1, torch.randn(6, 3, 4, 4, generator=gen)
    result = distributed.launch(_sync_bn_step, {"batch": batch, "weight": weight}, 2, device="cpu")
    assert result["type"] == "CPUSyncBatchNorm"

    bn = nn.BatchNorm2d(3)
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
def test_classifier_on_two_processes(digits_split, tmp_path, caplog):
    from sdi.classifier import train_classifier

    caplog.set_level(logging.INFO)
    train, val, test = digits_split["train"], digits_split["val"], digits_split["test"]
    out = tmp_path / "clf"
    metrics = train_classifier(train, val, test, out, num_classes=10, epochs=2, batch_size=16, resize=36, crop=32,
                               seed=0, device="cpu", num_workers=0, processes=2)

    # one set of files, written once (rank 0), nothing half-written
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "log.csv", "metrics.json",
                                                     "train_set.parquet"]
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert pd.read_csv(out / "log.csv").epoch.tolist() == [1, 2]
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["world_size"] == 2 and len(last["rng_per_rank"]) == 2
    assert not any(k.startswith("module.") for k in last["model"])  # the bare model: loads without DDP

    # metrics of the whole val/test sets, gathered from both ranks
    assert metrics["processes"] == 2 and metrics["n"] == len(test)
    assert sum(map(sum, metrics["confusion"])) == len(test)
    # both ranks trained every epoch, each on half of the (padded) training set
    half = math.ceil(len(train) / 2)
    assert metrics["train_images_per_epoch"] == 2 * half
    seen = rank_lines(caplog, r"train: \d+ images on this process")
    assert sorted(seen) == [0, 1]
    for rank in (0, 1):
        assert seen[rank] == [f"epoch {e}/2 train: {half} images on this process" for e in (1, 2)]
    # SyncBatchNorm (all 53 BatchNorm layers of ResNet50; its CPU form here) inside DistributedDataParallel
    assert rank_lines(caplog, "SyncBatchNorm")[0] == ["DistributedDataParallel over 2 processes, "
                                                      "53 CPUSyncBatchNorm layers"]


# --------------------------------------------------------------------------- projector
def test_projector_on_two_processes(tiny_models, digits_split, tmp_path, caplog):
    from sdi.projector import SemanticProjector
    from sdi.train_projector import STATE_FILE, train_projector

    caplog.set_level(logging.INFO)
    manifest = digits_split["train"].head(16)
    out = tmp_path / "proj"
    result = train_projector(manifest, tiny_models["sd"], tiny_models["clip"], out, epochs=2, batch_size=4,
                             checkpoint_every=1, seed=0, device="cpu", processes=2)

    # 16 images, 4 per process and step, 2 processes: 2 steps per epoch
    assert result.global_step == 4 and result.resumed_from == 0
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-epoch1", "checkpoint-epoch2", "loss.csv",
                                                     "projector"]
    loss = pd.read_csv(out / "loss.csv")
    assert loss.step.tolist() == [1, 2, 3, 4] and loss.epoch.tolist() == [1, 1, 2, 2]
    assert all(math.isfinite(v) and v > 0 for v in loss.loss)
    state = torch.load(out / "checkpoint-epoch2" / STATE_FILE, weights_only=True)
    assert state["global_step"] == 4
    trained = SemanticProjector.from_pretrained(out / "projector").state_dict()
    assert all(torch.equal(v, trained[k])
               for k, v in SemanticProjector.from_pretrained(out / "checkpoint-epoch2").state_dict().items())
    seen = rank_lines(caplog, r"images on this process")
    assert seen == {rank: [f"epoch {e}/2: 8 images on this process" for e in (1, 2)] for rank in (0, 1)}
