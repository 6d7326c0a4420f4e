"""Peak memory of every stage at full size (SD v1.5, sd-vae-ft-mse, CLIP ViT-L/14; random weights).

Each measurement runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) belongs to that
stage alone; on a GPU the child also records ``torch.cuda.max_memory_allocated`` and
``max_memory_reserved``. Every stage runs through the package's own function, as the workflow
calls it:

- ``import``: Python + torch + sdi imported, nothing loaded (the floor of every job);
- ``<stage>-load``: only the models a stage loads, as a GPU job loads them (in the GPU dtype, every
  weight read once as ``.to("cuda")`` does): the host memory a GPU job needs, less the CUDA context;
- ``projector``: ``train_projector``, one step of batch B at 512x512 (backward through the UNet);
- ``embeddings``: ``extract_embeddings`` (CLIP ViT-L/14 + projector), N images, batch B;
- ``generate``: ``generate_shard``, B images in one pipeline call at 512x512, 1 DDIM step
  (peak memory does not grow with the number of steps: each step frees the last one's activations);
- ``filter``: ``filter_generated`` (CLIPModel), N images, batch B;
- ``classifier``: ``train_classifier`` (ResNet50), one step of batch B at 224x224, DataLoader in
  the main process (``num_workers`` 0: worker processes would not be counted).

On the CPU everything is fp32 (generation in fp32 as ``dtype: fp16`` falls back to it), on a GPU
generation is fp16 and projector training fp16 mixed precision (the config defaults).
A measurement whose predicted peak (linear in the batch, from the same stage's smaller
batches) exceeds ``--mem-fraction`` of the machine's available memory is skipped and reported
as such, with the prediction.

    python bench/memory_per_stage.py                    # CPU, builds the models in a temp folder (~8 GB)
    python bench/memory_per_stage.py --device cuda      # GPU: also peak GPU memory and time per unit
    python bench/memory_per_stage.py --models DIR       # reuse (or build once into) DIR
    python bench/memory_per_stage.py --sd /m/sd15 --vae /m/sd-vae-ft-mse --clip /m/clip-vit-large-patch14

Writes ``memory_<device>.csv`` and ``memory_<device>.md`` into ``--out`` (default bench/measurements).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

HERE = Path(__file__).resolve()
GIB = 2**30
CLASSES = ["red square", "blue disc"]
COLUMNS = ["stage", "batch", "units", "unit", "peak_rss_gib", "gpu_allocated_gib", "gpu_reserved_gib", "wall_s",
           "s_per_unit", "device", "dtype", "resolution", "status"]


# --------------------------------------------------------------------------------------------- child side


def _write_images(root: Path, n: int) -> list[dict]:
    """n CUB-sized JPEGs (500x375) of 2 classes; manifest rows."""
    from PIL import Image, ImageDraw

    rows = []
    for i in range(n):
        label = i % 2
        path = root / f"{label}_{i:04d}.jpg"
        if not path.exists():
            image = Image.new("RGB", (500, 375), (220, 220, 200 + i % 50))
            box = (50 + i % 100, 40, 350 + i % 100, 330)
            draw = ImageDraw.Draw(image)
            (draw.rectangle if label == 0 else draw.ellipse)(box, fill=(200, 30, 30) if label == 0 else (30, 60, 200))
            root.mkdir(parents=True, exist_ok=True)
            image.save(path, quality=90)
        rows.append({"image_id": f"{label}_{i:04d}", "sample_id": f"{label:04d}-{i:06d}", "path": str(path),
                     "label": label, "class_name": CLASSES[label]})
    return rows


def _touch(*modules) -> None:
    """Read every weight once, as moving a model to the GPU does (memory-mapped files become resident)."""
    import torch

    with torch.no_grad():
        for module in modules:
            for param in module.parameters():
                param.float().sum()


def _run_stage(stage: str, batch: int, units: int, args: argparse.Namespace, work: Path) -> dict:
    """Run one measurement in this process; returns units done and the dtype used."""
    import numpy as np
    import pandas as pd
    import torch

    import sdi  # noqa: F401
    from sdi.models.devices import resolve_device
    from sdi.models.folders import model_dims

    gpu = resolve_device(args.device).type == "cuda"
    table = pd.DataFrame(_write_images(work / "images", max(units, batch, 8)))
    sd, vae, clip = args.sd, args.vae, args.clip
    dtype = "fp32"
    if stage == "import":
        from sdi.pipeline import generation  # noqa: F401
        from sdi.training import classifier, projector  # noqa: F401
        dtype = ""
    elif stage == "projector-load":
        from sdi.models.loaders import load_clip_vision
        from sdi.training.projector import load_frozen_models

        model, _ = load_clip_vision(clip, device=args.device)
        _touch(model)
        del model
        frozen = load_frozen_models(sd, device=args.device, dtype=torch.float16)
        _touch(frozen.unet, frozen.vae, frozen.text_encoder)
        dtype = "fp16"
    elif stage == "projector":
        from sdi.training.projector import train_projector

        dtype = "fp16 mixed" if gpu else "fp32"
        train_projector(table.iloc[:batch], sd, clip, work / f"projector-{batch}", epochs=1, batch_size=batch,
                        image_size=args.resolution, mixed_precision="fp16" if gpu else "no", device=args.device)
    elif stage in ("embeddings-load", "embeddings"):
        from sdi.models.loaders import load_clip_vision
        from sdi.models.projector import SemanticProjector
        from sdi.pipeline.embeddings import extract_embeddings

        projector = work / "projector-random"
        if not (projector / "config.json").exists():
            dims = model_dims(sd, clip, vae)
            SemanticProjector(dims.d_clip, dims.d_cross).save_pretrained(projector)
        if stage == "embeddings-load":
            _touch(load_clip_vision(clip, device=args.device)[0])
        else:
            extract_embeddings(table.iloc[:units], projector, clip, batch_size=batch, device=args.device)
    elif stage in ("generate-load", "generate"):
        if stage == "generate-load":
            from sdi.models.loaders import load_sd_pipeline

            pipe = load_sd_pipeline(sd, vae, device=args.device, dtype=torch.float16)
            _touch(pipe.unet, pipe.vae, pipe.text_encoder)
            dtype = "fp16"
        else:
            from sdi.models.generator import GenerationSettings, ImageGenerator
            from sdi.pipeline.generation import generate_shard

            generator = ImageGenerator.from_folders(sd, vae, dtype="fp16", device=args.device)
            dtype = generator.dtype_name
            rng = np.random.default_rng(0)
            vectors = rng.normal(size=(batch, generator.d_cross)).astype(np.float32)
            samples = table.iloc[:batch].assign(sample_index=range(batch), seed=range(batch), vector=list(vectors))
            generate_shard(samples, generator, work / f"generated-{batch}",
                           GenerationSettings(steps=args.steps, resolution=args.resolution), batch_size=batch)
    elif stage in ("filter-load", "filter"):
        from sdi.models.loaders import load_clip
        from sdi.pipeline.filtering import filter_generated

        if stage == "filter-load":
            _touch(load_clip(clip, device=args.device, dtype=torch.float16)[0])
            dtype = "fp16"
        else:
            filter_generated(table.iloc[:units], clip, 0.5, work / f"filtered-{batch}", batch_size=batch,
                             device=args.device)
    elif stage == "classifier":
        from sdi.training.classifier import train_classifier

        train_classifier(table.iloc[:batch], table.iloc[:8], table.iloc[:8], work / f"classifier-{batch}",
                         num_classes=2, epochs=1, batch_size=batch, device=args.device, num_workers=0)
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return {"dtype": dtype}


def child(args: argparse.Namespace) -> None:
    import torch

    gpu = args.device.startswith("cuda")
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    info = _run_stage(args.stage, args.batch, args.units, args, Path(args.work))
    wall = time.perf_counter() - start
    result = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, "wall_s": wall,
              **info}
    if gpu:
        result.update(gpu_allocated_gib=torch.cuda.max_memory_allocated() / GIB,
                      gpu_reserved_gib=torch.cuda.max_memory_reserved() / GIB)
    Path(args.result).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------- parent side


def mem_available_gib() -> float | None:
    """MemAvailable of /proc/meminfo in GiB (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        return None
    return None


def predict(rows: list[dict], stage: str, batch: int, base_gib: float | None) -> float | None:
    """Peak RSS of stage at batch, linear in the batch from the same stage's measured batches.

    With one measured batch, base_gib (what does not grow with the batch: imports + weights) anchors the line.
    """
    done = [(r["batch"], r["peak_rss_gib"]) for r in rows if r["stage"] == stage and r["status"] == "measured"]
    if len(done) >= 2:
        (b0, m0), (b1, m1) = done[-2], done[-1]
        return m1 + (m1 - m0) / (b1 - b0) * (batch - b1)
    if len(done) == 1 and base_gib is not None:
        b0, m0 = done[0]
        return base_gib + max(0.0, m0 - base_gib) * batch / b0
    return None


def weights_gib(args: argparse.Namespace, stage: str) -> float:
    """Size of the weight files a stage loads (safetensors are memory-mapped: resident once used)."""
    from sdi.models.folders import SD_COMPONENTS, sd_weights_variant, weight_files, weights_variant

    def files(folder: Path, variant: str | None) -> float:
        found = weight_files(folder)
        group = found.get(variant) or found.get(None) or []
        safetensors = [p for p in group if p.suffix == ".safetensors"]
        return sum(p.stat().st_size for p in safetensors or group) / GIB

    sd_variant = sd_weights_variant(args.sd)
    sd = {sub: files(args.sd / sub, sd_variant) for sub in SD_COMPONENTS}
    clip = files(args.clip, weights_variant(args.clip, "models.clip"))
    vae = files(args.vae, None) if args.vae else sd["vae"]
    return {"projector": sum(sd.values()) + clip, "generate": sd["unet"] + sd["text_encoder"] + vae,
            "embeddings": clip, "filter": clip}.get(stage, 0.0)


def plan(args: argparse.Namespace) -> list[tuple[str, int, int, str]]:
    """(stage, batch, units, unit) in the order they run."""
    runs = [("import", 0, 0, "-"), ("projector-load", 0, 0, "-")]
    runs += [("projector", b, b, "image") for b in args.projector_batches]
    runs += [("embeddings-load", 0, 0, "-"), ("embeddings", args.embeddings_batch, args.embeddings_images, "image")]
    runs.append(("generate-load", 0, 0, "-"))
    runs += [("generate", b, b, "image") for b in args.generation_batches]
    runs += [("filter-load", 0, 0, "-"), ("filter", args.filter_batch, args.filter_images, "image")]
    runs += [("classifier", b, b, "image") for b in args.classifier_batches]
    return [r for r in runs if not args.only or r[0] == "import" or r[0] in args.only]


def _in_order(rows: list[dict]) -> list[dict]:
    """Stages in pipeline order, each stage's load run first, then by batch."""
    order = ["import", "projector", "embeddings", "generate", "filter", "classifier"]
    return sorted(rows, key=lambda r: (order.index(r["stage"].split("-")[0]), not r["stage"].endswith("-load"),
                                       r["batch"]))


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("batch", "units", "resolution"):
            r[k] = int(r[k])
        for k in ("peak_rss_gib", "gpu_allocated_gib", "gpu_reserved_gib", "wall_s", "s_per_unit"):
            r[k] = float(r[k]) if r[k] not in ("", None) else ""
    return rows


def markdown(rows: list[dict], device: str) -> str:
    lines = [f"| stage | batch | peak RSS (GiB) | peak GPU allocated / reserved (GiB) | wall (s) | s per unit "
             f"({device}, wall less loading) | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        gpu = (f"{r['gpu_allocated_gib']:.2f} / {r['gpu_reserved_gib']:.2f}" if r.get("gpu_allocated_gib") != ""
               else "not measured: no GPU")
        rss = f"{r['peak_rss_gib']:.2f}" if r["status"] == "measured" else f"~{r['peak_rss_gib']:.1f} (predicted)"
        per = f"{r['s_per_unit']:.2f} s/{r['unit']}" if r["s_per_unit"] != "" else "-"
        size = {"projector": f"{r['resolution']} px", "generate": f"{r['resolution']} px",
                "classifier": "224 px crop"}.get(r["stage"], "224 px (CLIP)" if r["batch"] else "")
        note = r["status"] if r["status"] != "measured" else ", ".join(x for x in (r["dtype"], size) if x)
        wall = f"{r['wall_s']:.0f}" if r["wall_s"] != "" else "-"
        lines.append(f"| {r['stage']} | {r['batch'] or '-'} | {rss} | {gpu} | {wall} | {per} | {note} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--models", type=Path, help="folder with (or to build) the full-size random models")
    parser.add_argument("--sd", type=Path, help="an SD v1.5 folder instead of the random models")
    parser.add_argument("--vae", type=Path)
    parser.add_argument("--clip", type=Path)
    parser.add_argument("--out", type=Path, default=HERE.parent / "measurements")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1, help="DDIM steps of the generation runs")
    parser.add_argument("--projector-batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--embeddings-batch", type=int, default=64)
    parser.add_argument("--embeddings-images", type=int, default=64)
    parser.add_argument("--generation-batches", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--filter-batch", type=int, default=64)
    parser.add_argument("--filter-images", type=int, default=64)
    parser.add_argument("--classifier-batches", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--render", action="store_true", help="only rewrite the markdown table from the CSV")
    parser.add_argument("--mem-fraction", type=float, default=0.85,
                        help="skip a run predicted to need more than this fraction of the available memory")
    parser.add_argument("--only", nargs="+", help="runs to do (projector-load projector embeddings-load embeddings "
                        "generate-load generate filter-load filter classifier; import always runs); the rows of "
                        "the others are kept from the existing CSV")
    # child mode
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--units", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        child(args)
        return []
    from sdi.io.artifacts import atomic_write

    if args.render:
        name = "cuda" if args.device.startswith("cuda") else args.device
        rows = _in_order(_read_csv(args.out / f"memory_{name}.csv"))
        atomic_write(args.out / f"memory_{name}.md", lambda path: path.write_text(markdown(rows, name)))
        print(markdown(rows, name))
        return rows

    with tempfile.TemporaryDirectory(prefix="sdi-memory-") as tmp:
        tmp = Path(tmp)
        if not (args.sd and args.clip):
            root = args.models or tmp / "models"
            names = {"sd": "stable-diffusion-v1-5", "vae": "sd-vae-ft-mse", "clip": "clip-vit-large-patch14"}
            if not all((root / n).is_dir() for n in names.values()):
                print(f"building SD v1.5, sd-vae-ft-mse and CLIP ViT-L/14 with random weights in {root} ...",
                      flush=True)
                subprocess.run([sys.executable, "-c", "import sys, sdi; from sdi.models.random_models import "
                                "build_fullsize_models as b; b(sys.argv[1], device=sys.argv[2])", str(root),
                                args.device], check=True)
            args.sd, args.vae, args.clip = (root / names[k] for k in ("sd", "vae", "clip"))
        rows: list[dict] = []
        load_gib: dict[str, float] = {}
        load_s: dict[str, float] = {}
        for stage, batch, units, unit in plan(args):
            row = {"stage": stage, "batch": batch, "units": units, "unit": unit, "gpu_allocated_gib": "",
                   "gpu_reserved_gib": "", "device": args.device, "resolution": args.resolution, "s_per_unit": "",
                   "wall_s": "", "dtype": ""}
            base = stage.split("-")[0] if stage != "classifier" else "import"
            floor = load_gib.get("import", 0.0) + weights_gib(args, base)
            need = predict(rows, stage, batch, max(floor, load_gib.get(base, 0.0)))
            available = mem_available_gib()
            if need is not None and available is not None and need > args.mem_fraction * available:
                row.update(peak_rss_gib=need, status=f"skipped: predicted {need:.1f} GiB > {args.mem_fraction:.0%} "
                           f"of the {available:.1f} GiB available")
                print(f"{stage:16s} batch {batch:4d}: {row['status']}", flush=True)
                rows.append(row)
                continue
            result_file = tmp / f"{stage}-{batch}.json"
            cmd = [sys.executable, str(HERE), "--stage", stage, "--batch", str(batch), "--units", str(units),
                   "--work", str(tmp / "work"), "--result", str(result_file), "--device", args.device,
                   "--sd", str(args.sd), "--clip", str(args.clip), "--resolution", str(args.resolution),
                   "--steps", str(args.steps)] + (["--vae", str(args.vae)] if args.vae else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                row.update(peak_rss_gib=float("nan"), status=f"failed ({proc.returncode}): "
                           f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}")
            else:
                result = json.loads(result_file.read_text())
                row.update(result, status="measured")
                if units:  # the stage's own load run (imports, model loading) taken off
                    row["s_per_unit"] = max(0.0, result["wall_s"] - load_s.get(base, 0.0)) / units
                if stage.endswith("-load") or stage == "import":
                    load_gib[base], load_s[base] = result["peak_rss_gib"], result["wall_s"]
            print(f"{stage:16s} batch {batch:4d}: {row['status']}, peak RSS {row['peak_rss_gib']:.2f} GiB"
                  + (f", {row['wall_s']:.1f} s" if row["wall_s"] != "" else ""), flush=True)
            rows.append(row)

    name = "cuda" if args.device.startswith("cuda") else args.device
    previous = args.out / f"memory_{name}.csv"
    if args.only and previous.exists():  # keep the other stages' rows of an earlier full run
        kept = [r for r in _read_csv(previous) if r["stage"] not in {row["stage"] for row in rows}]
        rows = _in_order(kept + rows)

    def write_csv(path: Path) -> None:
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(args.out / f"memory_{name}.csv", write_csv)
    atomic_write(args.out / f"memory_{name}.md", lambda path: path.write_text(markdown(rows, name)))
    print(markdown(rows, name))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
