"""Benchmark of the CLIP linear probe (sdi.training.linear_probe), and the CLIP image encodings per stage.

    python bench/linear_probe.py                  # CUB-sized probe on 2 CPU cores
    python bench/linear_probe.py --logs WORKDIR   # + encodings per stage, from a finished workflow's logs

Speed: CUB-sized embeddings, given as the stages store them (Parquet files of 768-d float32 vectors,
CLIP ViT-L/14's width): 5,994 real + 35,964 synthetic training rows (SDI's CUB: expansion 12, half kept,
x 6 real), 200 classes, 1,000 validation and 5,794 test rows, 3 regularisation strengths (C = 0.01, 0.1,
1). The vectors are class means plus noise (synthetic rows: means shifted), mixed into correlated,
anisotropic features (singular values 1/sqrt(k)) as CLIP embeddings are; the accuracy is not the
point. BLAS is capped at --threads (2). The wall time covers reading the files, standardising, the
three fits and the test.

Encodings: each job of a finished workflow logs how many images it passed through a CLIP image encoder
("N CLIP image encodings"); the table sums them per rule. The linear probe jobs must show 0: they read
the filter's stored embeddings and the real images' (rule image_embeddings).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from sdi.pipeline.filtering import write_image_embeddings
from sdi.training.linear_probe import run_probe

N_REAL, N_SYNTHETIC, N_VAL, N_TEST, CLASSES, DIM = 5994, 35964, 1000, 5794, 200, 768


def _mixing(rng: np.random.Generator) -> np.ndarray:
    """A random rotation with singular values 1/sqrt(k): correlated, anisotropic features, as CLIP's
    embeddings are (a few directions carry most of the variance), which L-BFGS needs more steps for."""
    q, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    return (q * (1.0 / np.sqrt(np.arange(1, DIM + 1)))[None, :]) @ np.linalg.qr(rng.normal(size=(DIM, DIM)))[0]


def _rows(prefix: str, n: int, centres: np.ndarray, mixing: np.ndarray, rng: np.random.Generator,
          shift: float = 0.0):
    labels = np.arange(n) % CLASSES
    x = (centres[labels] + shift + rng.normal(size=(n, DIM))) @ mixing
    return pd.DataFrame({"path": [f"{prefix}/{i}.jpg" for i in range(n)], "label": labels}), x.astype(np.float32)


def speed(threads: int, c_values: list[float]) -> dict:
    rng = np.random.default_rng(0)
    centres, mixing = rng.normal(size=(CLASSES, DIM)) * 0.15, _mixing(rng)
    (train, x_train), (val, x_val), (test, x_test) = (_rows(p, n, centres, mixing, rng) for p, n in
                                                      (("train", N_REAL), ("val", N_VAL), ("test", N_TEST)))
    gen, x_gen = _rows("gen", N_SYNTHETIC, centres, mixing, rng, shift=0.02)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_image_embeddings(pd.concat([train, val, test], ignore_index=True),
                               np.concatenate([x_train, x_val, x_test]), tmp / "real.parquet")
        write_image_embeddings(gen, x_gen, tmp / "gen.parquet")
        rows = pd.concat([train.assign(source="real", variant=None), gen.assign(source="synthetic", variant="v")],
                         ignore_index=True)
        start = time.perf_counter()
        with threadpool_limits(threads):
            metrics = run_probe(rows, val, test, tmp / "run", real_embeddings=tmp / "real.parquet",
                                generated_embeddings=tmp / "gen.parquet", num_classes=CLASSES, c_values=c_values)
        seconds = time.perf_counter() - start
        log = pd.read_csv(tmp / "run" / "log.csv")
    return {"seconds": round(seconds, 1), "threads": threads, "train_rows": len(rows), "dim": DIM,
            "classes": CLASSES, "c_values": c_values, "iterations": log.iterations.tolist(),
            "best_c": metrics["best_c"], "test_top1": round(metrics["top1"], 2),
            "image_encodings": metrics["image_encodings"]}


ENCODINGS = re.compile(r"(\d+) CLIP image encodings")


def encodings(workdir: Path) -> pd.DataFrame:
    """Per log file under workdir/logs that reports CLIP image encodings: its rule-ish name and the count."""
    rows = []
    for log in sorted((workdir / "logs").rglob("*.log")):
        found = ENCODINGS.findall(log.read_text(errors="replace"))
        if found:
            rows.append({"log": str(log.relative_to(workdir / "logs")), "encodings": int(found[-1])})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--c-values", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--logs", type=Path, help="a finished workflow's working directory")
    args = parser.parse_args()
    print("linear probe, CUB-sized:", speed(args.threads, args.c_values))
    if args.logs:
        print(encodings(args.logs).to_string(index=False))


if __name__ == "__main__":
    main()
