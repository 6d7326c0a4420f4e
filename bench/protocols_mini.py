"""The three evaluation protocols side by side on the mini world (issue 21's demo table).

    python bench/protocols_mini.py WORKDIR [--seeds 0 1 2]

1. Pretrains the "ImageNet" of the mini world: a torchvision ResNet18 classifying the digits the mini
   world was trained on (its ``world`` MNIST split, drawn in random looks; never the target dataset's
   held-out digits), and saves its state dict as ``WORKDIR/resnet18-mini-world.pth``, the way
   torchvision publishes ``resnet18-f37072fd.pth``.
2. Runs the workflow in WORKDIR (a fresh copy) on ``config/mini_world.yaml`` with ``config/mini_digits.yaml``
   (one class per digit, the dataset this table was first measured on) and
   four methods under each protocol: scratch (the paper's, as ``make demo``), finetune (from that file, the schema's
   finetune defaults), linear_probe (the mini world's CLIP, the filter's).
3. Prints results/summary.md and the Spearman rank correlation between the probe's and scratch's
   method orders (per protocol, methods ordered by mean test top-1).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

METHODS = {"real": {"label": "Real only"}, "sd-text": {"variant": "text-g2.0", "label": "SD (text)"},
           "sdi": {"variant": "gauss-g2.0", "label": "SDI (Gaussian)"},
           "sdi-gmm2": {"variant": "gmm2-g2.0", "label": "SDI (GMM-2)"}}
PROTOCOLS = {"scratch": "", "finetune": "-ft", "linear_probe": "-probe"}


def pretrain(out: Path, *, epochs: int = 3, renders: int = 2, seed: int = 0) -> dict:
    """ResNet18 on the mini world's digits in random looks; returns its held-out (judge split) accuracy."""
    import torchvision

    from sdi.data import mini_corpus as corpus
    from sdi.training.transforms import MEAN, STD

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    digits, labels = corpus.load_mnist()
    split = corpus.source_split(labels)

    def images(idx, n_renders):
        which = np.tile(idx, n_renders)
        fg, bg, stroke = corpus.random_looks(len(which), rng)
        x = torch.from_numpy(corpus.render(digits[which], fg, bg, stroke))
        x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
        return x, torch.from_numpy(labels[which])

    x, y = images(split["world"], renders)
    xj, yj = images(split["judge"], 1)
    model = torchvision.models.resnet18(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.05, total_steps=epochs * ((len(x) + 63) // 64))
    t = time.time()
    for epoch in range(epochs):
        model.train()
        for i in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xj).argmax(1) == yj).float().mean().item() * 100
        print(f"pretrain epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, held-out digits top-1 {acc:.1f}%",
              flush=True)
    torch.save(model.state_dict(), out)
    return {"images": len(x), "epochs": epochs, "heldout_top1": acc, "seconds": time.time() - t}


def main() -> None:
    from helpers import copy_workflow

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    wf = copy_workflow(args.workdir)
    weights = wf / "resnet18-mini-world.pth"
    print("pretraining:", pretrain(weights), flush=True)
    methods = {f"{m}{suffix}": {**entry, "protocol": protocol, "label": f"{entry['label']}"}
               for protocol, suffix in PROTOCOLS.items() for m, entry in METHODS.items()}
    # the demo's sampler and variant rows plus GMM-2's, which the demo's config does not run
    overlay = {"classifier": {"weights": weights.name},
               "samplers": {"gmm2": {"method": "gmm", "n_components": 2, "expansion": 10}},
               "variants": {"gmm2-g2.0": {"sampler": "gmm2"}},
               "experiments": {"seeds": args.seeds, "methods": methods}}
    (wf / "config" / "protocols.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    t = time.time()
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(args.cores), "all", "--configfile",
                    "config/mini_world.yaml", "config/mini_digits.yaml", "config/protocols.yaml"], cwd=wf, check=True)
    print(f"workflow: {time.time() - t:.0f} s")
    print((wf / "results" / "summary.md").read_text())
    import pandas as pd
    from scipy.stats import spearmanr

    table = pd.read_csv(wf / "results" / "summary.csv").set_index("method")
    scratch = [table.loc[m, "mini"] for m in METHODS]
    for p, suffix in PROTOCOLS.items():
        if p != "scratch":
            rho = spearmanr(scratch, [table.loc[f"{m}{suffix}", "mini"] for m in METHODS]).statistic
            print(f"Spearman rank correlation of the {len(METHODS)} methods' order, scratch vs {p}: {rho:.2f}")


if __name__ == "__main__":
    main()
