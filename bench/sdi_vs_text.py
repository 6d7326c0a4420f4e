"""Why does SDI tie (or trail) text prompts downstream? Measurements on a finished mini-world workdir.

Run after ``snakemake all --configfile config/mini_world.yaml`` (make demo) and
``snakemake results/<dataset>/image_embeddings.parquet`` in the same folder:

    PYTHONPATH=. .venv/bin/python bench/sdi_vs_text.py WORKDIR [--dataset mini] [--out m.json] [--fidelity]

Prints (and writes as JSON with --out), per method and per variant:

- runs: test top-1 per seed with the epoch validation chose (``best/``) and the last epoch's
  weights (``last/``) evaluated on test, the validation set's size and the chosen epoch: how much
  of the spread between seeds is the checkpoint choice on a tiny validation set;
- per-class test top-1, mean over seeds;
- CLIP image space (the filter's stored embeddings and rule image_embeddings' real ones): per class
  the mean pairwise cosine distance (diversity) of real train, real test and each variant's kept
  images; the share of kept images that are near-copies of a real training image (cosine > 0.95);
  and the 1-NN test accuracy of real train [+ kept images], a training-free reading of what the
  synthetic images add;
- the judge (:mod:`sdi.evaluation.judge`): the class and look of kept and dropped images, with the
  look compared with each class's own look when classes are defined by look;
- conditioning space (SEI variants): the rank of each class's sample covariance and the spread of the
  samples around the class mean against the real embeddings';
- with --fidelity, projector fidelity: each real training image regenerated from its own projected
  embedding (the method prompt, the variant's guidance and steps), judged for class and look.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _stack(column) -> np.ndarray:
    return np.stack([np.asarray(v, np.float64) for v in column])


def _config(workdir: Path, files: list[str]) -> dict:
    """The run's config: its --configfile files (relative to workdir) merged, with the schema's defaults."""
    from sdi.config.settings import merged_config_files
    from sdi.config.validation import fill_defaults

    config = merged_config_files(*(workdir / f for f in files))
    return fill_defaults(config, yaml.safe_load((workdir / "config/schema.yaml").read_text()))


def _classes(cfg: dict):
    """The mini-world dataset's classes (sdi.data.mini_corpus.target_classes) as config.mini_data defines them."""
    from sdi.data.mini_corpus import target_classes

    m = cfg["mini_data"]
    return target_classes(m["looks"], m["classes_by"], m["look_names"], m["digits"])


# ------------------------------------------------------------------------------------------ runs
@torch.no_grad()
def _test_top1(folder: Path, weights: Path, test: pd.DataFrame, workdir: Path) -> float:
    from safetensors.torch import load_file

    from sdi.training.checkpoints import load_classifier
    from sdi.training.data import ManifestDataset
    from sdi.training.transforms import build_transforms

    model, cfg = load_classifier(folder)
    model.load_state_dict(load_file(weights))
    tf = build_transforms(cfg["resize"], cfg["crop"], train=False)
    rows = test.assign(path=[str(workdir / p) for p in test.path])
    data = ManifestDataset(rows, tf)
    x = torch.stack([data[i][0] for i in range(len(data))])
    pred = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)]).numpy()
    return float((pred == rows.label.to_numpy()).mean() * 100)


def runs(workdir: Path, dataset: str, last: bool = True) -> dict:
    """Per method: per seed the chosen epoch, val size and val top-1, test top-1 of best/ and of last/."""
    test = pd.read_parquet(workdir / f"results/{dataset}/split/test.parquet")
    out: dict = {}
    for metrics_path in sorted(workdir.glob(f"results/{dataset}/classifier/*/seed*/metrics.json")):
        run = metrics_path.parent
        m = json.loads(metrics_path.read_text())
        row = {"seed": int(run.name[4:]), "top1": m["top1"], "best_epoch": m["best_epoch"],
               "best_val_top1": m["best_val_top1"], "n_val": m["n_val"], "n_synthetic": m["n_synthetic"],
               "per_class": m["per_class"]}
        if last and (run / "last" / "model.safetensors").is_file():
            row["last_top1"] = _test_top1(run / "best", run / "last" / "model.safetensors", test, workdir)
        out.setdefault(run.parent.name, []).append(row)
    return out


def run_table(rows: dict) -> pd.DataFrame:
    lines = []
    for method, seeds in rows.items():
        top = [r["top1"] for r in seeds]
        last = [r.get("last_top1", np.nan) for r in seeds]
        lines.append({"method": method, "top1 (best/)": f"{np.mean(top):.1f} ± {np.std(top):.1f}",
                      "per seed": " ".join(f"{t:.1f}" for t in top),
                      "chosen epochs": " ".join(str(r["best_epoch"]) for r in seeds),
                      "val top-1": " ".join(f"{r['best_val_top1']:.0f}" for r in seeds),
                      "n_val": seeds[0]["n_val"],
                      "top1 (last/)": f"{np.nanmean(last):.1f} ± {np.nanstd(last):.1f}",
                      "last per seed": " ".join(f"{t:.1f}" for t in last)})
    return pd.DataFrame(lines)


def per_class(rows: dict) -> pd.DataFrame:
    table = {}
    for method, seeds in rows.items():
        table[method] = pd.DataFrame([{c["class_name"]: c["accuracy"] for c in r["per_class"]}
                                      for r in seeds]).mean()
    return pd.DataFrame(table).round(1)


# ------------------------------------------------------------------------------------- CLIP space
def clip_space(workdir: Path, dataset: str, variants: dict[str, str], copy_cos: float = 0.95) -> dict:
    """Diversity, near-copies and 1-NN test accuracy in the filter CLIP's image space."""
    real = pd.read_parquet(workdir / f"results/{dataset}/image_embeddings.parquet")
    split_col = "split" if "split" in real.columns else None
    emb_col = "embedding" if "embedding" in real.columns else [c for c in real.columns if "emb" in c][0]
    train = real[real[split_col] == "train"] if split_col else real
    test = real[real[split_col] == "test"]
    xtr, ytr = _unit(_stack(train[emb_col])), train.label.to_numpy()
    xte, yte = _unit(_stack(test[emb_col])), test.label.to_numpy()

    def diversity(x, y):
        vals = []
        for c in np.unique(y):
            z = x[y == c]
            if len(z) > 1:
                sim = z @ z.T
                vals.append(1 - sim[np.triu_indices(len(z), 1)].mean())
        return float(np.mean(vals))

    def nn_acc(x, y):
        return float((y[(xte @ x.T).argmax(1)] == yte).mean() * 100)

    out = {"real_train": {"diversity": diversity(xtr, ytr), "nn_test_top1": nn_acc(xtr, ytr)},
           "real_test": {"diversity": diversity(xte, yte)}}
    for name, sub in variants.items():
        gen = pd.read_parquet(workdir / f"results/{dataset}/{sub}/image_embeddings.parquet")
        man = pd.read_parquet(workdir / f"results/{dataset}/{sub}/manifest.parquet")[["sample_id", "kept"]]
        gen = gen.merge(man, on="sample_id")
        for part, mask in (("kept", gen.kept.to_numpy(bool)), ("all", np.ones(len(gen), bool))):
            x, y = _unit(_stack(gen[emb_col][mask])), gen.label.to_numpy()[mask]
            nearest_real = (x @ xtr.T)
            same = ytr[None, :] == y[:, None]
            copy = (np.where(same, nearest_real, -1).max(1) > copy_cos).mean()
            out[f"{name}_{part}"] = {
                "images": int(mask.sum()), "diversity": diversity(x, y),
                "near_copy_share": float(copy),
                "mean_cos_to_nearest_real_same_class": float(np.where(same, nearest_real, -1).max(1).mean()),
                "nn_test_top1_real_plus": nn_acc(np.concatenate([xtr, x]), np.concatenate([ytr, y])),
                "nn_test_top1_synthetic_only": nn_acc(x, y)}
    return out


# ----------------------------------------------------------------------------------- conditioning
def conditioning(workdir: Path, dataset: str, samplers: list[str]) -> dict:
    emb = pd.read_parquet(workdir / f"results/{dataset}/embeddings.parquet")
    out = {}
    for sampler in samplers:
        path = workdir / f"results/{dataset}/samples/{sampler}.parquet"
        if not path.is_file():
            continue
        s = pd.read_parquet(path)
        if s.vector.isna().all():
            continue
        ranks, spread = [], []
        for c, group in emb.groupby("label"):
            x = _stack(group.embedding)
            v = _stack(s.vector[s.label == c])
            mu = x.mean(0)
            ranks.append(int(np.linalg.matrix_rank(np.cov(x, rowvar=False), tol=1e-6 * len(x))))
            spread.append(np.linalg.norm(v - mu, axis=1).mean() / np.linalg.norm(x - mu, axis=1).mean())
        out[sampler] = {"n_per_class": int(emb.groupby("label").size().min()), "cov_rank": ranks,
                        "sample_spread_over_real": float(np.mean(spread))}
    return out


# ------------------------------------------------------------------------------------------ judge
def judged(workdir: Path, dataset: str, variants: dict[str, str], cfg: dict) -> dict:
    from sdi.evaluation.judge import judge_filtered, target_judge

    looks = tuple(map(tuple, cfg["mini_data"]["looks"]))
    judge = target_judge(seed=0, looks=looks)
    return {name: judge_filtered(judge, workdir / f"results/{dataset}/{sub}", workdir, looks=looks,
                                 classes=_classes(cfg))
            for name, sub in variants.items()}


# ---------------------------------------------------------------------------------------- fidelity
def fidelity(workdir: Path, dataset: str, cfg: dict) -> dict:
    """Regenerate every real training image from its own projected embedding; judge class and look."""
    from sdi.config.settings import mini_world_paths
    from sdi.evaluation.judge import class_verdicts, in_looks, judge_looks, target_judge
    from sdi.models.generator import GenerationSettings, ImageGenerator

    emb = pd.read_parquet(workdir / f"results/{dataset}/embeddings.parquet")
    gen = ImageGenerator.from_folders(mini_world_paths(cfg)["sd"], device="cpu", dtype="fp32")
    g = cfg.get("generation", {})
    settings = GenerationSettings(steps=g.get("steps", 25), guidance_scale=g.get("guidance_scale", 2.0))
    samples = pd.DataFrame({"class_name": emb.class_name, "seed": np.arange(len(emb)) + 1000,
                            "vector": list(_stack(emb.embedding).astype(np.float32))})
    images = np.concatenate([gen.generate(samples.iloc[i:i + 64], settings, output_type="np")
                             for i in range(0, len(samples), 64)])
    looks = tuple(map(tuple, cfg["mini_data"]["looks"]))
    pixels = (images * 255).round().astype(np.uint8)
    verdicts = class_verdicts(target_judge(seed=0, looks=looks), pixels, emb.label.to_numpy(), _classes(cfg))
    return {"images": len(emb), **{f"{k}_accuracy": float(verdicts[k].mean()) for k in ("class", "look", "digit")},
            "in_dataset_looks": float(in_looks(judge_looks(pixels), looks).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--dataset", default="mini")
    parser.add_argument("--variant", action="append", default=None,
                        help="name=filter folder below results/<dataset> (default: sdi=filtered, "
                             "text=sei/text-g2.0/filtered, gmm2=sei/gmm2-g2.0/filtered where present)")
    parser.add_argument("--fidelity", action="store_true")
    parser.add_argument("--no-last", action="store_true", help="skip evaluating last/ on test")
    parser.add_argument("--configfile", nargs="+", default=["config/config.yaml", "config/mini_world.yaml"],
                        help="the run's config files, relative to workdir")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    wd = args.workdir.resolve()
    if args.variant:
        variants = dict(v.split("=", 1) for v in args.variant)
    else:
        candidates = {"sdi": "filtered", "text": "sei/text-g2.0/filtered", "gmm2": "sei/gmm2-g2.0/filtered"}
        variants = {k: v for k, v in candidates.items()
                    if (wd / f"results/{args.dataset}/{v}/manifest.parquet").is_file()}
    cfg = _config(wd, args.configfile)
    result = {"runs": runs(wd, args.dataset, last=not args.no_last)}
    pd.set_option("display.width", 200)
    print(run_table(result["runs"]).to_string(index=False))
    print("\nper-class test top-1, mean over seeds\n", per_class(result["runs"]).to_string())
    if (wd / f"results/{args.dataset}/image_embeddings.parquet").is_file():
        result["clip_space"] = clip_space(wd, args.dataset, variants)
        print("\nCLIP image space\n", pd.DataFrame(result["clip_space"]).T.round(3).to_string())
    result["conditioning"] = conditioning(wd, args.dataset, list(cfg.get("samplers", {})))
    print("\nconditioning space\n", json.dumps(result["conditioning"], indent=1))
    result["judge"] = judged(wd, args.dataset, variants, cfg)
    print("\njudge\n", json.dumps(result["judge"], indent=1))
    if args.fidelity:
        result["fidelity"] = fidelity(wd, args.dataset, cfg)
        print("\nprojector fidelity\n", json.dumps(result["fidelity"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
