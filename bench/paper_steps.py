"""Training-set sizes and steps per epoch of a paper config's methods, on dataset-sized manifests.

Uses the workflow's own code: the config files merged as Snakemake merges them, the method
resolution of :func:`sdi.config.experiments.methods` and :func:`sdi.pipeline.training_set.build_training_set` over
stand-in manifests of the dataset's size (no images are read). Compare with docs/method.md section 8
(CUB: real only ~12, RandAugment ~246, SDI 5x ~70 steps per epoch).

    .venv/bin/python bench/paper_steps.py                        # CUB: 5,994 images, 200 classes, 40x
    .venv/bin/python bench/paper_steps.py --config config/paper/pets.yaml --train 3680 --classes 37
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from sdi.config.experiments import experiment_errors, methods
from sdi.config.settings import merged_config_files
from sdi.pipeline.filtering import select_top
from sdi.pipeline.training_set import build_training_set, counts, steps_per_epoch, synthetic_pool

REPO = Path(__file__).resolve().parents[1]


def stand_in_real(n_train: int, n_classes: int) -> pd.DataFrame:
    """A real training manifest of n_train rows, classes as even as possible."""
    base, extra = divmod(n_train, n_classes)
    return pd.DataFrame([{"path": f"real/{c}/{i}", "label": c} for c in range(n_classes)
                         for i in range(base + (c < extra))])


def stand_in_generated(real: pd.DataFrame, expansion: float, keep_ratio: float, seed: int = 0) -> pd.DataFrame:
    """A filter manifest: round(expansion x n_c) generated images per class with random scores,
    their ranks and kept flags."""
    rng = np.random.default_rng(seed)
    generated = pd.DataFrame([{"sample_id": f"{c:04d}-{i:06d}", "path": f"gen/{c}/{i}", "label": c}
                              for c, n in real.groupby("label").size().items() for i in range(round(expansion * n))])
    generated["score"] = rng.normal(size=len(generated))
    generated["rank"] = generated.groupby("label")["score"].rank(ascending=False, method="first").astype(int)
    generated["kept"] = select_top(generated, keep_ratio)
    return generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "config" / "paper" / "cub.yaml"))
    parser.add_argument("--train", type=int, default=5994, help="real training images (CUB: 5,994)")
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--gpus", type=int, default=None, help="processes (default: resources.train_classifier.gpus)")
    args = parser.parse_args()

    config = merged_config_files(REPO / "config" / "config.yaml", args.config)
    problems = experiment_errors(config)
    if problems:
        raise SystemExit("\n".join(problems))
    batch = config["classifier"]["batch_size"]
    world = args.gpus or config["resources"].get("train_classifier", {}).get("gpus", 1)
    real = stand_in_real(args.train, args.classes)
    rows = []
    for name, m in methods(config).items():
        pool = None
        if m["variant"] is not None:
            v = config["variants"][m["variant"]]
            generated = stand_in_generated(real, config["samplers"][v["sampler"]]["expansion"],
                                           v.get("keep_ratio", config["filter"]["keep_ratio"]))
            pool = synthetic_pool(generated, m["pool"], m["keep_ratio"])
        train = build_training_set(real, synthetic=pool, multiples=m["multiples"], real_copies=m["real_copies"],
                                   variant=m["variant"], seed=m["draw_seed"])
        rows.append({"method": name, "label": m["label"], **counts(train),
                     "steps_per_epoch": steps_per_epoch(len(train), batch, world),
                     "batches_of_global": round(len(train) / batch, 2)})
    print(f"{args.config}: {args.train} training images in {args.classes} classes, global batch {batch} "
          f"over {world} process(es)\n")
    print(pd.DataFrame(rows).to_markdown(index=False) if _has_tabulate() else pd.DataFrame(rows).to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
