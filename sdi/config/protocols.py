"""The evaluation protocols (README "Choosing an evaluation protocol"), in one registry: what the
workflow, the config checks, the trainers and the summary know of each. Torch-free: the workflow
reads it while planning.

=============  ================  ==============================================================
protocol       run by            reads from config.classifier
=============  ================  ==============================================================
scratch        train_classifier  everything but the protocol keys (the paper's: random weights)
finetune       train_classifier  the same, ``weights`` and its own section ``finetune``
linear_probe   linear_probe      only its own section ``linear_probe`` (fixed CLIP embeddings)
=============  ================  ==============================================================

config/schema.yaml lists the same names (``classifier.protocol`` and
``experiments.methods.<name>.protocol``); tests/test_protocols.py checks that it does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol.

    trains_network: the classifier trainer runs it (rule train_classifier, sdi.training.classifier:
        epochs, a log.csv of training curves, augmentations); else it is the linear probe (rule
        linear_probe, sdi.training.linear_probe), fitted on stored CLIP embeddings.
    uses_weights: starts from config.classifier.weights (a local pretrained state dict).
    section: its own section of config.classifier (e.g. ``finetune: {lr, epochs, frozen}``), or None.
    title: its heading in the summary table.
    """

    name: str
    trains_network: bool
    uses_weights: bool
    section: str | None
    title: str


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("scratch", trains_network=True, uses_weights=False, section=None,
             title="trained from scratch (the paper's protocol)"),
    Protocol("finetune", trains_network=True, uses_weights=True, section="finetune",
             title="fine-tuned from pretrained weights"),
    Protocol("linear_probe", trains_network=False, uses_weights=False, section="linear_probe",
             title="CLIP linear probe"),
)}
NAMES = tuple(PROTOCOLS)
DEFAULT = "scratch"  # the paper's; config.classifier.protocol's default
TRAINED = tuple(n for n, p in PROTOCOLS.items() if p.trains_network)  # rule train_classifier
PROBED = tuple(n for n, p in PROTOCOLS.items() if not p.trains_network)  # rule linear_probe
WEIGHTED = tuple(n for n, p in PROTOCOLS.items() if p.uses_weights)  # read config.classifier.weights
# keys of config.classifier that are not scratch's: the protocol, the weights and every protocol's section
PROTOCOL_KEYS = ("protocol", "weights", *(p.section for p in PROTOCOLS.values() if p.section))
TITLES = {n: p.title for n, p in PROTOCOLS.items()}  # the summary's table headings
