"""Training curves of a cnn_model run as a small PNG: loss, and training and validation accuracy per
epoch (the history that training writes into its result record), with the best epoch marked.

matplotlib is imported inside the function (Agg canvas, no pyplot: no global state, no display).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ARTIFACT = "training_curves.png"  # its name in the MLflow run
WIDTH_PX, HEIGHT_PX, DPI = 640, 240, 80  # small enough to embed in Markdown metadata (~20-40 KB)


def training_curves_png(history: Sequence[Mapping[str, Any]], best_epoch: int | None = None) -> bytes:
    """Two panels, loss and accuracy, over the epochs of ``history``; the best epoch as a dotted line."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [int(r["epoch"]) for r in history]
    figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    loss, accuracy = figure.subplots(1, 2)
    loss.plot(epochs, [float(r["loss"]) for r in history], marker="o", markersize=3, color="#0b3d91", label="training loss")
    accuracy.plot(epochs, [float(r["train_accuracy"]) for r in history], marker="o", markersize=3, color="#0b3d91", label="training")
    validated = [r for r in history if "val_accuracy" in r]
    if validated:
        accuracy.plot(
            [int(r["epoch"]) for r in validated],
            [float(r["val_accuracy"]) for r in validated],
            marker="o",
            markersize=3,
            color="#d1242f",
            label="validation",
        )
    for axes, title in ((loss, "loss"), (accuracy, "accuracy")):
        if best_epoch is not None:
            axes.axvline(best_epoch, color="#8c959f", linestyle=":", linewidth=1, label=f"best epoch {best_epoch}")
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("epoch", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(color="#eaeef2", linewidth=0.8)
        axes.legend(fontsize=7, frameon=False)
        if len(epochs) < 12:  # whole epochs only
            axes.set_xticks(epochs)
    figure.tight_layout(pad=0.5)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()
