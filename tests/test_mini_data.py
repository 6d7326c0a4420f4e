"""The mini world's few-shot target dataset (config.mini_data): classes by digit or by look, the class
table, and every problem named at planning (sdi.config.planning.check_config) with its key and the valid
values. Seconds each: small datasets, no workflow."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from sdi.config.planning import ConfigError, check_config
from sdi.config.settings import merged_config_files
from sdi.data import mini_corpus as corpus

from helpers import tree_digest

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"
LOOKS = (("yellow", "purple", "thick"), ("green", "black", "thin"), ("red", "blue", "thin"))


def test_class_table_orders_digit_major():
    classes = corpus.target_classes(LOOKS[:2], "look", ["sorrel", "ashen"], ["three", "five"])
    assert [(c.label, c.name, c.digit, c.look_name) for c in classes] == [
        (0, "sorrel digit three", 3, "sorrel"), (1, "ashen digit three", 3, "ashen"),
        (2, "sorrel digit five", 5, "sorrel"), (3, "ashen digit five", 5, "ashen")]
    assert [c.look for c in classes] == [corpus.Look.named(*LOOKS[k % 2]) for k in range(4)]
    assert classes[2].folder == "003.sorrel_digit_five"
    # null look_names: the built-in names, in order
    assert [c.look_name for c in corpus.target_classes(LOOKS, "look", None, ["one"])] == list(corpus.LOOK_NAMES[:3])
    # by digit: the ten digits of today, every class in any of the looks
    digits = corpus.target_classes(LOOKS[:2])
    assert [c.name for c in digits] == list(corpus.CLASS_NAMES) and digits[0].folder == "001.digit_zero"
    assert all(c.look is None and len(c.looks) == 2 for c in digits)
    assert [c.name for c in corpus.target_classes(LOOKS[:2], digits=["seven", "two"])] == ["digit seven", "digit two"]
    # built-in look names are words the captions never use
    assert not set(corpus.LOOK_NAMES) & corpus.caption_words() and len(set(corpus.LOOK_NAMES)) >= 6


def test_classes_by_look_one_digit_in_one_look_per_class(tmp_path):
    from PIL import Image

    from sdi.data.readers.cub import read_cub
    from sdi.evaluation.judge import judge_looks

    digits = ["three", "five"]
    root = corpus.write_target_dataset(tmp_path / "t", looks=LOOKS, train_per_class=2, test_per_class=4,
                                       classes_by="look", digits=digits, seed=3)
    classes = corpus.target_classes(LOOKS, "look", None, digits)
    assert len(classes) == len(digits) * len(LOOKS) == 6
    assert (root / "classes.txt").read_text().split("\n")[:2] == ["1 001.sorrel_digit_three",
                                                                 "2 002.ashen_digit_three"]
    table = read_cub(root)
    assert sorted(table.class_name.unique()) == sorted(c.name for c in classes)
    assert table.groupby(["label", "subset"]).size().to_dict() == {
        (c.label, s): n for c in classes for s, n in (("test", 4), ("train", 2))}
    _, labels = corpus.load_mnist()
    target = set(corpus.source_split(labels)["target"].tolist())
    source = [int(Path(p).stem.split("_")[1]) for p in table.path]
    assert len(set(source)) == len(source) and set(source) <= target  # no MNIST digit twice, all held out
    for c in classes:
        rows = table[table.label == c.label]
        assert (rows.class_name == c.name).all()
        assert set(labels[[int(Path(p).stem.split("_")[1]) for p in rows.path]]) == {c.digit}
        assert all(Path(p).parent.name == c.folder for p in rows.path)
        seen = judge_looks(np.stack([np.asarray(Image.open(p)) for p in rows.path]))
        assert set(seen["fg"].tolist()) == {c.look.fg} and set(seen["bg"].tolist()) == {c.look.bg}, c.name


def test_default_arguments_write_the_same_dataset(tmp_path):
    """classes_by digit with every digit is the default dataset: explicit defaults write the same bytes
    (the files' digests against the code before classes_by are the change's record, not hard-coded here)."""
    small = {"train_per_class": 1, "test_per_class": 2}
    plain = corpus.write_target_dataset(tmp_path / "plain", **small)
    explicit = corpus.write_target_dataset(tmp_path / "explicit", classes_by="digit", look_names=None,
                                           digits=list(corpus.WORDS), **small)
    assert tree_digest(plain) == tree_digest(explicit)
    assert (plain / "classes.txt").read_text() == "".join(
        f"{k + 1} {k + 1:03d}.digit_{w}\n" for k, w in enumerate(corpus.WORDS))
    assert sorted(p.name for p in (plain / "images").iterdir()) == [c.folder for c in corpus.target_classes()]


@pytest.fixture
def mini_config(tmp_path, monkeypatch):
    """config.yaml + mini_world.yaml + mini_digits.yaml (one class per digit, 5 + 30 images each: the base
    the cases below change), its mini world cache in tmp_path (nothing there to verify)."""
    monkeypatch.chdir(tmp_path)
    config = merged_config_files(*(REPO / "config" / f for f in ("config.yaml", "mini_world.yaml", "mini_digits.yaml")))
    config["models"]["mini_root"] = str(tmp_path / "worlds")
    return config


VALID_LOOKS = ("foregrounds red, green, yellow, white", "backgrounds black, blue, gray, purple", "strokes thin, thick")
BY_LOOK = {"classes_by": "look", "test_per_class": 15}  # 2 looks x (5 + 15) = 40
# (mini_data changes, the line's start, what else it must say)
BAD_MINI_DATA = [
    ({"looks": [["pink", "black", "thin"]]}, "config.mini_data.looks[0][0]: 'pink'", ["red, green, yellow, white",
                                                                                    *VALID_LOOKS]),
    ({"looks": [["red", "pink", "thin"]]}, "config.mini_data.looks[0][1]: 'pink'", ["black, blue, gray, purple",
                                                                                  *VALID_LOOKS]),
    ({"looks": [["red", "black", "fat"]]}, "config.mini_data.looks[0][2]: 'fat'", ["thin, thick", *VALID_LOOKS]),
    ({"looks": [["red", "black"]]}, "config.mini_data.looks[0]", VALID_LOOKS),
    ({"classes_by": "colour"}, "config.mini_data.classes_by: 'colour'", ["digit, look"]),
    ({"classes_by": "look"}, "config.mini_data.test_per_class",
     ["looks", "40 held-out digits", "the largest test_per_class that fits is 15"]),
    ({"classes_by": "look", "looks": [["red", "black", "thin"], ["red", "blue", "thin"], ["red", "gray", "thin"],
                                      ["white", "black", "thin"], ["white", "blue", "thin"], ["white", "gray", "thin"],
                                      ["green", "gray", "thin"]]},
     "config.mini_data.test_per_class", ["looks", "40 held-out digits", "no test_per_class fits", "at most 6 looks"]),
    ({"test_per_class": 36}, "config.mini_data.test_per_class",
     ["5 + 36 = 41", "40 held-out digits", "the largest test_per_class that fits is 35"]),
    ({**BY_LOOK, "look_names": ["sorrel"]}, "config.mini_data.look_names: 1 name(s) for 2 look(s)",
     ["one name per look"]),
    ({**BY_LOOK, "look_names": ["sorrel", "sorrel"]}, "config.mini_data.look_names[1]: 'sorrel'", ["look_names[0]"]),
    ({**BY_LOOK, "look_names": ["Sorrel", "ashen"]}, "config.mini_data.look_names[0]: 'Sorrel'", ["^[a-z]+$"]),
    ({**BY_LOOK, "look_names": ["sorrel", "red"]}, "config.mini_data.look_names[1]: 'red'",
     ["captions", "a, black, blue, digit, eight", "photo"]),
    ({**BY_LOOK, "looks": [["red", "black", "thin"], ["red", "black", "thin"]]},
     "config.mini_data.looks[1]: the same look as looks[0]", ["red, black, thin"]),
    ({"digits": ["three", "five", "three"]}, "config.mini_data.digits[2]: 'three'", ["digits[0]"]),
    ({"digits": ["three", "eleven"]}, "config.mini_data.digits[1]: 'eleven'", [", ".join(corpus.WORDS)]),
    ({"digits": ["three"]}, "config.mini_data.digits", ["two or more"]),
]


@pytest.mark.parametrize(("changes", "start", "says"), BAD_MINI_DATA)
def test_mini_data_problems_are_named_at_planning(mini_config, changes, start, says, tmp_path):
    mini_config["mini_data"].update(copy.deepcopy(changes))
    with pytest.raises(ConfigError) as error:
        check_config(mini_config, SCHEMA)
    problems = [line.strip() for line in str(error.value).splitlines()[1:]]
    assert len(problems) == 1 and problems[0].startswith(start), problems
    for text in says:
        assert text in problems[0], (text, problems[0])
    # the writer refuses the same options, before it writes anything
    options = {"train_per_class": 5, "test_per_class": 30, **changes}
    with pytest.raises(corpus.MiniCorpusError):
        corpus.write_target_dataset(tmp_path / "never", **options)
    assert not (tmp_path / "never").exists()


def test_mini_data_plans_by_look_and_only_for_the_mini_world(mini_config):
    good = copy.deepcopy(mini_config)
    good["mini_data"].update(BY_LOOK, look_names=["sorrel", "ashen"], digits=["three", "five"])
    check_config(good, SCHEMA)
    assert good["mini_data"]["seed"] == 0
    defaults = copy.deepcopy(mini_config)
    del defaults["mini_data"]
    check_config(defaults, SCHEMA)
    assert defaults["mini_data"]["classes_by"] == "digit" and defaults["mini_data"]["look_names"] is None
    assert defaults["mini_data"]["digits"] == list(corpus.WORDS)
    # no builtin mini_world dataset: mini_data is not the workflow's concern
    demo = merged_config_files(REPO / "config" / "config.yaml")
    demo["mini_data"] = {"classes_by": "look"}
    check_config(demo, SCHEMA)
