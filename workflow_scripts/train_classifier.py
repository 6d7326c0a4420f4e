"""Rule train_classifier: ResNet50 from scratch on real (+ kept synthetic) images (METHOD.md section 7).

input:  split: folder with train.parquet, val.parquet, test.parquet (image_id, path, label, class_name);
        filtered (optional, absent for the real-only run): folder with manifest.parquet (path, label, kept, ...);
        only rows with kept == True are used.
output: metrics (<out_dir>/metrics.json), log_csv (<out_dir>/log.csv), run_config (the run's settings
        snapshot). out_dir also receives best.pt and the resumable last.pt (not declared, so a killed job resumes
        from last.pt).
params: out_dir; settings: train_classifier keywords (epochs, batch_size, lr, momentum, weight_decay, resize,
        crop, augment, num_workers, seed, amp), the method's augment and the run's seed filled in;
        snapshot: every setting the run depends on (sdi.summary.run_snapshot); device.
"""

from pathlib import Path

import pandas as pd
import torch

from sdi.classifier import train_classifier
from sdi.summary import write_run_config
from sdi.workflow import logged

SETTINGS = {"epochs", "batch_size", "lr", "momentum", "weight_decay", "resize", "crop", "augment", "num_workers",
            "seed", "amp", "processes"}

with logged(snakemake.log[0], gpus=snakemake.resources.get("gpu", 0)) as log:  # noqa: F821
    inp, out, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    settings = dict(p.settings)
    unknown = sorted(set(settings) - SETTINGS)
    if unknown:
        raise ValueError(f"config.classifier: unknown key(s) {unknown}; allowed: {', '.join(sorted(SETTINGS))}")
    out_dir = Path(p.out_dir)
    if [Path(out.metrics), Path(out.log_csv)] != [out_dir / "metrics.json", out_dir / "log.csv"]:
        raise ValueError(f"rule train_classifier: outputs must be {out_dir}/metrics.json and {out_dir}/log.csv "
                         f"(params.out_dir), got {out.metrics} and {out.log_csv}")
    torch.set_num_threads(max(1, snakemake.threads))  # noqa: F821  (stay within the rule's cores)

    split = {name: pd.read_parquet(Path(inp.split) / f"{name}.parquet") for name in ("train", "val", "test")}
    names = pd.concat(split.values()).drop_duplicates("label").sort_values("label")
    num_classes = int(names.label.max()) + 1
    name_of = dict(zip(names.label, names.class_name, strict=True))
    write_run_config(p.snapshot, out.run_config)
    synthetic = None
    if inp.get("filtered"):
        path = Path(inp.filtered) / "manifest.parquet"
        generated = pd.read_parquet(path)
        missing = [c for c in ("path", "label", "kept") if c not in generated.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; the filter stage writes path, label and kept")
        synthetic = generated[generated.kept.astype(bool)][["path", "label"]]
        log.info("%s: %d of %d generated images kept", path, len(synthetic), len(generated))
    train_classifier(split["train"], split["val"], split["test"], out_dir, num_classes=num_classes,
                     class_names=[name_of.get(c, str(c)) for c in range(num_classes)], synthetic=synthetic,
                     device=p.device, **settings)
