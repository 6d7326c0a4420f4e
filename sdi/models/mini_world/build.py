"""Building a mini world: :func:`build_world` (CLIP trained in a second process meanwhile, see
``__main__.py``) and :func:`ensure_mini_world`, the cached build checked on every use."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from sdi.data import mini_corpus as corpus
from sdi.models.mini_world.architectures import _tokenizer, clip_config
from sdi.models.mini_world.quality import _eval_set, clip_retrieval, vae_mse
from sdi.models.mini_world.recipe import RECIPE_VERSION, MiniWorldError, Recipe, _versions, recipe_hash
from sdi.models.mini_world.store import MANIFEST, MiniWorld, _files, save_world, verify_world, world_folder
from sdi.models.mini_world.training import deterministic, train_clip, train_unet, train_vae


def build_world(folder: str | Path, recipe: Recipe = Recipe(), log=print, *,  # noqa: B008 (a frozen dataclass)
                parallel: bool = True) -> dict:
    """Train the mini world of recipe and write it into folder (which must not exist); returns the manifest.

    parallel: train CLIP in a second Python process while the VAE trains (same weights either way).

    The manifest (written last) holds the recipe, its hash, every file's size and sha256, the
    seconds per stage and the cheap quality numbers (VAE MSE, CLIP retrieval on held-out digits).
    Not atomic by itself: :func:`ensure_mini_world` builds into a temporary folder.
    """
    folder = Path(folder)
    if folder.exists():
        raise MiniWorldError(f"{folder}: exists; build_world writes a new folder")
    seconds: dict[str, float] = {}
    with deterministic(recipe.threads):
        start = time.perf_counter()
        digits, labels = corpus.load_mnist()
        split = corpus.source_split(labels)
        world_digits, world_labels = digits[split["world"]], labels[split["world"]]
        tokenizer = _tokenizer()
        seconds["data"] = time.perf_counter() - start
        # CLIP and the VAE do not depend on each other: CLIP trains in a second process meanwhile
        # (its own seed and threads, so the weights are those of a sequential build).
        clip_job = _ClipJob(recipe, folder.parent) if parallel else None
        start = time.perf_counter()
        vae = train_vae(recipe, world_digits, world_labels, log)
        seconds["vae"] = time.perf_counter() - start
        log(f"vae: {seconds['vae']:.0f} s")
        start = time.perf_counter()
        if clip_job:
            clip, seconds["clip"] = clip_job.result()
            seconds["clip_wait"] = time.perf_counter() - start
        else:
            clip = train_clip(recipe, world_digits, world_labels, tokenizer, log)
            seconds["clip"] = time.perf_counter() - start
        log(f"clip: {seconds['clip']:.0f} s")
        start = time.perf_counter()
        with deterministic(recipe.unet_threads):
            unet = train_unet(recipe, vae, clip.text_model, tokenizer, world_digits, world_labels, log)
        seconds["unet"] = time.perf_counter() - start
        log(f"unet: {seconds['unet']:.0f} s")
        start = time.perf_counter()
        held_out = _eval_set(digits, labels, split["judge"], seed=recipe.seed + 4, n=recipe.eval_digits)
        quality = {"vae_mse": vae_mse(vae, held_out[0]),
                   "clip_retrieval": clip_retrieval(clip, tokenizer, *held_out)}
        seconds["quality"] = time.perf_counter() - start
        start = time.perf_counter()
        save_world(folder, vae, clip, unet)
        seconds["save"] = time.perf_counter() - start
    manifest = {"recipe": asdict(recipe), "recipe_hash": recipe_hash(recipe), "recipe_version": RECIPE_VERSION,
                "libraries": _versions(), "seconds": seconds, "quality": quality, "files": _files(folder)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


class _ClipJob:
    """``python -m sdi.models.mini_world clip`` in the background: CLIP of recipe, its weights in a file under tmp."""

    def __init__(self, recipe: Recipe, tmp: Path):
        import subprocess
        import sys

        self.out = Path(tempfile.mkdtemp(prefix="clip-", dir=tmp))
        self.log = open(self.out / "log.txt", "w")  # noqa: SIM115 (closed in result())
        # the child imports this very sdi package, wherever it is installed or checked out
        package_root = str(Path(__file__).resolve().parents[3])  # the folder that holds sdi/
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH"))
                                                            if p)}
        self.proc = subprocess.Popen([sys.executable, "-m", "sdi.models.mini_world", "clip", json.dumps(asdict(recipe)),
                                      str(self.out)], stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def result(self):
        from safetensors.torch import load_file
        from transformers import CLIPModel

        code = self.proc.wait()
        self.log.close()
        if code != 0:
            raise MiniWorldError(f"training the mini CLIP failed (exit {code}); its log:\n"
                                 + (self.out / "log.txt").read_text()[-3000:])
        model = CLIPModel(clip_config(Recipe(**json.loads((self.out / "recipe.json").read_text()))))
        model.load_state_dict(load_file(self.out / "clip.safetensors"))
        seconds = float((self.out / "seconds.txt").read_text())
        shutil.rmtree(self.out, ignore_errors=True)
        return model.eval().requires_grad_(False), seconds


def _exit_with_parent() -> None:
    """End this process when the build that started it is gone (killed), instead of training on as an orphan."""
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _clip_main(recipe_json: str, out: str) -> None:
    from safetensors.torch import save_file

    _exit_with_parent()
    recipe = Recipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(recipe_json).items()})
    with deterministic(recipe.threads):
        start = time.perf_counter()
        digits, labels = corpus.load_mnist()
        world = corpus.source_split(labels)["world"]
        model = train_clip(recipe, digits[world], labels[world], _tokenizer())
        seconds = time.perf_counter() - start
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, Path(out) / "clip.safetensors")
    (Path(out) / "recipe.json").write_text(recipe_json)
    (Path(out) / "seconds.txt").write_text(f"{seconds}\n")


def ensure_mini_world(root: str | Path, recipe: Recipe = Recipe(), *, rebuild: bool = True,  # noqa: B008 (frozen)
                      log=print) -> MiniWorld:
    """The world of recipe under root: checked if present, else built (into a temporary folder under
    root, renamed into place only when complete).

    A folder that fails :func:`verify_world` is removed and built again (rebuild=True) or reported
    (MiniWorldError naming the file, rebuild=False). Temporary folders of killed builds
    (``.building-*``) are never read; they are removed once their builder is gone.
    """
    root = Path(root)
    final = world_folder(root, recipe)
    if final.exists():
        try:
            return MiniWorld(final, verify_world(final, recipe))
        except MiniWorldError as exc:
            if not rebuild:
                raise
            log(f"rebuilding the mini world: {exc}")
            shutil.rmtree(final)
    root.mkdir(parents=True, exist_ok=True)
    _remove_dead_builds(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".building-{os.getpid()}-", dir=root))
    try:
        manifest = build_world(tmp / "world", recipe, log)
        try:
            os.rename(tmp / "world", final)
        except OSError:
            if not final.exists():
                raise
            # another build of the same recipe finished first: keep that one
            return MiniWorld(final, verify_world(final, recipe))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return MiniWorld(final, manifest)


def _remove_dead_builds(root: Path) -> None:
    for tmp in root.glob(".building-*"):
        try:
            pid = int(tmp.name.split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue
