"""Build the mini world from scratch and measure it (bench/README.md, "mini_world.py").

Prints and writes (--out, JSON): build seconds per model and in all; VAE reconstruction MSE and
CLIP zero-shot retrieval (class, colours, stroke) on held-out digits; an independent judge's class
accuracy on held-out real digits and on text-prompted samples per guidance scale (prompt
"a photo of a digit X", the method's negative prompt, DDIM); for prompts naming a look of the
target dataset, the judge's class accuracy and the look judge's colour accuracy; with --twice,
whether a second build from the same recipe gives byte-identical files.

    .venv/bin/python bench/mini_world.py                     # build in a temporary folder
    .venv/bin/python bench/mini_world.py --root resources/models/mini --twice --out bench/measurements/mini_world.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sdi import NEGATIVE_PROMPT
from sdi.data import mini_corpus as corpus
from sdi.evaluation.judge import held_out_judge, judge_classes, judge_looks
from sdi.models.loaders import load_sd_pipeline
from sdi.models.mini_world import Recipe, build_world, ensure_mini_world


def generate(pipe, prompts: list[str], guidance: float, steps: int, seed: int, batch: int = 100) -> np.ndarray:
    """uint8 [N, 32, 32, 3] images of prompts (one per prompt), the method's negative prompt, seeded per batch."""
    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        gen = torch.Generator().manual_seed(seed + i)
        images = pipe(prompt=chunk, negative_prompt=[NEGATIVE_PROMPT] * len(chunk), guidance_scale=guidance,
                      num_inference_steps=steps, generator=gen, output_type="np").images
        out.append((images * 255 + 0.5).astype(np.uint8))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="cache folder for the world (default: a new temporary folder)")
    parser.add_argument("--seed", type=int, default=0, help="the recipe's seed")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every training step count (tests)")
    parser.add_argument("--per-class", type=int, default=30, help="samples per class and guidance scale")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps")
    parser.add_argument("--guidance", type=float, nargs="+", default=[2.0, 5.0, 7.5])
    parser.add_argument("--twice", action="store_true", help="build a second time and compare the files")
    parser.add_argument("--out", type=Path, help="write the numbers here as JSON")
    args = parser.parse_args()

    recipe = Recipe(seed=args.seed) if args.scale == 1.0 else Recipe(seed=args.seed).scaled(args.scale)
    tmp = None
    if args.root is None:
        tmp = Path(tempfile.mkdtemp(prefix="mini-world-bench-"))
        args.root = tmp
    result = {"machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg(), "python": platform.python_version()},
              "recipe": recipe.__dict__}
    try:
        start = time.perf_counter()
        world = ensure_mini_world(args.root, recipe, log=lambda m: None)
        result["build_seconds"] = {**world.manifest["seconds"], "total_wall": time.perf_counter() - start}
        result["machine"]["load_after_build"] = os.getloadavg()
        result["quality"] = world.manifest["quality"]
        result["bytes"] = sum(f["bytes"] for f in world.manifest["files"].values())
        print(f"world {world.folder}: {result['bytes'] / 1e6:.1f} MB")
        print("build seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result["build_seconds"].items()),
              f"(load average {result['machine']['load_before'][0]:.1f} before, "
              f"{result['machine']['load_after_build'][0]:.1f} after, {os.cpu_count()} CPUs)")
        q = result["quality"]
        print(f"VAE reconstruction MSE on [-1, 1]: {q['vae_mse']:.4f}")
        print("CLIP zero-shot retrieval: " + ", ".join(f"{k} {v:.1%}" for k, v in q["clip_retrieval"].items()))

        if args.twice:
            with tempfile.TemporaryDirectory(dir=args.root) as again:
                second = build_world(Path(again) / "world", recipe, log=lambda m: None)
            same = {k: v["sha256"] == second["files"].get(k, {}).get("sha256")
                    for k, v in world.manifest["files"].items()}
            result["determinism"] = {"identical_files": sum(same.values()), "files": len(same),
                                     "differing": sorted(k for k, v in same.items() if not v)}
            print(f"second build: {sum(same.values())}/{len(same)} files byte-identical")

        start = time.perf_counter()
        judge = held_out_judge(seed=0)
        digits, labels = corpus.load_mnist()
        target = corpus.source_split(labels)["target"]
        rng = np.random.default_rng(1)
        real = corpus.render(digits[target], *corpus.random_looks(len(target), rng))
        result["judge"] = {"real_heldout_accuracy": float((judge_classes(judge, real) == labels[target]).mean()),
                           "seconds": time.perf_counter() - start}
        print(f"judge on held-out real digits (random looks): {result['judge']['real_heldout_accuracy']:.1%}")

        pipe = load_sd_pipeline(world.sd)
        classes = np.repeat(np.arange(10), args.per_class)
        look = corpus.Look.named(*corpus.DEFAULT_TARGET_LOOKS[0])
        result["samples"] = []
        for g in args.guidance:
            start = time.perf_counter()
            images = generate(pipe, [corpus.caption(c, None, None, None) for c in classes], g, args.steps, seed=0)
            text_acc = float((judge_classes(judge, images) == classes).mean())
            looked = generate(pipe, [corpus.caption(c, look.fg, look.bg, look.stroke) for c in classes], g,
                              args.steps, seed=1)
            colours = judge_looks(looked)
            row = {"guidance": g, "class_accuracy": text_acc,
                   "look_prompt_class_accuracy": float((judge_classes(judge, looked) == classes).mean()),
                   "look_prompt_fg_accuracy": float((colours["fg"] == look.fg).mean()),
                   "look_prompt_bg_accuracy": float((colours["bg"] == look.bg).mean()),
                   "seconds": time.perf_counter() - start}
            result["samples"].append(row)
            print(f"guidance {g}: judge class accuracy {text_acc:.1%} on 'a photo of a digit X'; prompts naming "
                  f"{' '.join(look.names)}: class {row['look_prompt_class_accuracy']:.1%}, colours fg "
                  f"{row['look_prompt_fg_accuracy']:.1%} bg {row['look_prompt_bg_accuracy']:.1%} "
                  f"({row['seconds']:.0f} s, {2 * len(classes)} images x {args.steps} steps)")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
