"""Generation throughput: the reference code's style against the engine, in one process.

Both use the same loaded pipeline, samples and settings:

- reference style: one ``StableDiffusionPipeline`` call per image with ``prompt_embeds`` and
  ``negative_prompt_embeds`` (as the paper's code does), PIL output saved synchronously;
- engine: :func:`sdi.pipeline.generation.generate_shard` (batched pipeline calls, per-image seeded
  latents, PNG encoding with provenance in background threads, manifest).

On a GPU the models are the full SD v1.5 architecture with random weights (configs below,
same FLOPs as the real checkpoint; nothing is downloaded) at 512x512; on a CPU the tiny
models of :mod:`sdi.models.tiny` at 64x64. Prints images/s of each and their ratio, and on a
GPU the fraction of the physical limit and the projected hours for CUB at 40x.

    python bench/bench_generation.py                      # CPU: tiny models (what `make bench` runs)
    python bench/bench_generation.py --device cuda        # GPU: SD v1.5 architecture, 512x512, 50 steps
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would interleave with the results

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import sdi  # noqa: E402,F401  (offline mode for the HF libraries)
from sdi import NEGATIVE_PROMPT  # noqa: E402
from sdi.models.devices import resolve_device  # noqa: E402
from sdi.models.generator import GenerationSettings, ImageGenerator  # noqa: E402
from sdi.pipeline.generation import generate_shard  # noqa: E402

# One UNet forward of SD v1.5 on one 64x64 latent (512x512 image) with 77 text tokens, and one
# VAE decode of a 64x64 latent, in TFLOP (2 x multiply-adds). Classifier-free guidance runs the
# UNet on 2 samples per image and step.
UNET_TFLOP_PER_SAMPLE = 0.677
VAE_DECODE_TFLOP = 2.48
CUB_TRAIN_IMAGES = 5994
CUB_EXPANSION = 40

def build_sd15_random(folder: Path, device: torch.device) -> Path:
    """SD v1.5's architecture with random weights in the hub's layout (:mod:`sdi.models.random_models`), fp32 files.

    Initialised on device (on a GPU: seconds instead of a minute); ImageGenerator casts to --dtype.
    """
    from sdi.models.random_models import build_random_sd

    folder = build_random_sd(folder, "full", precisions=("fp32",), device=device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return folder


def make_samples(n: int, d_cross: int, offset: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(offset)
    ids = range(offset, offset + n)
    return pd.DataFrame({"sample_id": [f"{i % 10:04d}-{i:06d}" for i in ids], "label": [i % 10 for i in ids],
                         "class_name": [f"class {i % 10}" for i in ids], "sample_index": list(ids),
                         "seed": [1000 + i for i in ids], "shard": 0,
                         "vector": list(rng.normal(size=(n, d_cross)).astype(np.float32))})


def reference_style(gen: ImageGenerator, samples: pd.DataFrame, out: Path, steps: int, guidance: float,
                    size: int) -> float:
    """One pipeline call per image, PIL output saved in the loop; returns seconds."""
    out.mkdir(parents=True, exist_ok=True)
    negative = gen.text_embeds(NEGATIVE_PROMPT)
    start = time.perf_counter()
    for i in range(len(samples)):
        embeds = gen.prompt_embeds(samples.iloc[[i]], "sei")
        image = gen.pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=steps,
                         guidance_scale=guidance, height=size, width=size).images[0]
        image.save(out / f"{samples.sample_id.iloc[i]}.png")
    return time.perf_counter() - start


def engine(gen: ImageGenerator, samples: pd.DataFrame, out: Path, steps: int, guidance: float, size: int,
           batch_size: int) -> float:
    """generate_shard (batched, PNG writer threads, manifest); returns seconds."""
    start = time.perf_counter()
    generate_shard(samples, gen, out, GenerationSettings(steps=steps, guidance_scale=guidance, resolution=size),
                   batch_size=batch_size)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if present) | cpu | cuda | cuda:N")
    parser.add_argument("--images", type=int, help="images for the engine (default: per round, cpu 1 batch, "
                        "gpu 4 batches)")
    parser.add_argument("--reference-images", type=int, help="images for the reference style (default 16)")
    parser.add_argument("--rounds", type=int, default=4, help="the two styles take turns this many times, each "
                        "making its share of the images, so that a change in machine load hits both (default 4)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: cpu 20, gpu 50)")
    parser.add_argument("--guidance", type=float, default=2.0, help="guidance scale (> 1: classifier-free guidance)")
    parser.add_argument("--batch-size", default="auto",
                        help="engine batch size, or auto (sdi.models.generator.auto_batch_size)")
    parser.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"], help="GPU dtype (CPU: fp32)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (both styles share it)")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="GPU peak dense TFLOP/s at --dtype (default 989: H100 SXM bf16/fp16)")
    parser.add_argument("--sd", type=Path, help="use this SD folder instead of building random-weight models")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is less "
                        "sensitive to other processes on a shared machine)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    steps = args.steps or (50 if gpu else 20)
    warnings.filterwarnings("ignore")  # random weights in fp16 overflow to NaN; irrelevant to timing

    with tempfile.TemporaryDirectory(prefix="sdi-bench-") as tmp:
        tmp = Path(tmp)
        if args.sd:
            sd = args.sd
        elif gpu:
            print("building SD v1.5 architecture with random weights ...", flush=True)
            sd = build_sd15_random(tmp / "sd15", device)
        else:
            from sdi.models.tiny import build_tiny_sd

            sd = build_tiny_sd(tmp / "tiny-sd")
        gen = ImageGenerator.from_folders(sd, scheduler="ddim", dtype=args.dtype, device=str(device),
                                          compile=args.compile)
        size = gen.native_resolution
        batch_size = gen.auto_batch_size(size, size) if args.batch_size == "auto" else int(args.batch_size)
        rounds = max(1, args.rounds)
        n_engine = args.images or (4 if gpu else 1) * batch_size * rounds
        n_reference = args.reference_images or 16
        d_cross = gen.d_cross
        print(f"device {device} ({torch.cuda.get_device_name(device) if gpu else f'{torch.get_num_threads()} threads'})"
              f", model {'SD v1.5 architecture, random weights' if gpu and not args.sd else sd.name}, "
              f"{gen.dtype_name}, {size}x{size}, {steps} DDIM steps, guidance {args.guidance}, "
              f"compile {args.compile}", flush=True)

        # Warm-up (untimed): engine at its batch size (compiles for it), reference at batch 1.
        engine(gen, make_samples(batch_size, d_cross, offset=10**5), tmp / "warm-engine", steps, args.guidance,
               size, batch_size)
        reference_style(gen, make_samples(1, d_cross, offset=2 * 10**5), tmp / "warm-ref", steps, args.guidance, size)

        samples = make_samples(max(n_engine, n_reference), d_cross)
        t_ref = t_eng = 0.0
        for r in range(rounds):
            part = samples.iloc[r * n_reference // rounds:(r + 1) * n_reference // rounds]
            t_ref += reference_style(gen, part, tmp / "reference", steps, args.guidance, size)
            part = samples.iloc[r * n_engine // rounds:(r + 1) * n_engine // rounds]
            t_eng += engine(gen, part, tmp / "engine", steps, args.guidance, size, batch_size)

    ref_ips, eng_ips = n_reference / t_ref, n_engine / t_eng
    result = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if gpu else None,
              "model": "sd15-random" if gpu and not args.sd else str(sd.name), "dtype": gen.dtype_name,
              "resolution": size, "steps": steps, "guidance": args.guidance, "compile": args.compile,
              "rounds": rounds, "batch_size": batch_size, "reference_images": n_reference, "engine_images": n_engine,
              "reference_images_per_s": ref_ips, "engine_images_per_s": eng_ips, "speedup": eng_ips / ref_ips}
    for name, n, t in (("reference style (1 image per call)", n_reference, t_ref),
                       (f"engine (batch {batch_size})", n_engine, t_eng)):
        print(f"{name:36s} {n:5d} images in {t:7.1f} s = {n / t:7.3f} images/s")
    print(f"engine / reference: {eng_ips / ref_ips:.2f}x")

    cub_images = CUB_TRAIN_IMAGES * CUB_EXPANSION
    if gpu:
        cfg = 2 if args.guidance > 1 else 1
        tflop = (UNET_TFLOP_PER_SAMPLE * cfg * steps + VAE_DECODE_TFLOP) * (size / 512) ** 2
        limit = args.peak_tflops / tflop
        result.update(tflop_per_image=tflop, peak_tflops=args.peak_tflops, limit_images_per_s=limit,
                      engine_fraction_of_limit=eng_ips / limit, reference_fraction_of_limit=ref_ips / limit,
                      cub40_hours_engine=cub_images / eng_ips / 3600, cub40_hours_reference=cub_images / ref_ips / 3600)
        print(f"physical limit: {tflop:.1f} TFLOP per image at {args.peak_tflops:g} TFLOP/s = {limit:.2f} images/s; "
              f"engine reaches {eng_ips / limit:.1%} of it ({eng_ips * tflop:.0f} TFLOP/s), "
              f"reference {ref_ips / limit:.1%}")
        print(f"CUB at {CUB_EXPANSION}x ({cub_images:,} images) on this GPU: "
              f"engine {cub_images / eng_ips / 3600:.1f} h, reference style {cub_images / ref_ips / 3600:.1f} h")
    else:
        print(f"CUB at {CUB_EXPANSION}x ({cub_images:,} images): the GPU figure is not measured here (CPU run with "
              "tiny models); run with --device cuda on a GPU for it")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
