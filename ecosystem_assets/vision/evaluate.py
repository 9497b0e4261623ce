"""Test-split metrics: accuracy, per-class precision and recall, the confusion matrix (table and PNG).

Metrics from scikit-learn, the heat-map with Pillow; predictions come from any callable torch module
(the MLflow-loaded model), batch by batch from the streamed test shards, so only the labels are
held. Heavy libraries are imported inside functions.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Report:
    classes: list[str]
    accuracy: float
    confusion: Any  # int64 array [true, predicted]
    precision: list[float]
    recall: list[float]
    support: list[int]
    count: int

    def per_class_markdown(self) -> str:
        lines = ["| class | precision | recall | support |", "|---|---:|---:|---:|"]
        lines += [
            f"| {c} | {p:.3f} | {r:.3f} | {s} |" for c, p, r, s in zip(self.classes, self.precision, self.recall, self.support, strict=True)
        ]
        return "\n".join(lines)

    def confusion_markdown(self) -> str:
        header = "| true \\ predicted | " + " | ".join(self.classes) + " |"
        rows = [f"| **{c}** | " + " | ".join(str(int(v)) for v in row) + " |" for c, row in zip(self.classes, self.confusion, strict=True)]
        return "\n".join([header, "|---|" + "---:|" * len(self.classes), *rows])

    def mlflow_metrics(self) -> dict[str, float]:
        metrics = {"test_accuracy": self.accuracy}
        for c, p, r in zip(self.classes, self.precision, self.recall, strict=True):
            metrics[f"test_precision_{c}"], metrics[f"test_recall_{c}"] = p, r
        return metrics


def predict_batches(model: Any, batches: Any) -> tuple[Any, Any]:
    """(true labels, predicted class indices) over ``(x, y)`` batches of tensors. ``model`` is called
    as it is, in inference mode: an MLflow-loaded pt2 program refuses ``.eval()``."""
    import numpy as np
    import torch

    truth, predicted = [], []
    with torch.no_grad():
        for x, y in batches:
            predicted.append(model(x).argmax(1).cpu().numpy())
            truth.append(y.numpy())
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(truth) if truth else empty), (np.concatenate(predicted) if predicted else empty)


def report(y_true: Any, y_pred: Any, classes: Sequence[str]) -> Report:
    """Class indices in, metrics out. Precision of a class never predicted (and recall of one
    absent) is 0; a true label of -1 (a class the model never saw) counts as wrong in the accuracy."""
    import numpy as np
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if not len(y_true):
        raise ValueError("cannot evaluate on an empty test split")
    labels = list(range(len(classes)))
    confusion = confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, _, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return Report(
        list(classes), float(accuracy_score(y_true, y_pred)), confusion, precision.tolist(), recall.tolist(), support.tolist(), len(y_true)
    )


def confusion_png(result: Report, cell: int = 36) -> bytes:
    """A heat-map of the confusion matrix with counts; rows are true classes, columns predictions."""
    from PIL import Image, ImageDraw

    n, margin = len(result.classes), 60
    image = Image.new("RGB", (margin + n * cell + 10, margin + n * cell + 10), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 8), "predicted", fill="black")
    draw.text((4, margin - 14), "true", fill="black")
    peak = max(1, int(result.confusion.max()))
    for i, name in enumerate(result.classes):
        draw.text((margin + i * cell + 4, margin - 28), name[:5], fill="black")
        draw.text((4, margin + i * cell + cell // 3), name[:8], fill="black")
        for j in range(n):
            value = int(result.confusion[i, j])
            shade = int(255 * (1 - value / peak))
            box = (margin + j * cell, margin + i * cell, margin + (j + 1) * cell - 1, margin + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255) if i == j else (255, shade, shade), outline="grey")
            draw.text((box[0] + 6, box[1] + cell // 3), str(value), fill="black" if shade > 110 else "white")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
