"""Rule train_classifier: ResNet50 from scratch on a method's training set (METHOD.md sections 7 and 8), or
with protocol finetune a torchvision model from classifier.weights (sdi.training.classifier).

input:  split: folder with train.parquet, val.parquet, test.parquet (image_id, path, label, class_name);
        filtered (methods with pool kept): folder with manifest.parquet (path, label, kept, rank, ...);
        shards (methods with pool generated): the variant's generation shard manifests (path, label, ...).
output: metrics (<out_dir>/metrics.json), log_csv (<out_dir>/log.csv), run_config (the run's settings
        snapshot). out_dir also receives train_set.parquet (the exact training set), best/ and the
        resumable last/ (not declared, so a killed job resumes from last/) and tensorboard/ (config.tracking,
        read at run time: changing it reruns nothing).
params: out_dir; settings: train_classifier keywords (sdi.config.experiments.classifier_settings:
        config.classifier with the method's augment and augment_at and the run's seed; finetune: protocol,
        weights, frozen and the finetune lr and epochs); training_set: variant, pool, multiples, real_copies,
        keep_ratio, draw_seed (sdi.pipeline.training_set.build_training_set); snapshot: every setting the run depends on
        (sdi.config.experiments.run_snapshot). device and num_workers come from the config (execution-only).
The run is sdi.training.classifier.run_job, in this process or, with several GPUs, in one torchrun process per GPU.
"""

from dataclasses import asdict

import torch

from sdi.config.experiments import write_run_config
from sdi.config.protocols import DEFAULT, PROTOCOLS, WEIGHTED
from sdi.config.tracking import TrackingConfig
from sdi.config.validation import execution_settings
from sdi.io.jobs import logged
from sdi.training import distributed

execution = execution_settings(snakemake.config, "classifier")
with logged(snakemake.log[0], gpus=snakemake.resources.get("gpu", 0), execution=execution) as log:
    inp, p = snakemake.input, snakemake.params
    weights = snakemake.config["classifier"].get("weights")
    protocol = p.settings.get("protocol", DEFAULT)  # scratch's settings leave it out (as before protocols)
    if weights and not PROTOCOLS[protocol].uses_weights:
        log.info("protocol %s: classifier.weights (%s) is ignored, the network starts from random weights "
                 "(protocol %s uses it)", protocol, weights, " or ".join(WEIGHTED))
    torch.set_num_threads(max(1, snakemake.threads))  # stay within the rule's cores
    write_run_config(p.snapshot, snakemake.output.run_config)
    job = {"split": inp.split, "filtered": inp.get("filtered"), "shards": list(inp.get("shards") or []) or None,
           "training_set": dict(p.training_set), "out_dir": p.out_dir, "settings": {**p.settings, **execution},
           "tracking": asdict(TrackingConfig.from_config(snakemake.config)),
           "run_name": p.out_dir.removeprefix("results/")}
    distributed.launch("sdi.training.classifier", job, distributed.world_size_for(execution["device"]))
