# Experiments and report: distribution diagnostics per variant, report figures, the summary
# table over datasets x methods x seeds. Figures are marked for `snakemake --report`. Figures and
# the summary table take seconds and little memory: on a cluster they run on the submit host
# (localrule) instead of waiting in the queue.
from sdi.config.protocols import PROTOCOLS, TRAINED
from sdi.config.settings import enabled_datasets, variant_settings, without_execution


def report_targets(dataset):
    """Per-dataset report figures and diagnostics."""
    targets = [
        paths.report_figure(dataset, "training_curves"),
        paths.report_figure(dataset, "overview"),
    ]
    for v in VARIANTS:
        targets += [
            paths.variant_figure(dataset, v, name)
            for name in ("grid", "scores", "counts")
        ]
        targets.append(f"{paths.diagnostics_dir(dataset, v)}/summary.json")
    return targets


def diagnostics_samples(wildcards):
    """SEI variants: their sampler's vectors; the text baseline has none."""
    settings = variant_settings(config, wildcards.variant)
    if settings["mode"] != "sei":
        return {}
    return {"samples": paths.samples(wildcards.dataset, settings["sampler"])}


def summary_runs():
    """Every classifier run of the enabled datasets: {dataset, method, seed, metrics}."""
    return [
        {"dataset": d, "method": m, "seed": s, "metrics": f"{r}/metrics.json"}
        for d in enabled_datasets(config)
        for m, s, r in classifier_runs(d)
    ]


def summary_samplings():
    """The SEI samplers of the methods, per enabled dataset: {dataset, sampler, samples, methods}
    (the summary notes their one-image classes; the samples are upstream of the runs anyway).
    """
    used = {}
    for m, e in METHODS.items():
        if e["variant"] is None:
            continue
        settings = variant_settings(config, e["variant"])
        if settings["mode"] != "sei":
            continue
        for d in enabled_datasets(config):
            labels = used.setdefault((d, settings["sampler"]), [])
            if e["label"] not in labels:
                labels.append(e["label"])
    return [
        {"dataset": d, "sampler": s, "samples": paths.samples(d, s), "methods": labels}
        for (d, s), labels in used.items()
    ]


def stage_benchmarks(dataset, method):
    """Benchmark files of the upstream stages a method needs, named after their logs
    (logs/X.log -> benchmarks/X.tsv); the summary counts those that exist. A protocol that
    trains no network (linear_probe) reads the real images' stored CLIP embeddings."""
    v = METHODS[method]["variant"]

    def bench(rule, **wildcards):
        """The benchmark file that rule declares, for this dataset's job."""
        return str(getattr(rules, rule).benchmark).format(dataset=dataset, **wildcards)

    probe = (
        []
        if PROTOCOLS[METHODS[method]["protocol"]].trains_network
        else [bench("image_embeddings")]
    )
    if v is None:
        return probe
    settings = variant_settings(config, v)
    files = [bench("split"), *probe]
    if settings["mode"] == "sei":
        files += [bench("train_projector"), bench("embeddings")]
    files.append(bench("sample", sampler=settings["sampler"]))
    files += [bench("generate", variant=v, shard=i) for i in SHARDS]
    files.append(
        bench("filter_default")
        if v == DEFAULT_VARIANT
        else bench("filter", other_variant=v)
    )
    return files


rule diagnostics:
    input:
        unpack(lambda w: model_input("clip")),
        unpack(diagnostics_samples),
        embeddings=paths.embeddings(),
        filtered=lambda w: filtered_dir(w.dataset, w.variant),
        split=paths.split(),
    output:
        summary=f"{paths.diagnostics_dir()}/summary.json",
        per_class=f"{paths.diagnostics_dir()}/per_class.csv",
        duplicates=f"{paths.diagnostics_dir()}/near_duplicates.csv",
        distances=report(
            f"{paths.diagnostics_dir()}/distances.png",
            caption="../report/distances.rst",
            category="Diagnostics",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "variant": "{variant}",
                "figure": "distances",
            },
        ),
        projection=report(
            f"{paths.diagnostics_dir()}/projection.png",
            caption="../report/projection.rst",
            category="Diagnostics",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "variant": "{variant}", "figure": "PCA"},
        ),
    log:
        "logs/{dataset}/{variant}/diagnostics.log",
    benchmark:
        "benchmarks/{dataset}/{variant}/diagnostics.tsv"
    params:
        out_dir=paths.diagnostics_dir(),
        filter_clip=config["models"]["filter_clip"],
        models=MODELS,
        options=without_execution("diagnostics", config["diagnostics"]),
    threads: job_threads("diagnostics")
    resources:
        **job_resources("diagnostics"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/diagnostics.py"


rule report_filter_figures:
    input:
        split=paths.split(),
        filtered=lambda w: filtered_dir(w.dataset, w.variant),
    output:
        grid=report(
            paths.variant_figure(name="grid"),
            caption="../report/grid.rst",
            category="Samples",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "variant": "{variant}", "figure": "grid"},
        ),
        scores=report(
            paths.variant_figure(name="scores"),
            caption="../report/scores.rst",
            category="Filter",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "variant": "{variant}",
                "figure": "scores",
            },
        ),
        counts=report(
            paths.variant_figure(name="counts"),
            caption="../report/counts.rst",
            category="Filter",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "variant": "{variant}",
                "figure": "counts",
            },
        ),
    log:
        "logs/{dataset}/{variant}/report_filter_figures.log",
    params:
        grid=config["report"],
    localrule: True
    threads: job_threads("report_filter_figures")
    resources:
        **job_resources("report_filter_figures"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/report_filter_figures.py"


rule training_curves:
    input:
        logs=lambda w: [
            f"{r}/log.csv" for _, _, r in classifier_runs(w.dataset, TRAINED)
        ],
    output:
        report(
            paths.report_figure(name="training_curves"),
            caption="../report/training_curves.rst",
            category="Training",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "training curves"},
        ),
    log:
        "logs/{dataset}/training_curves.log",
    params:
        labels=lambda w: [
            f"{METHODS[m]['label']} s{s}"
            for m, s, _ in classifier_runs(w.dataset, TRAINED)
        ],
    localrule: True
    threads: job_threads("training_curves")
    resources:
        **job_resources("training_curves"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/training_curves.py"


rule summary:
    input:
        metrics=[r["metrics"] for r in summary_runs()],
        samples=[e["samples"] for e in summary_samplings()],
    output:
        csv=paths.summary("csv"),
        md=paths.summary("md"),
        html=report(
            paths.summary("html"),
            caption="../report/summary.rst",
            category="Summary",
            labels={"figure": "table"},
        ),
        png=report(
            paths.summary("png"),
            caption="../report/summary_chart.rst",
            category="Summary",
            labels={"figure": "bar chart"},
        ),
    log:
        "logs/summary.log",
    params:
        runs=summary_runs(),
        datasets=enabled_datasets(config),
        labels={m: e["label"] for m, e in METHODS.items()},
        protocols={m: e["protocol"] for m, e in METHODS.items()},
        samplings=summary_samplings(),
        stage_benchmarks={
            m: [f for d in enabled_datasets(config) for f in stage_benchmarks(d, m)]
            for m in METHODS
        },
    localrule: True
    threads: job_threads("summary")
    resources:
        **job_resources("summary"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/summary.py"


rule overview:
    input:
        split=paths.split(),
        sdi=lambda w: filtered_dir(w.dataset, DEFAULT_VARIANT),
        text=lambda w: [filtered_dir(w.dataset, v) for v in TEXT_VARIANTS[:1]],
    output:
        report(
            paths.report_figure(name="overview"),
            caption="../report/overview.rst",
            category="Samples",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "overview"},
        ),
    log:
        "logs/{dataset}/overview.log",
    threads: job_threads("report_filter_figures")
    resources:
        **job_resources("report_filter_figures"),
    conda:
        "../envs/sdi.yaml"
    script:
        "../workflow_scripts/overview.py"
