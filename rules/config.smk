# Planning: the config checked once (sdi.config.planning.check_config: the schema and its
# defaults, references between keys, folders, the experiment matrix, tracking, model fit), the
# names the rules share, and the listings of user folders, written before the DAG is built.
import sys
from pathlib import Path

import sdi  # sets the Hugging Face libraries offline before anything imports them

from sdi.config.experiments import methods
from sdi.config.planning import ConfigError, check_config, device_problem, target_errors
from sdi.config.settings import dataset_key, mini_world_paths, model_paths
from sdi.data.readers import dataset_listing
from sdi.data.readers.base import DatasetError
from sdi.io.fingerprints import ListingError, list_files, write_listing

try:
    check_config(config, workflow.source_path("../config/schema.yaml"))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
# Snakemake gives a Snakefile no view of its targets while it is parsed (workflow.dag_settings is set
# later), so the command line's path arguments are checked; through the API, or in a job, nothing is.
if (
    (
        Path(sys.argv[0]).name == "snakemake"
        or sys.argv[0].endswith("snakemake/__main__.py")
    )
    and not workflow.remote_exec
    and not workflow.subprocess_exec
):
    _target_problems = target_errors(
        [a for a in sys.argv[1:] if a.removeprefix("./").startswith("results/")], config
    )
    if _target_problems:
        raise WorkflowError("\n".join(_target_problems))


onstart:
    # Before any job (not in dry runs): a GPU device that this machine lacks fails here,
    # not in the middle of the pipeline.
    problem = device_problem(config, workflow.local_exec)
    if problem:
        raise WorkflowError(problem)


DATASETS = list(config["datasets"])
MODELS = model_paths(config)
# the mini world's cache folder and working-directory marker (sdi.config.settings.mini_world_paths), once
MINI_WORLD = mini_world_paths(config) if config["models"]["mini"] else None
VARIANTS = list(config["variants"])
DEFAULT_VARIANT = config["default_variant"]
TEXT_VARIANTS = [
    v
    for v in VARIANTS
    if config["samplers"][config["variants"][v]["sampler"]]["method"] == "text"
]
SHARDS = list(range(config["generation"]["shards"]))
METHODS = methods(config)
SEEDS = config["experiments"]["seeds"]


# Input listings of user folders (sdi.io.fingerprints), written while planning.
LISTINGS = ".snakemake/sdi/listings"


def dataset_listing_path(dataset):
    return f"{LISTINGS}/{dataset}.tsv"


def model_listing_path(name):
    return f"{LISTINGS}/models/{name}.tsv"


def entry_options(entry):
    """The format's own keys of a dataset entry (e.g. partition for dtd)."""
    return {k: v for k, v in entry.items() if k not in ("format", "root", "builtin")}


def write_listings():
    """Write the listing of every user folder a job may read, before Snakemake builds the DAG.

    Snakemake caches what it has seen of a folder while it builds the DAG, so a listing that an
    input function writes then can be reported missing (MissingInputException) on the first
    call. Written here, every listing is in place however the DAG is entered (all, a targeted
    results/<dataset>/..., -n). Each is rewritten only when its folder changed. A dataset whose
    folder cannot be listed fails only the targets that need it (dataset_files raises its error).
    Jobs started by a cluster executor skip this: the main process wrote the listings already.
    """
    errors = {}
    for name, entry in config["datasets"].items():
        if (
            not entry.get("root")
            or entry.get("builtin")
            or entry["format"] == "medmnist"
        ):
            continue
        key = dataset_key(name)
        try:
            write_listing(
                dataset_listing_path(name),
                dataset_listing(
                    entry["format"], entry["root"], key, entry_options(entry)
                ),
            )
        except DatasetError as exc:
            errors[name] = str(exc)
        except ListingError as exc:
            errors[name] = f"{key}: {exc}"
    if not config["models"]["tiny"] and not config["models"]["mini"]:
        for name, folder in MODELS.items():
            if folder:
                try:
                    write_listing(model_listing_path(name), list_files(folder))
                except ListingError as exc:
                    raise WorkflowError(f"config.models.{name}: {exc}") from None
    return errors


LISTING_ERRORS = (
    {} if workflow.remote_exec or workflow.subprocess_exec else write_listings()
)
