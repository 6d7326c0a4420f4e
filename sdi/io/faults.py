"""Deterministic kill points, so that the resume tests kill a run at an exact moment.

A test sets ``SDI_KILL_AT=<point>[:<n>]`` in the environment of a Snakemake it starts in a
session of its own; the n-th time (default: the first) a job reaches :func:`kill_point`
``<point>``, it SIGKILLs the process group of its session leader (that Snakemake) and its own,
as a lost node or ``scancel`` would: nothing gets to clean up. Without the variable a kill point does
nothing but compare one string. Points: ``model_loading``, ``mid_shard``, ``png_write``,
``after_manifest``, ``filtering``, ``projector_checkpoint``.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_reached: Counter = Counter()


def kill_point(name: str) -> None:
    """SIGKILL the run here if ``SDI_KILL_AT`` names this point (and this is its n-th visit)."""
    spec = os.environ.get("SDI_KILL_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] != int(nth or 1):
        return
    groups = {os.getpgrp(), os.getpgid(os.getsid(0))}
    for group in sorted(groups, key=lambda g: g == os.getpgrp()):  # our own group last
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
