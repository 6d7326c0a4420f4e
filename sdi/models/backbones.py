"""Pretrained classifier backbones from local weight files (``classifier.weights``, the ``finetune`` protocol).

A weights file is a torchvision classification model's state dict, as torchvision publishes them
(``resnet50-11ad3fa6.pth``: ``torch.save(model.state_dict())``), or the same tensors as safetensors.
A training checkpoint that wraps it (``{"model": state_dict, ...}`` as torchvision's reference
scripts save, or ``{"state_dict": ...}``) and the ``module.`` prefix of a DistributedDataParallel
model are accepted too. Nothing is downloaded.

:func:`load_backbone` builds ``arch`` for the dataset's classes and loads every tensor of the file
except the classification head's, so the network starts from the file's weights with a new
randomly initialised head of ``num_classes`` outputs (torchvision's fine-tuning recipe: load the
pretrained model, then replace its last layer). The head is found generically, for any torchvision
architecture: the tensors whose shape depends on ``num_classes`` (``fc`` of a ResNet, ``heads.head``
of a ViT, ``classifier.2`` of a ConvNeXt, the last convolution of a SqueezeNet, ...).

:func:`weights_problems` checks a file against an architecture while the workflow plans, reading only
tensor shapes (models are built on the ``meta`` device, so no memory is allocated).

:func:`make_model` builds a classifier run's network: random weights, or :func:`load_backbone` with
frozen modules when it starts from a weights file (which protocols do: :mod:`sdi.config.protocols`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn

# Auxiliary heads that torchvision's GoogLeNet / Inception v3 weights carry and sdi builds without
# (every classifier returns one logits tensor): their tensors in a file are skipped.
AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")

ARCH = "resnet50"  # the paper's classifier


class BackboneError(ValueError):
    """A weights file cannot be loaded into the configured architecture."""


def build_model(num_classes: int, arch: str = "resnet50") -> nn.Module:
    """A torchvision classification model (``arch``, by name) with random weights (``weights=None``) and a
    ``num_classes``-way head. GoogLeNet and Inception v3 are built without their auxiliary heads, so
    that every model returns one logits tensor."""
    extra = {"aux_logits": False, "init_weights": True} if arch in ("googlenet", "inception_v3") else {}
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **extra)


def _meta_shapes(arch: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = build_model(num_classes, arch)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def head_keys(arch: str) -> set[str]:
    """State-dict keys of ``arch``'s classification head: those whose shape changes with the class count."""
    a, b = _meta_shapes(arch, 10), _meta_shapes(arch, 11)
    return {k for k in a if a[k] != b[k]}


def _unwrap(state: dict, path: Path) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{path} holds no state dict of tensors (keys: {list(state)[:5]}); save it with "
                            "torch.save(model.state_dict(), path) or as safetensors")
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (see the module docstring), on the CPU; BackboneError when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return _unwrap(load_file(path), path)
        return _unwrap(torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path)), path)
    except BackboneError:
        raise
    except Exception as exc:  # truncated zip, pickle or safetensors header: the library's words
        raise BackboneError(f"{path} cannot be read ({type(exc).__name__}: {exc}); it is truncated or not a "
                            "state dict: copy it again") from None


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"PK"


def _shapes_of_file(path: Path) -> dict[str, tuple[int, ...]]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        from sdi.models.folders import check_weight_file

        problem = check_weight_file(path)
        if problem:
            raise BackboneError(f"{path} is truncated or corrupt ({problem}); copy it again")
        with safe_open(path, framework="pt") as fh:
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        return {k.removeprefix("module."): v for k, v in shapes.items()} if all(
            k.startswith("module.") for k in shapes) else shapes
    return {k: tuple(v.shape) for k, v in read_state_dict(path).items()}


def match_problems(arch: str, shapes: dict[str, tuple[int, ...]], path: str | os.PathLike) -> list[str]:
    """How a file's tensors (``{key: shape}``) fail to fit ``arch``'s backbone: missing tensors, tensors the
    architecture does not have, shapes that differ. The head's tensors may have any shape or be absent."""
    expected, head = _meta_shapes(arch, 1000), head_keys(arch)
    problems = []
    missing = [k for k in expected if k not in head and k not in shapes]
    unexpected = [k for k in shapes if k not in expected and not k.startswith(AUX_PREFIXES)]
    wrong = [k for k in expected if k not in head and k in shapes and shapes[k] != expected[k]]
    if wrong:
        k = wrong[0]
        problems.append(f"{path}: tensor {k!r} has shape {list(shapes[k])}, {arch} expects {list(expected[k])} "
                        f"({len(wrong)} tensor(s) differ)")
    if missing:
        problems.append(f"{path}: {len(missing)} tensor(s) of {arch} are not in the file, e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{path}: {len(unexpected)} tensor(s) of the file are not in {arch}, e.g. {unexpected[:3]}")
    return problems


def weights_problems(arch: str, path: str | os.PathLike) -> list[str]:
    """Why ``path`` cannot initialise ``arch`` (empty when it can): missing file, unreadable or truncated file,
    tensors of another architecture. Reads shapes only (safetensors: the header; .pth: a memory map)."""
    path = Path(path)
    if not path.is_file():
        return [f"file {path} does not exist; set it to a local torchvision state dict (.pth) or safetensors "
                f"file of {arch}"]
    try:
        shapes = _shapes_of_file(path)
    except BackboneError as exc:
        return [str(exc)]
    problems = match_problems(arch, shapes, path)
    if problems:
        problems[-1] += f"; is it a {arch} checkpoint? set classifier.arch to the file's architecture"
    return problems


def load_backbone(arch: str, num_classes: int, path: str | os.PathLike) -> nn.Module:
    """``arch`` with every tensor of ``path`` but the head's, and a new ``num_classes``-way head (random, as
    :func:`build_model` initialises it). Raises BackboneError naming the file and the first mismatching tensor."""
    state = read_state_dict(path)
    problems = match_problems(arch, {k: tuple(v.shape) for k, v in state.items()}, path)
    if problems:
        raise BackboneError("; ".join(problems))
    model, head = build_model(num_classes, arch), head_keys(arch)
    backbone = {k: v for k, v in state.items() if k not in head and not k.startswith(AUX_PREFIXES)}
    missing, _ = model.load_state_dict(backbone, strict=False)
    assert set(missing) <= head, missing  # match_problems checked the rest
    return model


def freeze(model: nn.Module, prefixes: list[str] | tuple[str, ...]) -> list[str]:
    """Stop gradients of every parameter under the named modules (``layer1``, ``features.0``, ...); returns
    the frozen parameter names. Their BatchNorm statistics still update in training mode, as in
    torchvision's fine-tuning tutorial, which sets ``requires_grad = False`` only."""
    unknown = [p for p in prefixes if p not in dict(model.named_modules())]
    if unknown:
        raise BackboneError(f"frozen module(s) {unknown} are not in {type(model).__name__}; "
                            f"top-level modules: {module_names(model)}")
    frozen = []
    for name, param in model.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def module_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_children()]


def frozen_problems(arch: str, prefixes: list[str]) -> list[str]:
    """Names of ``classifier.finetune.frozen`` that are not modules of ``arch`` (checked on the meta device)."""
    with torch.device("meta"):
        model = build_model(10, arch)
    names = dict(model.named_modules())
    unknown = [p for p in prefixes if p not in names]
    if not unknown:
        return []
    return [f"{unknown} are not modules of {arch}; name modules such as {', '.join(module_names(model))} "
            "(or nested ones, e.g. layer1.0)"]


def make_model(num_classes: int, arch: str, weights: str | None = None, frozen: tuple[str, ...] = ()) -> nn.Module:
    """A classifier run's network: random weights (:func:`build_model`) without ``weights``; else the backbone
    of the local ``weights`` file with a new ``num_classes``-way head (:func:`load_backbone`), the ``frozen``
    modules without gradients."""
    if not weights:
        return build_model(num_classes, arch)
    model = load_backbone(arch, num_classes, weights)
    freeze(model, frozen)
    return model
