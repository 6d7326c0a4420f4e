"""A miniature Stable Diffusion and CLIP, trained here on the CPU from :mod:`sdi.data.mini_corpus`.

The tiny random models (:mod:`sdi.models.tiny`) check that the code runs; their images are
noise. The mini world's models are trained, so the method's effects can be seen and measured:

- **CLIP** (``clip/``, the clip-vit-large-patch14 layout): a ``CLIPModel``, image and text
  towers, trained contrastively on coloured digits and their captions (the real CLIP BPE
  tokenizer). Captions leave attributes out at random, so a caption is a positive for every image
  it describes: the loss's targets are spread over all such pairs in the batch.
- **Stable Diffusion** (``sd/``, what ``StableDiffusionPipeline.save_pretrained`` writes without a
  safety checker): an ``AutoencoderKL`` (32x32 RGB <-> 8x8x4, its ``scaling_factor`` measured as
  SD's was), a ``UNet2DConditionModel`` trained on the latents with the frozen CLIP text tower's
  ``last_hidden_state`` (77 tokens, as the pipeline passes them), that text tower as the
  pipeline's ``text_encoder`` and the method's DDIM scheduler. Captions are dropped (to ``""`` or
  the method's negative prompt, which is what the pipeline's classifier-free guidance uses as
  the unconditional branch) with probability ``unet_drop_prob``.

Everything is trained from :class:`Recipe` alone, deterministically (fixed seeds and thread
count, ``torch.use_deterministic_algorithms``). :func:`ensure_mini_world` builds a world once per
recipe into ``{root}/{recipe hash}/`` (a temporary folder renamed into place when complete, with
a manifest of every file's size and sha256) and checks it on every later use: a partial or corrupt
world is never trusted.

Modules: :mod:`.recipe` (the recipe and its hash), :mod:`.architectures` (the models' configurations,
the tokenizer), :mod:`.training` (the three training loops, determinism), :mod:`.quality` (the
manifest's quality numbers), :mod:`.store` (saving, the manifest, checking a world folder),
:mod:`.build` (the build, CLIP in a second process, the cached build) and ``__main__`` (that second
process: ``python -m sdi.models.mini_world clip ...``).
"""

from sdi.models.mini_world.architectures import clip_config, unet_config, vae_config
from sdi.models.mini_world.build import build_world, ensure_mini_world
from sdi.models.mini_world.quality import clip_retrieval, vae_mse
from sdi.models.mini_world.recipe import RECIPE_VERSION, MiniWorldError, Recipe, recipe_hash
from sdi.models.mini_world.store import MANIFEST, MiniWorld, save_world, verify_world, world_folder
from sdi.models.mini_world.training import caption_states, deterministic, train_clip, train_unet, train_vae

__all__ = [
    "MANIFEST",
    "RECIPE_VERSION",
    "MiniWorld",
    "MiniWorldError",
    "Recipe",
    "build_world",
    "caption_states",
    "clip_config",
    "clip_retrieval",
    "deterministic",
    "ensure_mini_world",
    "recipe_hash",
    "save_world",
    "train_clip",
    "train_unet",
    "train_vae",
    "unet_config",
    "vae_config",
    "vae_mse",
    "verify_world",
    "world_folder",
]
