"""Classification metrics as data: top-1, class-balanced and per-class accuracy, confusion matrix.

One function computes everything the paper reports (docs/method.md section 7), so training logs,
``metrics.json`` and the final tables all read the same numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix


def classification_metrics(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                           num_classes: int, class_names: Sequence[str] | None = None) -> dict:
    """Accuracy metrics of integer predictions.

    Args:
        y_true: (N,) true labels in 0..num_classes-1.
        y_pred: (N,) predicted labels in 0..num_classes-1.
        num_classes: C; the confusion matrix is C x C even when some classes do not occur.
        class_names: optional C names, used in ``per_class``; default: the label as text.

    Returns:
        ``{"n", "num_classes", "test_classes", "absent_classes", "top1", "balanced", "per_class",
        "confusion"}`` where ``test_classes`` is the number of classes present in ``y_true`` (the
        classes both accuracies are over), ``absent_classes`` the names of the others (a split with
        config.split.allow_missing_test_classes), ``top1`` the accuracy in percent, ``balanced`` the mean
        of per-class recall over the classes present in ``y_true`` in percent (scikit-learn's
        ``balanced_accuracy_score``),
        ``per_class`` a list of C ``{"label", "class_name", "n", "correct", "accuracy"}`` (accuracy
        in percent, None for a class with no sample) and ``confusion`` the C x C confusion matrix
        as nested lists, rows = true label, columns = predicted label.
    """
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}; "
                         "pass one prediction per sample")
    if y_true.size == 0:
        raise ValueError("no samples to score: y_true is empty")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(f"{name} holds labels outside 0..{num_classes - 1} (min {y.min()}, max {y.max()}); "
                             "check num_classes against the manifest labels")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} entries, expected num_classes={num_classes}")

    confusion = confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))
    support = confusion.sum(axis=1)
    correct = np.diag(confusion)
    with warnings.catch_warnings():
        # Predictions of a class absent from y_true are expected with few test images; the score
        # (mean recall over the classes present) is what we want, so the warning is noise.
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(y_true, y_pred)
    per_class = [
        {
            "label": c,
            "class_name": str(class_names[c]) if class_names is not None else str(c),
            "n": int(support[c]),
            "correct": int(correct[c]),
            "accuracy": 100.0 * float(correct[c]) / float(support[c]) if support[c] else None,
        }
        for c in range(num_classes)
    ]
    return {
        "n": int(y_true.size),
        "num_classes": int(num_classes),
        "test_classes": int((support > 0).sum()),
        "absent_classes": [row["class_name"] for row in per_class if not row["n"]],
        "top1": 100.0 * float(accuracy_score(y_true, y_pred)),
        "balanced": 100.0 * float(balanced),
        "per_class": per_class,
        "confusion": confusion.astype(int).tolist(),
    }
