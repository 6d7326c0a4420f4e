"""Model folders as downloads contain them, and broken ones, on tiny models in the hub's layouts.

What loads: model_index.json naming the safety checker or [null, null]; plain and/or fp16
variant weights; .safetensors and/or .bin. What fails before any job, naming the folder, the
file and the fix: a missing variant file, a truncated (half-downloaded) weight file, and
models whose dimensions differ from those of a trained projector.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sdi.models.folders import (
    ModelFolderError,
    check_projector_fits,
    check_weight_file,
    model_dims,
    projector_fit_errors,
    sd_weights_variant,
)
from sdi.models.loaders import load_clip, load_clip_vision, load_sd_pipeline
from sdi.models.projector import SemanticProjector
from sdi.models.random_models import TINY_WIDTH, build_random_clip, build_random_sd

from helpers import edit_config, run_snakemake

UNET_FP16 = "unet/diffusion_pytorch_model.fp16.safetensors"


@pytest.fixture(scope="module")
def hub_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny SD and CLIP in the hub's layout: safety checker named, fp32 + fp16, safetensors + bin."""
    root = tmp_path_factory.mktemp("hub")
    return {"sd": build_random_sd(root / "sd", "tiny", precisions=("fp32", "fp16"), formats=("safetensors", "bin")),
            "clip": build_random_clip(root / "clip", "tiny", formats=("safetensors", "bin"))}


def _copy(src: Path, dest: Path, drop: str | None = None) -> Path:
    """Copy a model folder, leaving out files whose name matches the glob drop."""
    shutil.copytree(src, dest)
    for path in dest.rglob(drop) if drop else []:
        path.unlink()
    return dest


def _unet_weight(pipe) -> torch.Tensor:
    return pipe.unet.conv_in.weight.detach()


def test_hub_layout_has_the_files_downloads_have(hub_models):
    sd, clip = hub_models["sd"], hub_models["clip"]
    index = json.loads((sd / "model_index.json").read_text())
    assert index["safety_checker"] == ["stable_diffusion", "StableDiffusionSafetyChecker"]
    assert index["feature_extractor"] == ["transformers", "CLIPImageProcessor"]
    assert index["scheduler"] == ["diffusers", "PNDMScheduler"]
    for name in ("feature_extractor/preprocessor_config.json", "safety_checker/config.json",
                 "unet/diffusion_pytorch_model.safetensors", UNET_FP16, "unet/diffusion_pytorch_model.fp16.bin",
                 "vae/diffusion_pytorch_model.bin", "text_encoder/model.fp16.safetensors",
                 "text_encoder/pytorch_model.bin", "tokenizer/vocab.json", "tokenizer/merges.txt"):
        assert (sd / name).is_file(), name
    for name in ("config.json", "model.safetensors", "pytorch_model.bin", "preprocessor_config.json"):
        assert (clip / name).is_file(), name
    # The preprocessor config in the hub's legacy format (size 224 -> here the tiny 32).
    assert json.loads((clip / "preprocessor_config.json").read_text())["feature_extractor_type"] == \
        "CLIPFeatureExtractor"
    plain = load_file(sd / "unet/diffusion_pytorch_model.safetensors")
    half = load_file(sd / UNET_FP16)
    assert all(half[k].dtype == torch.float16 and torch.equal(half[k], plain[k].half()) for k in plain)


def test_safety_checker_named_or_null_is_never_loaded(hub_models, tmp_path):
    pipe = load_sd_pipeline(hub_models["sd"])
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert sd_weights_variant(hub_models["sd"]) is None  # plain files present: they are loaded
    reference = _unet_weight(pipe)
    null = _copy(hub_models["sd"], tmp_path / "null")
    shutil.rmtree(null / "safety_checker")
    shutil.rmtree(null / "feature_extractor")
    index = json.loads((null / "model_index.json").read_text())
    index.update(safety_checker=[None, None], feature_extractor=[None, None])
    (null / "model_index.json").write_text(json.dumps(index))
    torch.testing.assert_close(_unet_weight(load_sd_pipeline(null)), reference, rtol=0, atol=0)
    # A safety_checker/ folder with its config only (what the full-size builder writes) is fine too.
    config_only = _copy(hub_models["sd"], tmp_path / "config-only")
    for path in (config_only / "safety_checker").glob("*model*"):
        path.unlink()
    assert [p.name for p in (config_only / "safety_checker").iterdir()] == ["config.json"]
    assert load_sd_pipeline(config_only).safety_checker is None


def test_fp16_only_download_loads_in_any_dtype(hub_models, tmp_path):
    sd = _copy(hub_models["sd"], tmp_path / "sd", drop="*model.safetensors")
    for path in sd.rglob("*model.bin"):
        path.unlink()
    assert sd_weights_variant(sd) == "fp16"
    reference = load_file(hub_models["sd"] / UNET_FP16)["conv_in.weight"]
    for dtype in (torch.float32, torch.bfloat16):
        pipe = load_sd_pipeline(sd, dtype=dtype)
        assert pipe.unet.dtype == pipe.text_encoder.dtype == pipe.vae.dtype == dtype
        torch.testing.assert_close(_unet_weight(pipe), reference.to(dtype), rtol=0, atol=0)


def test_bin_only_folders_load(hub_models, tmp_path):
    sd = _copy(hub_models["sd"], tmp_path / "sd", drop="*.safetensors")
    clip = _copy(hub_models["clip"], tmp_path / "clip", drop="*.safetensors")
    torch.testing.assert_close(_unet_weight(load_sd_pipeline(sd)), _unet_weight(load_sd_pipeline(hub_models["sd"])),
                               rtol=0, atol=0)
    a = load_clip(clip)[0].visual_projection.weight
    b = load_clip_vision(hub_models["clip"])[0].visual_projection.weight
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert model_dims(sd, clip).d_clip == TINY_WIDTH


def test_missing_variant_file_is_named(hub_models, tmp_path):
    sd = _copy(hub_models["sd"], tmp_path / "sd", drop="*model.safetensors")
    for path in sd.rglob("*model*.bin"):
        path.unlink()
    (sd / UNET_FP16).unlink()
    with pytest.raises(ModelFolderError) as err:
        model_dims(sd, hub_models["clip"])
    message = str(err.value)
    assert f"models.sd: folder {sd} is incomplete, missing {UNET_FP16} (the fp16 variant the other " \
           "components have)" in message
    assert "download it into that folder" in message


def test_mixed_variants_without_plain_files_are_named(hub_models, tmp_path):
    sd = _copy(hub_models["sd"], tmp_path / "sd", drop="*.bin")
    (sd / "unet/diffusion_pytorch_model.safetensors").unlink()
    (sd / UNET_FP16).rename(sd / "unet/diffusion_pytorch_model.non_ema.safetensors")
    (sd / "text_encoder/model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match=r"mixes weight variants .*unet/ has non_ema; text_encoder/ has fp16"):
        load_sd_pipeline(sd)


@pytest.mark.parametrize("cut", ["data", "header"])
def test_truncated_safetensors_is_named(hub_models, tmp_path, cut):
    sd = _copy(hub_models["sd"], tmp_path / "sd")
    weights = sd / "unet/diffusion_pytorch_model.safetensors"
    size = weights.stat().st_size
    keep = size - 1000 if cut == "data" else 100
    with open(weights, "r+b") as fh:
        fh.truncate(keep)
    problem = check_weight_file(weights)
    assert problem and f"{keep:,} bytes" in problem
    with pytest.raises(ModelFolderError) as err:
        model_dims(sd, hub_models["clip"])
    assert f"models.sd: {weights} is truncated or corrupt" in str(err.value)
    assert "delete it and download it again" in str(err.value)
    assert check_weight_file(hub_models["sd"] / "unet/diffusion_pytorch_model.safetensors") is None


def test_truncated_clip_and_bin_files_are_named(hub_models, tmp_path):
    clip = _copy(hub_models["clip"], tmp_path / "clip")
    with open(clip / "model.safetensors", "r+b") as fh:
        fh.truncate(4)
    with pytest.raises(ModelFolderError, match=r"models\.clip: .*model\.safetensors is truncated .*shorter than the "
                                               r"8-byte safetensors header"):
        load_clip_vision(clip)
    sd = _copy(hub_models["sd"], tmp_path / "sd", drop="*.safetensors")
    weights = sd / "vae/diffusion_pytorch_model.bin"
    with open(weights, "r+b") as fh:
        fh.truncate(weights.stat().st_size // 2)
    with pytest.raises(ModelFolderError, match=r"diffusion_pytorch_model\.bin is truncated .*not a complete zip"):
        load_sd_pipeline(sd)


def _projector(folder: Path, d_clip: int, d_cross: int) -> Path:
    SemanticProjector(d_clip, d_cross, hidden_dim=8).save_pretrained(folder)
    return folder


def test_models_must_fit_the_trained_projector(tiny_models, tmp_path):
    sd, clip = tiny_models["sd"], tiny_models["clip"]
    check_projector_fits(_projector(tmp_path / "fits", TINY_WIDTH, TINY_WIDTH), sd, clip)
    sd15 = _projector(tmp_path / "sd15" / "final", TINY_WIDTH, 768)
    with pytest.raises(ModelFolderError) as err:
        check_projector_fits(sd15, sd, clip)
    assert f"{sd15}/config.json: the projector does not fit the models: it was trained for d_cross=768 but " \
           f"models.sd={sd} has cross_attention_dim {TINY_WIDTH}" in str(err.value)
    assert f"or delete {sd15.parent} to train a new projector" in str(err.value)
    vit_b = _projector(tmp_path / "vit-b", 512, TINY_WIDTH)
    with pytest.raises(ModelFolderError, match=rf"trained for d_clip=512 but models\.clip={clip} has projection_dim "
                                               rf"{TINY_WIDTH}"):
        check_projector_fits(vit_b, sd, clip)
    models = {"sd": sd, "clip": clip, "vae": None}
    assert projector_fit_errors(models, {"a": tmp_path / "fits", "b": tmp_path / "missing"}) == []
    assert len(projector_fit_errors(models, {"a": sd15, "b": vit_b})) == 2


@pytest.mark.workflow
def test_broken_model_folders_fail_before_any_job(workflow, tiny_models, hub_models, tmp_path):
    """The workflow checks model folders and trained projectors when it builds the DAG."""
    sd = _copy(hub_models["sd"], tmp_path / "sd")
    edit_config(workflow, models={"tiny": False, "sd": str(sd), "clip": str(hub_models["clip"])})
    weights = sd / "text_encoder/model.safetensors"
    with open(weights, "r+b") as fh:
        fh.truncate(weights.stat().st_size - 10)
    proc = run_snakemake(workflow, "--cores", "1", "-n", "all", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"config.models.sd: {weights} is truncated or corrupt" in output, output[-3000:]
    shutil.copy2(hub_models["sd"] / "text_encoder/model.safetensors", weights)

    projector = _projector(workflow / "results" / "demo" / "projector" / "final", TINY_WIDTH, 768)
    proc = run_snakemake(workflow, "--cores", "1", "-n", "all", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert projector.is_dir()
    assert "results/demo/projector/final/config.json: the projector does not fit the models: it was trained for " \
        "d_cross=768" in output, output[-3000:]
    assert "Job stats" not in output
