"""Rule train_classifier: ResNet50 from scratch on a method's training set (METHOD.md sections 7 and 8).

input:  split: folder with train.parquet, val.parquet, test.parquet (image_id, path, label, class_name);
        filtered (methods with pool kept): folder with manifest.parquet (path, label, kept, rank, ...);
        shards (methods with pool generated): the variant's generation shard manifests (path, label, ...).
output: metrics (<out_dir>/metrics.json), log_csv (<out_dir>/log.csv), run_config (the run's settings
        snapshot). out_dir also receives train_set.parquet (the exact training set), best.pt and the
        resumable last.pt (not declared, so a killed job resumes from last.pt) and tensorboard/ (config.tracking,
        read at run time: changing it reruns nothing).
params: out_dir; settings: train_classifier keywords (config.classifier with the method's augment and
        augment_at and the run's seed); training_set: variant, pool, multiples, real_copies, keep_ratio,
        draw_seed (sdi.training_set.build_training_set); snapshot: every setting the run depends on
        (sdi.summary.run_snapshot). device and num_workers come from the config (execution-only).
"""

from pathlib import Path

import pandas as pd
import torch

from sdi.classifier import train_classifier
from sdi.config import execution_settings
from sdi.summary import write_run_config
from sdi.tracking import TrackingConfig
from sdi.training_set import method_training_set, read_generated
from sdi.workflow import logged

execution = execution_settings(snakemake.config, "classifier")  # noqa: F821
with logged(snakemake.log[0], gpus=snakemake.resources.get("gpu", 0), execution=execution) as log:  # noqa: F821
    inp, out, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
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

    ts = p.training_set  # the same rows sdi.export writes for results/<dataset>/export/<method>
    generated, source = read_generated(inp.get("filtered"), inp.get("shards"))
    train, pool = method_training_set(split["train"], generated, source=source, **ts)
    if pool is not None:
        log.info("%s: %d of %d generated images in the pool (pool %s%s)", source, len(pool), len(generated),
                 ts["pool"], f", re-selected at keep_ratio {ts['keep_ratio']}" if ts["keep_ratio"] is not None else "")
    log.info("training set: %d rows (%s)", len(train), train.source.value_counts().to_dict())
    train_classifier(train, split["val"], split["test"], out_dir, num_classes=num_classes,
                     class_names=[name_of.get(c, str(c)) for c in range(num_classes)], **execution,
                     tracking=TrackingConfig.from_config(snakemake.config),  # noqa: F821
                     run_name=p.out_dir.removeprefix("results/"), **p.settings)
