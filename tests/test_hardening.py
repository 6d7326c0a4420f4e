"""Inputs a real user gives that used to give a silently wrong result or an unclear error, each checked at
planning with a message that names the key or file and the fix: model folders while models.tiny is on, sizes
that failed only inside a job, unreadable or ``~`` dataset roots, a VAE folder that holds another model, a
mistyped target, a config file that is not YAML, and a symbolic link loop in an ImageFolder."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from sdi.config.__main__ import main as check_config_files
from sdi.config.validation import ConfigError, validate_config
from sdi.data.readers import dataset_listing
from sdi.data.readers.base import skipped_text
from sdi.data.readers.imagefolder import read_imagefolder
from sdi.io.fingerprints import list_files
from sdi.models.folders import ModelFolderError, model_dims

from helpers import REPO, copy_workflow, run_snakemake, write_image

SCHEMA = REPO / "config" / "schema.yaml"


def _config(**sections) -> dict:
    """config/config.yaml (the smoke test) with sections merged over it, one level deep."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for section, values in sections.items():
        config[section] = {**(config.get(section) or {}), **values}
    return config


def _problems(config: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        validate_config(config, SCHEMA)
    return str(exc.value)


def _imagefolder(root: Path, classes=("cat", "dog"), n_train=4, n_test=2) -> Path:
    k = 0
    for part, n in (("train", n_train), ("test", n_test)):
        for cls in classes:
            for i in range(n):
                k += 1
                write_image(root / part / cls / f"{i}.png", seed=k)
    return root


# --- models.tiny with model folders ---------------------------------------------------------------


def test_model_folders_with_tiny_left_on_fail_naming_both_keys(tiny_models):
    config = _config(models={"sd": str(tiny_models["sd"]), "clip": str(tiny_models["clip"])})
    message = _problems(config)
    assert "config.models.tiny is true, which uses tiny random models" in message
    assert "config.models.sd, config.models.clip is set too" in message and "set models.tiny to false" in message
    # the fix the message names plans: the same folders with tiny off
    config = _config(models={"tiny": False, "sd": str(tiny_models["sd"]), "clip": str(tiny_models["clip"])})
    validate_config(config, SCHEMA)


# --- sizes that used to fail only inside a job -----------------------------------------------------


@pytest.mark.parametrize("sections, key, words", [
    ({"generation": {"resolution": 100}}, "config.generation.resolution", "not a multiple of 8"),
    ({"classifier": {"resize": 64, "crop": 96}}, "config.classifier.crop", "set crop <= resize"),
])
def test_sizes_that_failed_after_generation_fail_at_planning(sections, key, words):
    message = _problems(_config(**sections))
    assert key in message and words in message


def test_sizes_that_fit_pass():
    validate_config(_config(generation={"resolution": 64}, classifier={"resize": 64, "crop": 64}), SCHEMA)


# --- dataset roots: ~ and folders this user cannot read ------------------------------------------------


def test_tilde_in_a_dataset_root_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _imagefolder(tmp_path / "data" / "pets")
    config = _config()
    config["datasets"]["pets"] = {"format": "imagefolder", "root": "~/data/pets"}
    validate_config(config, SCHEMA)
    assert config["datasets"]["pets"]["root"] == str(tmp_path / "data" / "pets")
    # and one that names no folder is reported with the expanded path
    config = _config()
    config["datasets"]["pets"] = {"format": "imagefolder", "root": "~/data/nowhere"}
    assert f"config.datasets.pets.root: folder {tmp_path}/data/nowhere does not exist" in _problems(config)


def _as_nobody(fn) -> str:
    """fn() run in a forked child with the uid and gid of nobody (file permissions bind root too, otherwise);
    returns what it raised as 'Type: message', or 'ok'."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no return, no pytest machinery
        os.close(read)
        try:
            if os.getuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            fn()
            out = "ok"
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            out = f"{type(exc).__name__}: {exc}"
        os.write(write, out.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def test_an_unreadable_dataset_folder_is_named_with_its_key():
    # tmp_path's parents are private to root; this folder must be reachable by nobody but for the one locked
    base = Path(tempfile.mkdtemp(prefix="sdi-unreadable-"))
    try:
        base.chmod(0o755)
        root = _imagefolder(base / "pets")
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (root / "train" / "dog").chmod(0o000)
        key = "config.datasets.pets.root"
        out = _as_nobody(lambda: dataset_listing("imagefolder", root, key))
        assert out.startswith("DatasetError: config.datasets.pets.root: cannot read")
        assert f"{root}/train/dog" in out and "Permission denied" in out and "chmod -R u+rX" in out
        root.chmod(0o000)  # the root itself
        out = _as_nobody(lambda: dataset_listing("imagefolder", root, key))
        assert out.startswith(f"DatasetError: {key}: cannot read {root}") and "set it to null" in out
    finally:
        for p in [base, *base.rglob("*")] if base.exists() else []:
            p.chmod(0o755)
        shutil.rmtree(base)


# --- a VAE folder that holds another model ------------------------------------------------------------


def test_a_clip_folder_given_as_the_vae_is_named(tiny_models):
    with pytest.raises(ModelFolderError) as exc:
        model_dims(tiny_models["sd"], tiny_models["clip"], vae=tiny_models["clip"])
    message = str(exc.value)
    assert message.startswith(f"models.vae: folder {tiny_models['clip']} holds CLIPModel")
    assert "not an AutoencoderKL" in message and "or to null" in message
    model_dims(tiny_models["sd"], tiny_models["clip"], vae=tiny_models["sd"] / "vae")  # a real VAE folder fits


# --- symbolic link loops in an ImageFolder ---------------------------------------------------------


def test_a_symlink_loop_is_read_once(tmp_path):
    root = _imagefolder(tmp_path / "pets")
    (root / "train" / "cat" / "again").symlink_to(".")  # train/cat/again -> train/cat
    (root / "train" / "dog" / "sub").mkdir()
    write_image(root / "train" / "dog" / "sub" / "deep.png", seed=99)
    (root / "train" / "dog" / "sub" / "up").symlink_to("..")  # a loop one level down
    table = read_imagefolder(root)
    train = table[table.subset == "train"]
    assert train.groupby("class_name").size().to_dict() == {"cat": 4, "dog": 5}
    assert train.image_id.is_unique and train.path.map(os.path.realpath).is_unique
    assert table.attrs["skipped"] == {"symlinked folder walked already": 2}
    assert "2 symbolic link(s) to a folder read already" in skipped_text(table.attrs["skipped"])
    # the planning listing (its fingerprint) sees each file once as well
    assert len(list_files(root / "train").entries) == 9


# --- targets and config files, as the command line gives them ----------------------------------------


@pytest.mark.workflow
def test_a_mistyped_target_or_config_file_gets_one_line(tmp_path):
    workflow = copy_workflow(tmp_path / "wf")
    cases = {
        "results/dmeo/filtered": "target results/dmeo/filtered: 'dmeo' is not a dataset of this config "
                                 "(config.datasets: demo, cub)",
        "results/cub/filtered": "target results/cub/filtered: config.datasets.cub.root is null",
        "results/demo/classifier/sdii/seed0": "target results/demo/classifier/sdii/seed0: 'sdii' is not a key of "
                                              "config.experiments.methods (real, sd-text, sdi)",
        "results/demo/sei/gaus-g2.0/filtered": "'gaus-g2.0' is not a key of config.variants (gauss-g2.0, text-g2.0)",
    }
    for target, words in cases.items():
        proc = run_snakemake(workflow, "-n", "--cores", "1", target, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and words in out, out[-2000:]
        assert "MissingRuleException" not in out
    # a config file that is not YAML: the Snakefile's own names file, line and column
    config = workflow / "config" / "config.yaml"
    config.write_text(config.read_text() + "extra: [1, 2\n")
    proc = run_snakemake(workflow, "-n", "--cores", "1", "all", check=False)
    line = len(config.read_text().splitlines()) + 1  # where the unclosed list ends
    assert proc.returncode != 0 and f"config/config.yaml:{line}:1: not valid YAML" in proc.stdout + proc.stderr


def test_the_config_checker_names_a_yaml_error_and_a_bad_key(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    bad = tmp_path / "mine.yaml"
    bad.write_text("datasets:\n\tpets: {format: imagefolder, root: /x}\n")
    assert check_config_files([str(bad)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{bad}:2:1: not valid YAML") and "replace the tab" in out
    bad.write_text("generation:\n  resolution: 100\n")
    assert check_config_files([str(bad)]) == 1
    assert "config.generation.resolution: 100 is not a multiple of 8" in capsys.readouterr().out
    bad.write_text("generation:\n  resolution: 64\n")
    assert check_config_files([str(bad)]) == 0 and capsys.readouterr().out == "config OK\n"


def test_check_only_keys_rerun_nothing():
    """split.allow_missing_test_classes and samplers.<name>.min_images decide whether a job may go on, not what
    it computes: they are in no run snapshot (a classifier run's params), so adding them reruns nothing."""
    from sdi.config.experiments import methods, run_snapshot
    from sdi.config.settings import variant_settings, without_checks

    def snapshots(config):
        validate_config(config, SCHEMA)
        return [run_snapshot(config, "demo", m, 0, variant_settings(config, e["variant"]) if e["variant"] else None)
                for m, e in methods(config).items()]

    base = _config()
    gated = _config(split={"allow_missing_test_classes": True})
    for sampler in gated["samplers"].values():
        sampler["min_images"] = 2
    assert snapshots(base) == snapshots(gated)
    assert without_checks("sampler", gated["samplers"]["gauss"]) == without_checks("sampler", base["samplers"]["gauss"])
