"""The experiment matrix: ``experiments.methods`` resolved (training-set keys, variants,
augmentations) and checked, and the snapshot each classifier run writes. Torch- and pandas-free: the
workflow reads it while planning.
"""

from __future__ import annotations

import os

import yaml

from sdi.config.protocols import DEFAULT, PROBED, PROTOCOL_KEYS, PROTOCOLS, TRAINED, WEIGHTED
from sdi.config.settings import without_checks, without_execution
from sdi.io.artifacts import atomic_write

FILTER_SETTINGS = ("keep_ratio", "score")  # keys of sdi.config.settings.variant_settings that only filtering reads


# The settings of a resolved method that decide its training set: the keywords of
# sdi.pipeline.training_set.method_training_set (here, so that planning need not import pandas).
TRAINING_SET_KEYS = ("variant", "pool", "multiples", "real_copies", "keep_ratio", "draw_seed")
SYNTHETIC_KEYS = ("multiples", "pool", "keep_ratio", "draw_seed")  # meaningful only with a variant


# --------------------------------------------------------------------------- the matrix
def methods(config: dict) -> dict[str, dict]:
    """Each method's resolved entry, in config order: {method: {
        "variant": name or None, "augment": str, "augment_at": 'crop' | 'raw', "label": str,
        "multiples": N or None, "pool": 'kept' | 'generated' | None, "real_copies": int,
        "keep_ratio": float or None, "draw_seed": int, "protocol": str}}.

    augment, augment_at and protocol default to config.classifier's, label to the method name, pool to
    'kept' for a method with a variant (None without), real_copies to 0, draw_seed to 0.
    keep_ratio (with pool 'kept') re-selects the variant's filtered images at another ratio.
    """
    classifier = config["classifier"]
    out = {}
    for name, entry in config["experiments"]["methods"].items():
        entry = entry or {}
        variant = entry.get("variant")
        out[name] = {
            "variant": variant,
            "augment": entry.get("augment", classifier.get("augment", "none")),
            "augment_at": entry.get("augment_at", classifier.get("augment_at", "crop")),
            "label": entry.get("label", name),
            "multiples": entry.get("multiples"),
            "pool": entry.get("pool", "kept") if variant is not None else entry.get("pool"),
            "real_copies": int(entry.get("real_copies", 0)),
            "keep_ratio": entry.get("keep_ratio"),
            "draw_seed": int(entry.get("draw_seed", 0)),
            "protocol": entry.get("protocol", classifier.get("protocol", DEFAULT)),
        }
    return out


def classifier_settings(config: dict, entry: dict, seed: int) -> dict:
    """What a run of the resolved method ``entry`` (:func:`methods`) trains with, by its protocol; only the keys
    that protocol reads (:mod:`sdi.config.protocols`), so that editing another protocol's keys reruns nothing.

    scratch: config.classifier (less execution-only and protocol keys) with the method's augment,
    augment_at and the seed: the keywords of :func:`sdi.training.classifier.train_classifier`, with no
    ``protocol`` key, so that a scratch run's params stay those of a config that names no protocol.
    finetune: the same with ``protocol``, ``weights``, ``frozen`` and the finetune
    ``lr`` and ``epochs``. linear_probe: ``protocol``, ``seed`` and the linear_probe keys
    (:func:`sdi.training.linear_probe.run_probe`).
    """
    classifier = without_execution("classifier", config["classifier"])
    protocol = PROTOCOLS[entry["protocol"]]
    if not protocol.trains_network:
        return {"protocol": protocol.name, **classifier.get(protocol.section, {}), "seed": int(seed)}
    settings = {k: v for k, v in classifier.items() if k not in PROTOCOL_KEYS}
    if settings.get("checkpoint") == "best":  # the default is left out, so runs made before the key keep their params
        del settings["checkpoint"]
    settings.update({"augment": entry["augment"], "augment_at": entry["augment_at"], "seed": int(seed)})
    if protocol.uses_weights:  # finetune
        own = classifier.get(protocol.section, {})
        settings.update({"protocol": protocol.name, "weights": classifier.get("weights"), "lr": own["lr"],
                         "epochs": own["epochs"], "frozen": list(own.get("frozen", []))})
    return settings


def experiment_errors(config: dict) -> list[str]:
    """Method entries that cannot be run, each naming its key and the fix (checked before any job).

    What the schema cannot say (it rejects unknown keys, ``multiples`` <= 0 and ``real_copies`` < 0
    first): a variant that does not exist, the synthetic-data keys (multiples, pool, keep_ratio,
    draw_seed) on a method without a variant, ``keep_ratio`` with ``pool: generated``, and
    ``augment_at: raw`` with no augmentation.
    """
    problems = []
    entries = config.get("experiments", {}).get("methods") or {}
    for name, entry in entries.items():
        entry = entry or {}
        key = f"config.experiments.methods.{name}"
        v = entry.get("variant")
        if v is not None and v not in config["variants"]:
            problems.append(f"{key}.variant: {v!r} is not a key of variants "
                            f"({', '.join(config['variants'])}); add the variant or fix the name")
        if v is None:
            for k in SYNTHETIC_KEYS:
                if k in entry:
                    problems.append(f"{key}.{k}: the method has no variant, so it has no synthetic images to "
                                    f"{'draw from' if k != 'keep_ratio' else 'select'}; set {key}.variant "
                                    f"or remove {k}")
        elif entry.get("pool", "kept") == "generated" and "keep_ratio" in entry:
            problems.append(f"{key}.keep_ratio: only applies to pool: kept (pool: generated ignores the filter); "
                            "remove keep_ratio or set pool: kept")
    resolved = methods(config) if not problems else {}
    for name, m in resolved.items():
        if m["augment_at"] == "raw" and m["augment"] == "none" and "augment_at" in (entries[name] or {}):
            problems.append(f"config.experiments.methods.{name}.augment_at: 'raw' places an augmentation, but the "
                            f"method's augment is 'none'; set {name}.augment (randaugment, cutout, gridmask) "
                            "or remove augment_at")
    classifier = config.get("classifier", {})
    problems += protocol_errors(config, entries, resolved)
    if resolved and classifier.get("augment_at") == "raw" and all(m["augment"] == "none" for m in resolved.values()):
        problems.append("config.classifier.augment_at: 'raw' places an augmentation, but no method has one "
                        "(classifier.augment and every method's augment are 'none'); set augment or use 'crop'")
    return problems


def protocol_errors(config: dict, entries: dict, resolved: dict) -> list[str]:
    """What protocols need from the config: finetune a weights file (its contents are checked by
    :func:`sdi.config.planning.check_config`), linear_probe no augmentation of its own. (Its CLIP, the
    filter's, is always required: :func:`sdi.config.validation.path_errors`.)"""
    problems = []
    classifier = config.get("classifier", {})
    for protocol in WEIGHTED:
        users = [n for n, m in resolved.items() if m["protocol"] == protocol]
        if users and not classifier.get("weights"):
            problems.append(f"config.classifier.weights: protocol {protocol} (method(s) {', '.join(users)}) starts "
                            "from local pretrained weights, and none are set; set it to a torchvision state dict "
                            f"(.pth) or safetensors file of classifier.arch, or use protocol {DEFAULT}")
    for name, m in resolved.items():
        if m["protocol"] in PROBED and (entries[name] or {}).get("augment", "none") != "none":
            problems.append(f"config.experiments.methods.{name}.augment: protocol {m['protocol']} fits fixed CLIP "
                            "embeddings of the images, so no augmentation applies; remove augment or use protocol "
                            f"{' or '.join(TRAINED)}")
    return problems


def run_snapshot(config: dict, dataset: str, method: str, seed: int, variant_settings: dict | None) -> dict:
    """Everything a classifier run depends on, as plain data (written to the run's config.yaml).

    Only the sections the run reads are included, so editing an unrelated key (another
    dataset, another method) does not change it.
    """
    entry = methods(config)[method]
    snapshot = {
        "dataset": dataset,
        "method": method,
        "seed": int(seed),
        "method_entry": entry,
        "datasets": {dataset: config["datasets"][dataset]},
        "split": without_checks("split", config["split"]),
        "classifier": classifier_settings(config, entry, seed),
    }
    if entry["variant"] is not None:
        if entry["pool"] == "generated":  # the filter's settings do not reach this run
            variant_settings = {k: v for k, v in variant_settings.items() if k not in FILTER_SETTINGS}
        snapshot.update({
            "variant": entry["variant"],
            "variant_settings": variant_settings,
            "sampler": without_checks("sampler", config["samplers"][variant_settings["sampler"]]),
            "models": config["models"],
            "projector": config["projector"],
            "generation_seed": config["generation"]["seed"],
        })
    return snapshot


def write_run_config(snapshot: dict, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(yaml.safe_dump(snapshot, sort_keys=False)))
