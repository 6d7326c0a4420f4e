"""Evaluation protocols (scratch, finetune, linear_probe): local pretrained weights, the CLIP linear probe on
stored embeddings, their planning checks, and all three on the demo data through the workflow."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
import yaml

from sdi.config import protocols
from sdi.config.planning import ConfigError, check_config
from sdi.config.settings import merged_config_files
from sdi.models.backbones import BackboneError, head_keys, load_backbone, weights_problems
from sdi.pipeline.filtering import write_image_embeddings
from sdi.training.linear_probe import ProbeError, run_probe

from helpers import REPO, SMALL, copy_run, edit_config, planned_jobs, run_snakemake

SCHEMA = REPO / "config" / "schema.yaml"


def _state_dict(arch: str, seed: int = 0, num_classes: int = 1000) -> dict:
    torch.manual_seed(seed)
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes).state_dict()


# --------------------------------------------------------------------------- local weights
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_are_loaded_and_the_head_has_the_dataset_classes(tmp_path, suffix):
    state = _state_dict("resnet18")
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, path)
    model = load_backbone("resnet18", 7, path)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])  # the first layer is the file's
    assert torch.equal(model.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    assert model.fc.out_features == 7 and model.fc.weight.shape == (7, 512)  # a new head for 7 classes
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_a_training_checkpoint_wrapping_the_state_dict_loads_too(tmp_path):
    state = _state_dict("mobilenet_v3_small", num_classes=10)
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "ckpt.pth")
    model = load_backbone("mobilenet_v3_small", 4, tmp_path / "ckpt.pth")
    assert torch.equal(model.features[0][0].weight, state["features.0.0.weight"])
    assert model.classifier[3].out_features == 4


def test_the_head_is_found_for_any_torchvision_architecture():
    assert head_keys("resnet50") == {"fc.weight", "fc.bias"}
    assert head_keys("vit_b_16") == {"heads.head.weight", "heads.head.bias"}
    assert head_keys("convnext_tiny") == {"classifier.2.weight", "classifier.2.bias"}
    assert head_keys("squeezenet1_0") == {"classifier.1.weight", "classifier.1.bias"}  # a convolution


def test_missing_truncated_and_other_architecture_weights_are_named(tmp_path):
    assert "does not exist" in weights_problems("resnet18", tmp_path / "absent.pth")[0]
    torch.save(_state_dict("resnet18"), tmp_path / "r18.pth")
    data = (tmp_path / "r18.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    (problem,) = weights_problems("resnet18", tmp_path / "cut.pth")
    assert "cut.pth" in problem and "truncated" in problem
    from safetensors.torch import save_file

    save_file(_state_dict("resnet18"), tmp_path / "r18.safetensors")
    data = (tmp_path / "r18.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-1000])
    assert "truncated" in weights_problems("resnet18", tmp_path / "cut.safetensors")[0]
    # resnet18 weights for a resnet34: names the file and a tensor it lacks; for a wide ResNet: a shape
    problems = " ".join(weights_problems("resnet34", tmp_path / "r18.pth"))
    assert "r18.pth" in problems and "layer1.2.conv1.weight" in problems and "set classifier.arch" in problems
    torch.save(_state_dict("resnet50"), tmp_path / "r50.pth")
    problems = " ".join(weights_problems("wide_resnet50_2", tmp_path / "r50.pth"))
    assert "tensor 'layer1.0.conv1.weight' has shape [64, 64, 1, 1], wide_resnet50_2 expects [128, 64, 1, 1]" \
        in problems
    with pytest.raises(BackboneError, match="layer1.2.conv1.weight"):
        load_backbone("resnet34", 3, tmp_path / "r18.pth")
    assert weights_problems("resnet18", tmp_path / "r18.pth") == []


# --------------------------------------------------------------------------- planning
def _config(tmp_path, **classifier_and_methods):
    config = merged_config_files(REPO / "config" / "config.yaml")
    methods = classifier_and_methods.pop("methods", None)
    config["classifier"].update(classifier_and_methods)
    if methods is not None:
        config["experiments"]["methods"] = methods
    return config


def _problems(config) -> str:
    with pytest.raises(ConfigError) as err:
        check_config(config, SCHEMA)
    return str(err.value)


def test_planning_checks_weights_protocols_and_frozen_layers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(_state_dict("resnet18"), tmp_path / "r18.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "r18.pth").read_bytes()[:5000])
    ft = {"real-ft": {"protocol": "finetune"}}

    assert "config.classifier.weights: protocol finetune (method(s) real-ft)" in _problems(_config(tmp_path,
                                                                                                   methods=ft))
    text = _problems(_config(tmp_path, arch="resnet50", weights="r18.pth", methods=ft))
    assert "config.classifier.weights: r18.pth: tensor 'fc.weight'" not in text  # the head may differ
    assert "config.classifier.weights: r18.pth" in text and "layer1.0.conv3.weight" in text
    text = _problems(_config(tmp_path, arch="resnet18", weights="cut.pth"))  # set, even without finetune
    assert "config.classifier.weights: cut.pth cannot be read" in text
    text = _problems(_config(tmp_path, arch="resnet18", weights="r18.pth", methods=ft,
                             finetune={"frozen": ["layer1", "encoder"]}))
    assert "config.classifier.finetune.frozen: ['encoder'] are not modules of resnet18" in text and "layer4" in text
    text = _problems(_config(tmp_path, arch="resnet_18"))
    assert "config.classifier.arch: 'resnet_18' is not a torchvision classification model" in text
    assert "resnet18" in text
    text = _problems(_config(tmp_path, methods={"p": {"protocol": "probe"}}))
    assert "config.experiments.methods.p.protocol" in text and "linear_probe" in text and "finetune" in text
    text = _problems(_config(tmp_path, methods={"p": {"protocol": "linear_probe", "augment": "cutout"}}))
    assert "config.experiments.methods.p.augment: protocol linear_probe fits fixed CLIP embeddings" in text
    config = _config(tmp_path, methods={"p": {"protocol": "linear_probe"}})
    config["models"].update({"tiny": False, "clip": None})
    assert "config.models.clip: not set" in _problems(config)
    check_config(_config(tmp_path, arch="resnet18", weights="r18.pth", methods=ft, finetune={"frozen": ["layer1"]}),
                 SCHEMA)


def test_the_schema_offers_the_protocols_of_the_registry():
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]
    classifier = schema["classifier"]["properties"]
    method = schema["experiments"]["properties"]["methods"]["additionalProperties"]["properties"]
    assert classifier["protocol"]["enum"] == method["protocol"]["enum"] == list(protocols.NAMES)
    assert classifier["protocol"]["default"] == protocols.DEFAULT == "scratch"
    assert set(protocols.PROTOCOL_KEYS) <= set(classifier)  # every protocol's own section is a key
    assert (protocols.TRAINED, protocols.PROBED, protocols.WEIGHTED) == (("scratch", "finetune"), ("linear_probe",),
                                                                        ("finetune",))


# --------------------------------------------------------------------------- the linear probe
def test_the_probe_separates_a_linearly_separable_fixture_perfectly(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16)) * 4

    def rows(prefix, n):
        labels = np.repeat(np.arange(5), n)
        table = pd.DataFrame({"path": [f"{prefix}/{i}.png" for i in range(len(labels))], "label": labels})
        return table, (centres[labels] + rng.normal(size=(len(labels), 16))).astype(np.float32)

    (train, x_train), (val, x_val), (test, x_test) = rows("train", 6), rows("val", 2), rows("test", 20)
    (gen, x_gen) = rows("gen", 3)
    real = pd.concat([train, val, test], ignore_index=True)
    write_image_embeddings(real, np.concatenate([x_train, x_val, x_test]), tmp_path / "real.parquet")
    write_image_embeddings(gen, x_gen, tmp_path / "gen.parquet")
    rows_ = pd.concat([train.assign(source="real", variant=None), gen.assign(source="synthetic", variant="v")],
                      ignore_index=True)
    metrics = run_probe(rows_, val, test, tmp_path / "run", real_embeddings=tmp_path / "real.parquet",
                        generated_embeddings=tmp_path / "gen.parquet", num_classes=5, c_values=[0.01, 1.0])
    assert metrics["top1"] == 100.0 and metrics["balanced"] == 100.0 and metrics["n"] == 100
    assert (metrics["n_real"], metrics["n_synthetic"], metrics["image_encodings"]) == (30, 15, 0)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["best_c"] in (0.01, 1.0)
    assert list(pd.read_csv(tmp_path / "run" / "log.csv").c) == [0.01, 1.0]
    assert len(pd.read_parquet(tmp_path / "run" / "train_set.parquet")) == 45
    # labels shuffled against the embeddings: the same code is at chance, so the check above can fail
    shuffled = rows_.assign(label=np.random.default_rng(1).permutation(rows_.label.to_numpy()))
    assert run_probe(shuffled, val, test, tmp_path / "shuffled", real_embeddings=tmp_path / "real.parquet",
                     generated_embeddings=tmp_path / "gen.parquet", num_classes=5)["top1"] < 60
    with pytest.raises(ProbeError, match=r"1 test image\(s\) have no CLIP embedding in .*real.parquet"):
        run_probe(rows_, val, pd.concat([test, pd.DataFrame({"path": ["new.png"], "label": [0]})]),
                  tmp_path / "run", real_embeddings=tmp_path / "real.parquet",
                  generated_embeddings=tmp_path / "gen.parquet", num_classes=5)


# --------------------------------------------------------------------------- all three through the workflow
SUMMARY = "results/summary.md"
PROTOCOL_METHODS = {
    "real": {"label": "Real only"},
    "sdi-ft": {"variant": "gauss-g2.0", "protocol": "finetune"},
    "real-probe": {"protocol": "linear_probe"},
    "sdi-probe": {"variant": "gauss-g2.0", "protocol": "linear_probe"},
}


@pytest.fixture(scope="module")
def protocols_run(module_tmp, demo_upstream):
    """A copy of the suite's demo upstream (conftest.demo_upstream, helpers.SMALL) gone on with a method of each
    protocol."""
    wf = copy_run(demo_upstream, module_tmp / "wf")
    torch.save(_state_dict("resnet18", seed=3), wf / "resnet18-local.pth")
    classifier = {**SMALL["classifier"], "arch": "resnet18", "weights": "resnet18-local.pth",
                  "finetune": {"epochs": 1, "frozen": ["conv1", "bn1"]}}

    def protocols_only(config):
        config.pop("export")
        config["variants"] = {"gauss-g2.0": {"sampler": "gauss"}}

    edit_config(wf, protocols_only, classifier=classifier,
                experiments={"seeds": [0], "methods": PROTOCOL_METHODS})
    proc = run_snakemake(wf, "--cores", "2", SUMMARY)  # every run, without the report figures and diagnostics
    for upstream in ("split", "train_projector", "embeddings", "generate", "filter_default"):
        assert f"rule {upstream}:" not in proc.stdout + proc.stderr, f"the copied upstream reran ({upstream})"
    return wf


def test_every_protocol_writes_the_same_metrics_fields_and_its_training_set(protocols_run):
    runs = protocols_run / "results" / "demo" / "classifier"
    metrics = {m: json.loads((runs / m / "seed0" / "metrics.json").read_text()) for m in PROTOCOL_METHODS}
    common = {"top1", "balanced", "per_class", "confusion", "n_real", "n_synthetic", "n_train", "wall_time_s",
              "device", "protocol", "best_val_top1", "params"}
    for m, got in metrics.items():
        assert common <= set(got), (m, common - set(got))
        assert len(got["per_class"]) == 10 and np.array(got["confusion"]).shape == (10, 10)
        rows = pd.read_parquet(runs / m / "seed0" / "train_set.parquet")
        assert len(rows) == got["n_train"] and (rows.source == "synthetic").sum() == got["n_synthetic"]
    assert [metrics[m]["protocol"] for m in PROTOCOL_METHODS] == ["scratch", "finetune", "linear_probe",
                                                                  "linear_probe"]
    assert metrics["sdi-ft"]["params"]["weights"] == "resnet18-local.pth"
    assert metrics["sdi-ft"]["params"]["frozen"] == ["conv1", "bn1"]
    assert metrics["sdi-probe"]["n_synthetic"] == metrics["sdi-ft"]["n_synthetic"] == 40  # the same kept images
    logs = protocols_run / "logs" / "demo" / "classifier"
    assert "classifier.weights (resnet18-local.pth) is ignored" in (logs / "real" / "seed0.log").read_text()
    assert "training resnet18 from resnet18-local.pth (fine-tuning" in (logs / "sdi-ft" / "seed0.log").read_text()

    csv = pd.read_csv(protocols_run / "results" / "summary.csv").set_index("method")
    assert list(csv.protocol) == ["scratch", "finetune", "linear_probe", "linear_probe"]
    md = (protocols_run / "results" / "summary.md").read_text()
    assert md.index("### Protocol scratch") < md.index("### Protocol finetune") < md.index("### Protocol linear_probe")


def test_the_probe_reads_the_filters_embeddings_instead_of_encoding_images(protocols_run):
    res = protocols_run / "results" / "demo"
    generated = pd.read_parquet(res / "filtered" / "manifest.parquet")
    stored = pd.read_parquet(res / "filtered" / "image_embeddings.parquet")
    assert stored.path.tolist() == generated.path.tolist()  # every generated image, kept or not
    real = pd.read_parquet(res / "image_embeddings.parquet")
    assert sorted(real.split.unique()) == ["test", "train", "val"] and len(real) == 80
    logs = protocols_run / "logs" / "demo"
    assert f"{len(generated)} CLIP image encodings in this process" in (logs / "filter.log").read_text()
    assert "80 CLIP image encodings" in (logs / "image_embeddings.log").read_text()
    for m in ("real-probe", "sdi-probe"):
        metrics = json.loads((res / "classifier" / m / "seed0" / "metrics.json").read_text())
        assert metrics["image_encodings"] == 0
        assert "0 CLIP image encodings in this job" in (logs / "classifier" / m / "seed0.log").read_text()


def test_a_protocols_keys_rerun_only_its_own_runs(protocols_run):
    assert planned_jobs(protocols_run, SUMMARY) == {}
    config = yaml.safe_load((protocols_run / "config" / "config.yaml").read_text())
    config["classifier"]["finetune"]["lr"] = 0.002
    config["classifier"]["linear_probe"] = {"c_values": [0.1, 1.0]}
    (protocols_run / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = planned_jobs(protocols_run, SUMMARY)
    assert jobs.get("train_classifier") == 1 and jobs.get("linear_probe") == 2  # sdi-ft; both probes; not real
    assert "filter" not in jobs and "image_embeddings" not in jobs
