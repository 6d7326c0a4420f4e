"""Config errors fail at DAG build, before any job, and name the key; dry runs plan.

One test runs the Snakemake CLI on a bad config (the error is raised while the Snakefile is read, before
any job); the others call what the workflow calls there, :func:`sdi.config.planning.check_config`, on the
config Snakemake would load, as a Snakemake process would add nothing to them but its start-up time."""

import re

import pytest
import yaml

from sdi.config.planning import ConfigError, check_config
from sdi.config.settings import merged_config_files

from helpers import edit_config, run_snakemake


def _fails_before_any_job(workflow, *expected):
    proc = run_snakemake(workflow, "--cores", "1", "all", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for text in expected:
        assert text in output, output[-3000:]
    assert "Job stats" not in output and not (workflow / "results").exists()
    assert not (workflow / "resources").exists()


def _fails_planning(workflow, monkeypatch, *expected):
    """check_config on workflow's config (relative paths from workflow, as in a run there) raises naming
    every text of expected, and writes nothing into the working directory."""
    monkeypatch.chdir(workflow)
    config = merged_config_files(workflow / "config" / "config.yaml")
    with pytest.raises(ConfigError) as err:
        check_config(config, workflow / "config" / "schema.yaml")
    for text in expected:
        assert text in str(err.value), str(err.value)
    assert not (workflow / "results").exists() and not (workflow / "resources").exists()


@pytest.mark.workflow
def test_unknown_key_is_named(workflow):
    edit_config(workflow, lambda c: c["split"].update(val_fracton=0.3))
    _fails_before_any_job(workflow, "config.split.val_fracton: unknown key", "val_fraction")


def test_wrong_type_is_named(workflow, monkeypatch):
    edit_config(workflow, lambda c: c["split"].update(val_fraction="a fifth"))
    _fails_planning(workflow, monkeypatch, "config.split.val_fraction: 'a fifth' is not of type 'number'")


def test_unknown_dataset_format_is_named(workflow, monkeypatch):
    edit_config(workflow, lambda c: c["datasets"]["cub"].update(format="coco"))
    _fails_planning(workflow, monkeypatch, "config.datasets.cub.format: 'coco' is not one of")


def test_missing_root_is_named(workflow, tmp_path, monkeypatch):
    missing = tmp_path / "CUB_200_2011"
    edit_config(workflow, lambda c: c["datasets"]["cub"].update(root=str(missing)))
    _fails_planning(workflow, monkeypatch, f"config.datasets.cub.root: folder {missing} does not exist")


def test_missing_model_folder_is_named(workflow, tmp_path, monkeypatch):
    edit_config(workflow, lambda c: c["models"].update(tiny=False, sd=str(tmp_path / "sd15"), clip=None))
    _fails_planning(workflow, monkeypatch, "config.models.clip: not set")
    edit_config(workflow, lambda c: c["models"].update(clip=str(tmp_path / "clip")))
    _fails_planning(workflow, monkeypatch, "config.models.sd: folder", "does not exist")


def test_mini_world_with_model_folders_is_named(workflow, tmp_path, monkeypatch):
    edit_config(workflow, lambda c: c["models"].update(mini=True, mini_root=str(tmp_path / "cache"),
                                                         sd=str(tmp_path / "sd15"), clip=str(tmp_path / "clip")))
    _fails_planning(workflow, monkeypatch, "config.models.mini is true",
                    "config.models.sd, config.models.clip is set too")
    assert not (tmp_path / "cache").exists()


def test_a_partial_mini_world_is_named_at_planning(workflow, tmp_path, monkeypatch):
    """A world folder that a killed build or a user left incomplete: Snakemake would trust it as rule
    mini_world's output, so planning fails naming the file."""
    from sdi.models.mini_world import Recipe, world_folder

    world = world_folder(tmp_path / "cache", Recipe())
    (world / "sd").mkdir(parents=True)
    (world / "clip").mkdir()
    edit_config(workflow, lambda c: c["models"].update(mini=True, mini_root=str(tmp_path / "cache")))
    _fails_planning(workflow, monkeypatch, "config.models.mini_root:", f"{world}/manifest.json: missing")
    assert (world / "sd").is_dir()  # reported, not removed


@pytest.mark.workflow
def test_demo_on_the_mini_world_plans_from_a_fresh_folder(workflow, tmp_path):
    """make demo's command: the mini world (not built yet: a job), its dataset and every method x 3 seeds."""
    (workflow / "local.yaml").write_text(yaml.safe_dump({"models": {"mini_root": str(tmp_path / "cache")}}))
    out = run_snakemake(workflow, "-n", "all", "--configfile", "config/mini_world.yaml", "local.yaml").stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert jobs["mini_world"] == "1" and jobs["mini_dataset"] == "1" and "demo_dataset" not in jobs
    assert jobs["train_classifier"] == "9" and jobs["overview"] == "1"
    assert not (tmp_path / "cache").exists() and not (workflow / "results").exists()


@pytest.mark.workflow
def test_dataset_without_root_is_not_built(workflow):
    proc = run_snakemake(workflow, "-n", "--cores", "1", "results/cub/split", check=False)
    assert proc.returncode != 0
    assert "config.datasets.cub.root is null" in proc.stdout + proc.stderr


@pytest.mark.workflow
def test_dry_run_plans_the_demo_split(workflow):
    proc = run_snakemake(workflow, "-n", "--cores", "1", "results/demo/split")
    assert "demo_dataset" in proc.stdout and "split" in proc.stdout
    assert not (workflow / "results").exists()


@pytest.mark.parametrize(("method", "entry", "expected"), [
    ("sdi", {"variant": "gauss-g2.0", "multiples": 0}, "config.experiments.methods.sdi.multiples"),
    ("real", {"pool": "kept"}, "config.experiments.methods.real.pool: the method has no variant"),
    ("plain", {"augment_at": "raw"}, "config.experiments.methods.plain.augment_at: 'raw'"),
])
def test_bad_method_fails_before_any_job(workflow, monkeypatch, method, entry, expected):
    edit_config(workflow, lambda c: c["experiments"]["methods"].update({method: entry}))
    _fails_planning(workflow, monkeypatch, expected)


@pytest.mark.workflow
def test_paper_cub_config_plans_the_whole_matrix(workflow, tiny_models, tmp_path):
    """`snakemake all -n --configfile config/paper/cub.yaml <site file>` plans the paper's CUB
    matrix once the site file names the dataset and model folders."""

    from sdi.data.demo import write_demo_digits

    cub = write_demo_digits(tmp_path / "CUB_200_2011", 3, 2, image_size=16)
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"datasets": {"cub": {"root": str(cub)}},
                                    "models": {"sd": str(tiny_models["sd"]), "clip": str(tiny_models["clip"])}}))
    out = run_snakemake(workflow, "-n", "all", "--configfile", "config/paper/cub.yaml", str(site)).stdout
    table = out.split("Job stats:")[1].split("total")[0]
    jobs = {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}
    paper = yaml.safe_load((workflow / "config" / "paper" / "cub.yaml").read_text())
    n_methods, n_variants = len(paper["experiments"]["methods"]), len(paper["variants"])
    assert jobs["train_classifier"] == n_methods * len(paper["experiments"]["seeds"]) == 14 * 3
    assert jobs["generate"] == n_variants * paper["generation"]["shards"]
    assert jobs["split"] == 1 and "demo_dataset" not in jobs  # the demo is switched off
    assert not (workflow / "results").exists()


def test_device_is_validated(workflow, monkeypatch):
    edit_config(workflow, lambda c: c.update(device="gpu"))
    _fails_planning(workflow, monkeypatch, "config.device: 'gpu' does not match")


@pytest.mark.workflow
def test_cuda_without_a_gpu_fails_before_any_job(workflow):
    from sdi.io.jobs import visible_gpu_count

    if visible_gpu_count():
        pytest.skip("this machine has a GPU")
    edit_config(workflow, lambda c: c.update(device="cuda"))
    proc = run_snakemake(workflow, "--cores", "1", "all", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "config.device: 'cuda' but this machine has 0 usable GPU(s)" in output, output
    assert not (workflow / "results").exists() and not (workflow / "resources").exists()  # no job ran
    # a dry run still plans (the check is for the machine that runs the jobs)
    assert run_snakemake(workflow, "-n", "--cores", "1", "all").returncode == 0


def test_execution_only_keys_are_the_schemas():
    """sdi.config.settings.EXECUTION_ONLY (what rules keep out of params and snapshots) is exactly what
    config/schema.yaml marks x-execution-only."""
    from sdi.config.settings import execution_only_paths

    from helpers import REPO

    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    marked = []
    for key, prop in schema["properties"].items():
        if prop.get("x-execution-only"):
            marked.append(key)
        marked += [f"{key}.{sub}" for sub, p in prop.get("properties", {}).items()
                   if isinstance(p, dict) and p.get("x-execution-only")]
    assert sorted(marked) == sorted(execution_only_paths())


@pytest.mark.parametrize("overlay", ["none", "paper/cub.yaml", "paper/pathmnist.yaml", "sparse"])
def test_defaults_are_filled_as_snakemake_fills_them(overlay):
    """The workflow validates its config once (sdi.config.validation.validate_config), which also fills the
    schema's defaults: the same filled config as snakemake.utils.validate gives, also for a
    config that leaves whole sections and nested job sizes out."""
    import copy

    from snakemake.utils import update_config, validate

    from sdi.config.validation import validate_config

    from helpers import REPO

    schema = REPO / "config" / "schema.yaml"
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    if overlay == "sparse":
        for section in ("resources", "cluster", "export"):
            config.pop(section, None)
        config["resources"] = {"train_classifier": {"cpus": 2}, "generate": {}}
        config["classifier"] = {"epochs": 1}
    elif overlay != "none":
        update_config(config, yaml.safe_load((REPO / "config" / overlay).read_text()))
        config["models"]["tiny"] = True  # the paper's model folders are a site's (folders are checked)
    ours, snakemakes = copy.deepcopy(config), copy.deepcopy(config)
    validate_config(ours, schema)
    validate(snakemakes, str(schema))
    assert ours == snakemakes
    assert ours != config  # there were defaults to fill
    assert ours["resources"]["train_classifier"]["mem_mb"] > 0 and ours["classifier"]["momentum"] > 0
