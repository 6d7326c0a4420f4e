"""Where the workflow writes the artifacts that stages pass to each other, in one place.

Each function gives the path of one artifact. Called with names it gives a concrete path
(``split("demo")`` is ``results/demo/split``); called without, it keeps Snakemake's wildcards
(``split()`` is ``results/{dataset}/split``), which is what a rule declares. So a rule's output and
every input function that asks for it build the path in the same way.
"""

from __future__ import annotations

DATASET, VARIANT = "{dataset}", "{variant}"


def split(dataset: str = DATASET) -> str:
    """The train/val/test manifests (rule split)."""
    return f"results/{dataset}/split"


def medmnist_images(dataset: str = DATASET) -> str:
    """A MedMNIST dataset's arrays as PNG files, the folder its split reads (rule medmnist_images)."""
    return f"results/{dataset}/images"


def projector_dir(dataset: str = DATASET) -> str:
    """The trained semantic projector (rule train_projector)."""
    return f"results/{dataset}/projector/final"


def projector_loss(dataset: str = DATASET) -> str:
    """The projector's loss per epoch (rule train_projector)."""
    return f"results/{dataset}/projector/loss.csv"


def projector_checkpoints(dataset: str = DATASET) -> str:
    """Where a projector run resumes from: beside its outputs, not one of them (rule train_projector)."""
    return f"results/{dataset}/projector/checkpoints"


def embeddings(dataset: str = DATASET) -> str:
    """CLIP and projected embeddings of the split's images (rule embeddings)."""
    return f"results/{dataset}/embeddings.parquet"


def image_embeddings(dataset: str = DATASET) -> str:
    """The real images' CLIP embeddings with the filter's CLIP (rule image_embeddings)."""
    return f"results/{dataset}/image_embeddings.parquet"


def samples(dataset: str = DATASET, sampler: str = "{sampler}") -> str:
    """A sampler's conditioning vectors (rule sample)."""
    return f"results/{dataset}/samples/{sampler}.parquet"


def variant_dir(dataset: str = DATASET, variant: str = VARIANT) -> str:
    """A variant's generated images (``images/``) and shard manifests (``shards/``); every variant's, the
    text baseline's included (docs/method.md, "Terms")."""
    return f"results/{dataset}/sei/{variant}"


def shard(dataset: str = DATASET, variant: str = VARIANT, shard: int | str = "{shard}") -> str:
    """The manifest of one generation shard of a variant (rule generate)."""
    return f"{variant_dir(dataset, variant)}/shards/{shard}.parquet"


def filtered_dir(dataset: str = DATASET, variant: str | None = VARIANT) -> str:
    """A variant's filtered set (rule filter); variant None: the default variant's (rule filter_default)."""
    if variant is None:
        return f"results/{dataset}/filtered"
    return f"{variant_dir(dataset, variant)}/filtered"


def run_dir(dataset: str = DATASET, method: str = "{method}", seed: int | str = "{seed}") -> str:
    """The folder of one classifier run: metrics.json, log.csv, config.yaml (rules train_classifier, linear_probe)."""
    return f"results/{dataset}/classifier/{method}/seed{seed}"


def diagnostics_dir(dataset: str = DATASET, variant: str = VARIANT) -> str:
    """A variant's distribution diagnostics: summary.json, per_class.csv, near_duplicates.csv and figures
    (rule diagnostics)."""
    return f"results/{dataset}/diagnostics/{variant}"


def report_figure(dataset: str = DATASET, name: str = "{name}") -> str:
    """A dataset's report figure: ``overview``, ``training_curves`` (rules overview, training_curves)."""
    return f"results/{dataset}/report/{name}.png"


def variant_figure(dataset: str = DATASET, variant: str = VARIANT, name: str = "{name}") -> str:
    """A variant's filter figure: ``grid``, ``scores``, ``counts`` (rule report_filter_figures)."""
    return f"results/{dataset}/report/{variant}/{name}.png"


def summary(ext: str = "{ext}") -> str:
    """The summary over datasets, methods and seeds: csv, md, html, png (rule summary)."""
    return f"results/summary.{ext}"
