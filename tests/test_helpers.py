"""The shared test helpers themselves: the fast tier's guard (under make check, a test that starts Snakemake
without the `workflow` marker fails naming the marker) and the one file digest. Milliseconds: no Snakemake
is started here."""

from __future__ import annotations

import re

import pytest

from helpers import FAST_TIER, BackgroundSnakemake, FastTierError, planned_jobs, run_snakemake, sha256, tree_digest


def test_the_fast_tier_refuses_every_way_of_starting_snakemake(tmp_path, monkeypatch, request):
    monkeypatch.setenv(FAST_TIER, "1")
    # the message names this test and the marker to add
    words = re.escape(request.node.nodeid) + r" starts Snakemake.*@pytest\.mark\.workflow"
    with pytest.raises(FastTierError, match=words):
        run_snakemake(tmp_path, "--version")
    with pytest.raises(FastTierError, match=words):
        planned_jobs(tmp_path)
    log = tmp_path / "snakemake.log"
    with pytest.raises(FastTierError, match=words):
        BackgroundSnakemake(tmp_path, "--version", log=log)
    assert log.read_text() == ""  # refused before a process started


def test_tree_digest_changes_with_any_file_and_names_them_relative(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.bin").write_bytes(b"\x00\x01")
    (tmp_path / "y.txt").write_text("y")
    before = tree_digest(tmp_path)
    assert before == {"a/b/x.bin": sha256(tmp_path / "a" / "b" / "x.bin"), "y.txt": sha256(tmp_path / "y.txt")}
    assert sha256(tmp_path / "y.txt") == "a1fce4363854ff888cff4b8e7875d600c2682390412a8cf79b37d0b11148b0fa"

    (tmp_path / "a" / "empty").mkdir()  # a folder is no file
    assert tree_digest(tmp_path) == before
    (tmp_path / "y.txt").write_text("z")
    assert tree_digest(tmp_path)["y.txt"] != before["y.txt"]
    (tmp_path / "y.txt").write_text("y")
    (tmp_path / "a" / "new").write_bytes(b"")
    assert set(tree_digest(tmp_path)) == {*before, "a/new"}
