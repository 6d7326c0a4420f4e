import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from sdi.models.folders import ModelFolderError, model_dims
from sdi.models.loaders import load_clip, load_clip_vision, load_sd_pipeline
from sdi.models.tiny import TINY_IMAGE_SIZE, TINY_WIDTH


def test_folders_have_the_real_layouts(tiny_models):
    sd, clip = tiny_models["sd"], tiny_models["clip"]
    index = json.loads((sd / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert sub in index and (sd / sub).is_dir()
    assert list((sd / "unet").glob("*.safetensors"))
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt"):
        assert (clip / name).exists(), name


def test_scheduler_has_the_method_settings(tiny_models):
    sched = DDIMScheduler.from_pretrained(tiny_models["sd"], subfolder="scheduler")
    cfg = sched.config
    assert (cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end) == (1000, 0.00085, 0.012)
    assert cfg.beta_schedule == "scaled_linear" and not cfg.clip_sample and not cfg.set_alpha_to_one
    assert cfg.steps_offset == 1


def test_dims_fit_together(tiny_models):
    dims = model_dims(tiny_models["sd"], tiny_models["clip"])
    assert (dims.d_clip, dims.d_cross, dims.resolution) == (TINY_WIDTH, TINY_WIDTH, TINY_IMAGE_SIZE)


def test_pipeline_generates_from_prompt_embeds(tiny_models):
    pipe = load_sd_pipeline(tiny_models["sd"])
    embeds = torch.randn(2, 77, TINY_WIDTH)
    out = pipe(prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds), num_inference_steps=3,
               guidance_scale=2.0, output_type="np", generator=torch.Generator().manual_seed(0))
    images = out.images
    assert images.shape == (2, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3)
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert not np.allclose(images[0], images[1])


def test_clip_loads_as_vision_and_full_model(tiny_models):
    vision, processor = load_clip_vision(tiny_models["clip"])
    full, _, tokenizer = load_clip(tiny_models["clip"])
    pixels = processor(images=[np.zeros((40, 50, 3), np.uint8)], return_tensors="pt").pixel_values
    a = vision(pixel_values=pixels).image_embeds
    b = full(pixel_values=pixels, input_ids=tokenizer(["a photo"], return_tensors="pt").input_ids).image_embeds
    assert a.shape == (1, TINY_WIDTH)
    # The same weights serve both: the vision tower of the full model is the projector's CLIP.
    torch.testing.assert_close(torch.nn.functional.normalize(a, dim=-1), b)
    assert not any(p.requires_grad for p in vision.parameters())


def test_missing_and_incomplete_folders_name_the_key(tiny_models, tmp_path):
    with pytest.raises(ModelFolderError, match=r"models\.sd: folder .*nowhere does not exist"):
        load_sd_pipeline(tmp_path / "nowhere")
    broken = tmp_path / "sd"
    shutil.copytree(tiny_models["sd"], broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(ModelFolderError, match=r"models\.sd: .*missing unet/config\.json"):
        model_dims(broken, tiny_models["clip"])
    clip = tmp_path / "clip"
    shutil.copytree(tiny_models["clip"], clip)
    (clip / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match=r"models\.clip: .*<weights>"):
        load_clip(clip)


def test_mismatched_dimensions_are_reported(tiny_models, tmp_path):
    sd = tmp_path / "sd"
    shutil.copytree(tiny_models["sd"], sd)
    cfg_path = sd / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["cross_attention_dim"] = 64
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelFolderError, match="hidden_size 32 != UNet cross_attention_dim 64"):
        model_dims(sd, tiny_models["clip"])
