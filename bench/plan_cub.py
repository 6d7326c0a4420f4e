"""Planning time of a CUB-sized DAG: `snakemake -n all` with 200 classes, ~6k training
images, 64 generation shards per variant and several variants.

The dataset is metadata only (CUB's four index files naming 11,788 images that are never
read: planning needs only the files the split rule takes as input), in a temporary copy of
the workflow, so nothing here touches results/. Prints the job count and the wall and CPU
time of the dry run (medians of --repeat runs; on a shared machine the CPU time is the
figure that does not depend on what else runs).

    python bench/plan_cub.py               # 64 shards, 5 variants
    python bench/plan_cub.py --shards 128 --repeat 3
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from helpers import copy_workflow  # noqa: E402  (the tests' copy of the workflow, as a user's checkout)

N_CLASSES, N_TRAIN, N_TEST = 200, 5994, 5794  # CUB_200_2011

SAMPLERS = {
    "gauss": {"method": "gauss", "expansion": 40},
    "gmm3": {"method": "gmm", "n_components": 3, "expansion": 40},
    "text": {"method": "text", "expansion": 40},
}
VARIANTS = {
    "gauss-g2.0": {"sampler": "gauss"},
    "gauss-g7.5": {"sampler": "gauss", "guidance_scale": 7.5},
    "gauss-g2.0-keep0.25": {"sampler": "gauss", "keep_ratio": 0.25},
    "gmm3-g2.0": {"sampler": "gmm3"},
    "text-g2.0": {"sampler": "text"},
}


def write_cub_metadata(root: Path) -> Path:
    """CUB's index files for N_CLASSES classes (train images first); no image is written."""
    root.mkdir(parents=True)
    (root / "images").mkdir()
    n = N_TRAIN + N_TEST
    classes = [f"{c + 1:03d}.Class_{c + 1}" for c in range(N_CLASSES)]
    labels = [i % N_CLASSES for i in range(n)]
    (root / "classes.txt").write_text("".join(f"{c + 1} {name}\n" for c, name in enumerate(classes)))
    (root / "images.txt").write_text("".join(f"{i + 1} {classes[y]}/img_{i + 1:05d}.jpg\n"
                                             for i, y in enumerate(labels)))
    (root / "image_class_labels.txt").write_text("".join(f"{i + 1} {y + 1}\n" for i, y in enumerate(labels)))
    (root / "train_test_split.txt").write_text("".join(f"{i + 1} {int(i < N_TRAIN)}\n" for i in range(n)))
    return root


def cub_workflow(dest: Path, shards: int) -> Path:
    copy_workflow(dest)
    root = write_cub_metadata(dest / "data" / "CUB_200_2011")
    path = dest / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["datasets"] = {"cub": {"format": "cub", "root": str(root)}}
    config["generation"]["shards"] = shards
    config["samplers"] = SAMPLERS
    config["variants"] = VARIANTS
    config["default_variant"] = "gauss-g2.0"
    if "runs" in config.get("classifier", {}):  # older config layout: one run per variant
        config["classifier"]["runs"] = ["real", *VARIANTS]
    path.write_text(yaml.safe_dump(config))
    return dest


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def dry_run(workflow: Path) -> tuple[float, float, int]:
    """(wall s, CPU s, jobs) of one `snakemake -n all`."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--cores", "1", "all"]
    start, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, cwd=workflow, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    total = re.search(r"^total\s+(\d+)$", proc.stdout + proc.stderr, re.M)
    return seconds, cpu, int(total[1]) if total else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workflow = cub_workflow(Path(tmp) / "wf", args.shards)
        runs = [dry_run(workflow) for _ in range(args.repeat)]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    print(f"snakemake -n all, CUB-sized ({N_CLASSES} classes, {N_TRAIN} train images, {args.shards} shards x "
          f"{len(VARIANTS)} variants): {runs[0][2]} jobs planned in {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(median of {args.repeat}; wall {', '.join(f'{r[0]:.1f}' for r in runs)} s)")


if __name__ == "__main__":
    main()
