"""Semantic projector, conditioning and projector training (docs/method.md section 2), on tiny models."""

from __future__ import annotations

import json
import logging
import math

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer

from sdi import PROMPT
from sdi.io.images import load_rgb
from sdi.models.conditioning import prompt_hidden_states, replace_placeholder
from sdi.models.loaders import load_sd_pipeline
from sdi.models.projector import SemanticProjector
from sdi.training.data import image_transform
from sdi.training.projector import (
    STATE_FILE,
    drop_embeddings,
    load_frozen_models,
    projector_loss,
    train_projector,
)


def test_projector_size_and_roundtrip(tmp_path):
    projector = SemanticProjector(d_clip=768, d_cross=768, hidden_dim=1024)
    assert sum(p.numel() for p in projector.parameters()) == 1_574_656
    projector.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / "config.json").is_file()
    assert list((tmp_path / "p").glob("*.safetensors"))
    loaded = SemanticProjector.from_pretrained(tmp_path / "p")
    x = torch.randn(3, 768)
    assert torch.equal(loaded(x), projector(x))
    assert loaded(x).shape == (3, 768)
    with pytest.raises(ValueError, match="d_clip"):
        loaded(torch.randn(3, 32))


def test_placeholder_replaced_at_class_token(tiny_models):
    sd = tiny_models["sd"]
    tokenizer = CLIPTokenizer.from_pretrained(sd / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(sd / "text_encoder").eval()
    hidden, position = prompt_hidden_states(tokenizer, text_encoder)
    assert position == 7
    assert hidden.shape == (1, 77, 32)
    # The same hidden states as the diffusers pipeline's own prompt encoding.
    pipe = load_sd_pipeline(sd)
    reference, _ = pipe.encode_prompt(PROMPT, "cpu", 1, False)
    torch.testing.assert_close(hidden, reference)

    torch.manual_seed(0)
    projector = SemanticProjector(32, 32, 64)
    vectors = projector(torch.randn(3, 32))
    before = hidden.clone()
    cond = replace_placeholder(hidden, vectors, position)
    assert cond.shape == (3, 77, 32)
    others = [i for i in range(77) if i != 7]
    for b in range(3):
        assert torch.equal(cond[b, others], hidden[0, others])
        assert torch.equal(cond[b, 7], vectors[b])
    assert torch.equal(hidden, before)  # out of place
    cond.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector.parameters())


def test_drop_embeddings_fraction():
    gen = torch.Generator().manual_seed(0)
    embeds = torch.randn(10_000, 8) + 5.0  # no row is zero by chance
    dropped = drop_embeddings(embeds, 0.05, gen)
    zero_rows = (dropped == 0).all(dim=1)
    assert abs(zero_rows.float().mean().item() - 0.05) < 0.01  # sd 0.0022
    assert torch.equal(dropped[~zero_rows], embeds[~zero_rows])
    assert torch.equal(drop_embeddings(embeds, 0.0, gen), embeds)
    assert (drop_embeddings(embeds, 1.0, gen) == 0).all()
    assert (embeds != 0).all()  # the input is untouched
    with pytest.raises(ValueError, match="drop_prob"):
        drop_embeddings(embeds, 1.5, gen)


def test_optimizer_step_changes_only_the_projector(tiny_models, digits_split):
    frozen = load_frozen_models(tiny_models["sd"])
    modules = {"vae": frozen.vae, "unet": frozen.unet, "text_encoder": frozen.text_encoder}
    for name, module in modules.items():
        assert not module.training, name
        assert not any(p.requires_grad for p in module.parameters()), name
    snapshot = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in modules.items()}
    hidden_before = frozen.prompt_hidden.clone()

    torch.manual_seed(0)
    projector = SemanticProjector(32, 32, 64)
    proj_before = {k: v.clone() for k, v in projector.state_dict().items()}
    optimizer = torch.optim.AdamW(projector.parameters(), lr=5e-4, weight_decay=0.01)
    transform = image_transform(64)
    pixels = torch.stack([transform(load_rgb(p)) for p in digits_split["train"].path[:4]])
    assert pixels.shape == (4, 3, 64, 64) and pixels.min() >= -1 and pixels.max() <= 1
    loss = projector_loss(projector, frozen, pixels, torch.randn(4, 32), drop_prob=0.05,
                          generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    optimizer.step()

    for name, module in modules.items():
        assert all(p.grad is None for p in module.parameters()), name
        for k, v in module.state_dict().items():
            assert torch.equal(v, snapshot[name][k]), f"{name}.{k} changed"
    assert torch.equal(frozen.prompt_hidden, hidden_before)
    changed = [k for k, v in projector.state_dict().items() if not torch.equal(v, proj_before[k])]
    assert sorted(changed) == sorted(proj_before)


def _weights(folder) -> dict[str, torch.Tensor]:
    return SemanticProjector.from_pretrained(folder).state_dict()


def test_training_checkpoints_and_resume(tiny_models, digits_split, tmp_path, caplog):
    manifest = digits_split["train"].head(16)
    args = (manifest, tiny_models["sd"], tiny_models["clip"])
    kw = {"batch_size": 8, "checkpoint_every": 1, "seed": 0, "device": "cpu"}

    # Two epochs from scratch.
    full = train_projector(*args, tmp_path / "full", epochs=2, **kw)
    out = tmp_path / "full"
    assert full.resumed_from == 0 and full.global_step == 4
    for name in ("checkpoint-epoch1", "checkpoint-epoch2", "projector"):
        assert (out / name / "config.json").is_file(), name
    assert not list(out.glob(".*")), "temporary folders left behind"
    loss = pd.read_csv(out / "loss.csv")
    assert list(loss.columns) == ["epoch", "step", "loss", "lr"]
    assert loss.epoch.tolist() == [1, 1, 2, 2] and loss.step.tolist() == [1, 2, 3, 4]
    assert all(math.isfinite(v) and v > 0 for v in loss.loss) and (loss.lr == 5e-4).all()
    state = json.loads((out / "checkpoint-epoch2" / STATE_FILE).read_text())
    assert state["epoch"] == 2 and state["global_step"] == 4
    assert {k.split(".", 1)[1] for k in load_file(out / "checkpoint-epoch2" / "optimizer.safetensors")} == {
        "step", "exp_avg", "exp_avg_sq"}  # AdamW's state, as safetensors
    torch.manual_seed(0)
    init = SemanticProjector(32, 32, 1024).state_dict()
    trained = _weights(out / "projector")
    assert all(not torch.equal(trained[k], init[k]) for k in init)
    assert all(torch.equal(trained[k], v) for k, v in _weights(out / "checkpoint-epoch2").items())

    # One epoch, then the same call with epochs=2 resumes at epoch 2.
    part_dir = tmp_path / "resumed"
    first = train_projector(*args, part_dir, epochs=1, **kw)
    assert first.resumed_from == 0 and first.global_step == 2
    assert not (part_dir / "checkpoint-epoch2").exists()
    first_loss = pd.read_csv(part_dir / "loss.csv")
    pd.testing.assert_frame_equal(first_loss, loss.iloc[:2])
    # Mark the history stored in the checkpoint: the resumed CSV must continue it, not recompute it.
    marked = first_loss.assign(loss=-1.0)
    marked.to_csv(part_dir / "checkpoint-epoch1" / "loss.csv", index=False)
    state1 = part_dir / "checkpoint-epoch1" / STATE_FILE
    mtime = state1.stat().st_mtime_ns

    # (with a DataLoader worker, as the workflow's jobs of 2+ threads have: the same batches)
    resumed = train_projector(*args, part_dir, epochs=2, num_workers=1, **kw)
    assert resumed.resumed_from == 1 and resumed.global_step == 4
    assert state1.stat().st_mtime_ns == mtime
    resumed_loss = pd.read_csv(part_dir / "loss.csv")
    assert resumed_loss.step.tolist() == [1, 2, 3, 4]
    assert (resumed_loss.loss[:2] == -1.0).all()
    pd.testing.assert_frame_equal(resumed_loss.iloc[2:], loss.iloc[2:])
    assert json.loads((part_dir / "checkpoint-epoch2" / STATE_FILE).read_text())["epoch"] == 2
    resumed_weights = _weights(part_dir / "projector")
    for k, v in trained.items():
        assert torch.equal(resumed_weights[k], v), k

    # Nothing left to do: the outputs are rewritten from the last checkpoint (here to another folder).
    again = train_projector(*args, part_dir, epochs=2, projector_dir=tmp_path / "elsewhere" / "final", **kw)
    assert again.resumed_from == 2 and again.global_step == 4
    assert again.projector_dir == tmp_path / "elsewhere" / "final"
    assert all(torch.equal(v, trained[k]) for k, v in _weights(again.projector_dir).items())
    # Other settings in the same folder: not resumed, with a warning naming the setting; the run starts
    # over and its checkpoints replace the old ones (the classifier's policy too, checkpoints.resumable).
    with caplog.at_level(logging.WARNING, logger="sdi.training.checkpoints"):
        other = train_projector(*args, part_dir, epochs=1, **{**kw, "lr": 1e-3})
    assert other.resumed_from == 0 and other.global_step == 2
    assert "lr: 0.0005 -> 0.001" in caplog.text
    assert json.loads((part_dir / "checkpoint-epoch1" / STATE_FILE).read_text())["settings"]["lr"] == 1e-3
