"""The experiment matrix (dataset x method x seed) and its summary table (the paper's Table 2).

Config (``experiments:``, see config/schema.yaml)::

    experiments:
      seeds: [0, 1, 2]                        # classifier seeds; every method runs once per seed
      methods:                                # rows of the table, in this order
        real: {label: Real only}              # real images only
        randaugment: {augment: randaugment}   # real images + an augmentation baseline
        sdi: {variant: gauss-g2.0, label: SDI}  # real + the kept images of a variant

Each (dataset, method, seed) is one classifier run with its files in
``results/<dataset>/classifier/<method>/seed<k>/``: ``metrics.json``, ``log.csv`` and
``config.yaml`` (the snapshot of every setting the run depends on, :func:`run_snapshot`).
The classifier seed only seeds the classifier: split, projector, embeddings, samples,
generated and filtered images are shared by every method and seed that uses them.

:func:`write_summary` writes ``summary.csv`` (numbers), ``summary.md`` (the table with the
best and second best of each column in bold and underlined, each cell linking to its runs'
metrics and config), ``summary.html`` (the same table for the Snakemake report) and
``summary.png`` (a bar chart).

Cost: ``device_hours`` of a method is the sum of the wall time of every job its runs need,
counted from scratch for each method (shared stages such as the projector are counted in
every method that uses them): the classifier runs (``wall_time_s`` of metrics.json, all
seeds and datasets) plus every upstream stage that has a Snakemake benchmark file (the ``s``
column). The devices the runs used are listed beside it; on ``cuda`` these are GPU-hours.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from sdi.config.protocols import DEFAULT as DEFAULT_PROTOCOL
from sdi.config.protocols import TITLES as PROTOCOL_TITLES
from sdi.io.artifacts import atomic_write
from sdi.io.lazy import lazy_import

np = lazy_import("numpy")  # loaded on first use: planning imports this module
pd = lazy_import("pandas")


METRICS = ("top1", "balanced")


# --------------------------------------------------------------------------- reading runs
def read_benchmark_seconds(path: str | os.PathLike) -> float:
    """Wall seconds of a Snakemake benchmark file (sum of the ``s`` column over repeats)."""
    table = pd.read_csv(path, sep="\t")
    if "s" not in table.columns:
        raise ValueError(f"{path}: no 's' column; is it a Snakemake benchmark file?")
    return float(table["s"].sum())


CLASS_COLUMNS = ("num_classes", "test_classes", "absent_classes")


def _class_coverage(m: dict) -> dict:
    """num_classes, test_classes (those with a test image: the accuracies are over them) and absent_classes
    (names) of a metrics.json; from its per_class rows where it predates those keys, None where it has neither."""
    if "test_classes" in m:
        return {"num_classes": int(m["num_classes"]), "test_classes": int(m["test_classes"]),
                "absent_classes": list(m.get("absent_classes", []))}
    if m.get("per_class"):
        absent = [str(r["class_name"]) for r in m["per_class"] if not r["n"]]
        return {"num_classes": len(m["per_class"]), "test_classes": len(m["per_class"]) - len(absent),
                "absent_classes": absent}
    return {"num_classes": None, "test_classes": None, "absent_classes": []}


def collect_runs(runs: list[dict]) -> pd.DataFrame:
    """One row per run: dataset, method, seed, metrics (path), top1, balanced, wall_time_s, device,
    num_classes, test_classes, absent_classes (see :func:`class_notes`).

    runs: dicts with keys dataset, method, seed, metrics (path of metrics.json).
    """
    rows = []
    for run in runs:
        path = Path(run["metrics"])
        m = json.loads(path.read_text())
        missing = [k for k in (*METRICS, "wall_time_s", "device") if k not in m]
        if missing:
            raise ValueError(f"{path}: missing key(s) {missing}; rerun the classifier "
                             "(sdi.training.classifier writes them)")
        rows.append({"dataset": run["dataset"], "method": run["method"], "seed": int(run["seed"]),
                     "metrics": str(path), **{k: float(m[k]) for k in METRICS},
                     "wall_time_s": float(m["wall_time_s"]), "device": str(m["device"]), **_class_coverage(m)})
    return pd.DataFrame(rows, columns=["dataset", "method", "seed", "metrics", *METRICS, "wall_time_s", "device",
                                       *CLASS_COLUMNS])


def _names(names: list[str], shown: int = 5) -> str:
    quoted = [repr(n) for n in names[:shown]]
    return ", ".join(quoted) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def class_notes(runs: pd.DataFrame, datasets: list[str]) -> list[str]:
    """One line per dataset whose test set lacks classes (config.split.allow_missing_test_classes), e.g.
    ``pets: accuracy over 9 of 10 classes (class 'X' has no test image)``."""
    notes = []
    for d in datasets:
        rows = runs[(runs.dataset == d) & runs.test_classes.notna()]
        rows = rows[rows.test_classes < rows.num_classes]
        seen = dict.fromkeys((int(r.test_classes), int(r.num_classes), tuple(r.absent_classes))
                             for r in rows.itertuples())
        for tested, total, absent in seen:
            what = (f"class {_names(list(absent))} has" if len(absent) == 1
                    else f"classes {_names(list(absent))} have")
            notes.append(f"{d}: accuracy over {tested} of {total} classes ({what} no test image; balanced accuracy "
                         f"is the mean recall over those {tested})")
    return notes


def sampling_notes(samplings: list[dict]) -> list[str]:
    """One line per (dataset, sampler) that sampled a class from one image.

    samplings: dicts with dataset, sampler, samples (path of its samples table), methods (row labels using it).
    """
    from sdi.pipeline.sampling import single_image_classes

    notes = []
    for entry in samplings:
        single = single_image_classes(entry["samples"])
        if not single:
            continue
        listed = ", ".join(f"{c['class_name']!r} ({c['n_samples']} samples)" for c in single[:5])
        listed += f" and {len(single) - 5} more" if len(single) > 5 else ""
        notes.append(f"{entry['dataset']}, sampler {entry['sampler']} ({', '.join(entry['methods'])}): "
                     f"{len(single)} class(es) have one training image, so all their samples are copies of that "
                     f"image's embedding: {listed}; set config.samplers.{entry['sampler']}.min_images: 2 to fail "
                     "instead")
    return notes


def summary_table(runs: pd.DataFrame, datasets: list[str], method_names: list[str],
                  metric: str = "top1") -> pd.DataFrame:
    """Table 2: index = methods, columns ``<dataset>``, ``<dataset>_std``, ``<dataset>_n`` for each
    dataset, then ``average`` and ``average_std``.

    A cell is the mean and sample standard deviation (ddof=1; 0 for one seed) over seeds.
    ``average`` is the mean of the method's dataset means; ``average_std`` the standard deviation
    over seeds of the per-seed average across datasets (seeds present in every dataset).
    """
    table = pd.DataFrame(index=pd.Index(method_names, name="method"))
    for d in datasets:
        g = runs[runs.dataset == d].groupby("method")[metric]
        table[d] = g.mean()
        table[f"{d}_std"] = g.std(ddof=1).fillna(0.0)
        table[f"{d}_n"] = g.size()
    table[[f"{d}_n" for d in datasets]] = table[[f"{d}_n" for d in datasets]].fillna(0).astype(int)
    table["average"] = table[datasets].mean(axis=1, skipna=False)
    per_seed = runs.pivot_table(index=["method", "seed"], columns="dataset", values=metric)
    per_seed = per_seed.reindex(columns=datasets).dropna().mean(axis=1)
    table["average_std"] = per_seed.groupby("method").std(ddof=1).reindex(table.index).fillna(0.0)
    table.loc[table["average"].isna(), "average_std"] = np.nan
    return table


def ranks(values: pd.Series) -> pd.Series:
    """1 for the best (highest) value, 2 for the second best (dense ranks), else 0; NaN ranks 0."""
    distinct = sorted(set(values.dropna().round(6)), reverse=True)
    place = {v: i + 1 for i, v in enumerate(distinct[:2])}
    return values.round(6).map(lambda v: place.get(v, 0)).astype(int)


def method_cost(runs: pd.DataFrame, stage_benchmarks: dict[str, list[str]]) -> pd.DataFrame:
    """Per method: classifier_hours, stage_hours (benchmark files that exist), device_hours, devices."""
    rows = []
    for method, group in runs.groupby("method", sort=False):
        files = [f for f in stage_benchmarks.get(method, []) if Path(f).is_file()]
        classifier_h = group["wall_time_s"].sum() / 3600
        stage_h = sum(read_benchmark_seconds(f) for f in files) / 3600
        rows.append({"method": method, "classifier_hours": classifier_h, "stage_hours": stage_h,
                     "device_hours": classifier_h + stage_h, "stage_jobs": len(files),
                     "devices": ",".join(sorted(set(group["device"])))})
    return pd.DataFrame(rows).set_index("method")


# --------------------------------------------------------------------------- writing
def _cell(mean: float, std: float, decimals: int = 1) -> str:
    return "n/a" if pd.isna(mean) else f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _links(runs: pd.DataFrame, method: str, dataset: str, base: Path, fmt: str) -> str:
    rows = runs[(runs.method == method) & (runs.dataset == dataset)].sort_values("seed")
    parts = []
    for r in rows.itertuples():
        metrics = Path(os.path.relpath(r.metrics, base)).as_posix()
        config = Path(os.path.relpath(Path(r.metrics).with_name("config.yaml"), base)).as_posix()
        if fmt == "md":
            parts.append(f"[s{r.seed}]({metrics}) [cfg]({config})")
        else:
            parts.append(f'<a href="{html.escape(metrics)}">s{r.seed}</a> <a href="{html.escape(config)}">cfg</a>')
    return " ".join(parts)


def write_summary(runs: pd.DataFrame, datasets: list[str], method_labels: dict[str, str], out: dict[str, str],
                  *, stage_benchmarks: dict[str, list[str]] | None = None, metric: str = "top1",
                  protocols: dict[str, str] | None = None, samplings: list[dict] | None = None) -> pd.DataFrame:
    """Write out["csv"], out["md"], out["html"], out["png"] (see the module docstring); returns the csv table.

    runs: :func:`collect_runs`; datasets and method_labels ({method: row label}) give the order.
    stage_benchmarks: {method: [benchmark files of the upstream stages it needs]} (missing ones skipped).
    protocols: {method: evaluation protocol} (default: scratch for all). Rows of different protocols are
    never ranked against each other: the markdown and HTML show one table per protocol, in order of
    first appearance, and the csv has a ``protocol`` column.
    samplings: the SEI samplers the methods use (:func:`sampling_notes`). The markdown and HTML end with a
    "Notes" list: datasets whose accuracy is over fewer classes than they have (:func:`class_notes`) and
    classes sampled from one image.
    """
    names = list(method_labels)
    protocols = {m: (protocols or {}).get(m, DEFAULT_PROTOCOL) for m in names}
    groups = {p: [m for m in names if protocols[m] == p] for p in dict.fromkeys(protocols.values())}
    table = summary_table(runs, datasets, names, metric)
    cost = method_cost(runs, stage_benchmarks or {}).reindex(names)
    csv = table.copy()
    csv.insert(0, "label", [method_labels[m] for m in names])
    csv.insert(1, "protocol", [protocols[m] for m in names])
    for col in ("device_hours", "classifier_hours", "stage_hours", "devices"):
        csv[col] = cost[col]
    csv["metric"] = metric
    atomic_write(out["csv"], lambda tmp: csv.reset_index().to_csv(tmp, index=False, float_format="%.4f"))

    columns = [*datasets, "average"]
    place = {c: pd.concat([ranks(table.loc[g, c]) for g in groups.values()]) for c in columns}
    base = Path(out["md"]).parent
    seeds = sorted(runs.seed.unique().tolist())
    header = (f"Test {metric} accuracy (%), mean ± std over seeds {seeds}; **best**, <u>second best</u> per column"
              + (" within each protocol." if len(groups) > 1 else "."))
    md, html_rows = [header], []
    for protocol, members in groups.items():
        title = f"Protocol {protocol}: {PROTOCOL_TITLES.get(protocol, protocol)}"
        md += ["", f"### {title}", "", "| method | " + " | ".join(columns) + " | device-hours |",
               "|---|" + "---:|" * (len(columns) + 1)]
        html_rows.append(f"<tr><th colspan='{len(columns) + 2}' style='text-align:left'>{html.escape(title)}</th></tr>")
        _rows(members, columns, table, place, runs, cost, method_labels, base, out, md, html_rows)
    note = ("device-hours: wall time of the method's classifier runs (all datasets and seeds) plus the upstream "
            "stages with a benchmark file, each counted from scratch for every method that needs it; "
            "GPU-hours where the device is cuda.")
    notes = class_notes(runs, datasets) + sampling_notes(samplings or [])
    md += ["", note, ""]
    if notes:
        md += ["**Notes**", "", *[f"- {n}" for n in notes], ""]
    atomic_write(out["md"], lambda tmp: tmp.write_text("\n".join(md)))
    notes_html = ("<p><b>Notes</b></p><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
                  if notes else "")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>summary</title><style>"
            "table{border-collapse:collapse;font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px 8px}"
            "td{text-align:right}</style></head><body>"
            f"<p>{html.escape(header.split(';')[0])}; <b>best</b>, <u>second best</u> per column"
            f"{' within each protocol' if len(groups) > 1 else ''}.</p>"
            "<table><tr><th>method</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
            + "<th>device-hours</th></tr>" + "".join(html_rows) + f"</table><p>{html.escape(note)}</p>{notes_html}"
            "</body></html>")
    atomic_write(out["html"], lambda tmp: tmp.write_text(page))
    labels = method_labels if len(groups) == 1 else {m: f"{method_labels[m]} [{protocols[m]}]" for m in names}
    _bar_chart(table, datasets, labels, out["png"], metric)
    return csv


def _rows(members, columns, table, place, runs, cost, method_labels, base, out, md, html_rows) -> None:
    """The markdown and HTML rows of ``members`` (one protocol's methods), appended to md and html_rows."""
    for m in members:
        md_cells, html_cells = [], []
        for c in columns:
            text = _cell(table.loc[m, c], table.loc[m, f"{c}_std"])
            rank = place[c][m]
            md_text = f"**{text}**" if rank == 1 else f"<u>{text}</u>" if rank == 2 else text
            h_text = f"<b>{text}</b>" if rank == 1 else f"<u>{text}</u>" if rank == 2 else html.escape(text)
            if c != "average":
                md_text += " " + _links(runs, m, c, base, "md")
                h_text += " <small>" + _links(runs, m, c, Path(out["html"]).parent, "html") + "</small>"
            md_cells.append(md_text)
            html_cells.append(h_text)
        hours = f"{cost.loc[m, 'device_hours']:.4f} ({cost.loc[m, 'devices']})" if m in cost.index and pd.notna(
            cost.loc[m, "device_hours"]) else "n/a"
        md.append(f"| {method_labels[m]} | " + " | ".join(md_cells) + f" | {hours} |")
        html_rows.append(f"<tr><th>{html.escape(method_labels[m])}</th>"
                         + "".join(f"<td>{c}</td>" for c in html_cells) + f"<td>{html.escape(hours)}</td></tr>")


def _bar_chart(table: pd.DataFrame, datasets: list[str], labels: dict[str, str], path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [*datasets, "average"]
    n = len(labels)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(columns) * max(1, n) * 0.5), 3.8))
    x = np.arange(len(columns))
    for i, m in enumerate(labels):
        means = table.loc[m, columns].to_numpy(dtype=float)
        stds = table.loc[m, [f"{c}_std" for c in columns]].to_numpy(dtype=float)
        ax.bar(x + (i - (n - 1) / 2) * width, np.nan_to_num(means), width, yerr=np.nan_to_num(stds),
               capsize=2, label=labels[m])
    ax.set_xticks(x, columns)
    ax.set_ylabel(f"test {metric} (%)")
    ax.legend(fontsize=8, ncols=min(n, 4))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
