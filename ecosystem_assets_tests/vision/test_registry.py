"""The promotion rule, the metrics against scikit-learn, and the confusion-matrix image."""

from __future__ import annotations

import io

import pytest

from ecosystem_assets.vision import evaluate as ev
from ecosystem_assets.vision.registry import decide


@pytest.mark.parametrize(
    ("passed", "accuracy", "champion_version", "champion_accuracy", "promote", "reason"),
    [
        (True, 0.95, None, None, True, "no champion yet"),
        (False, 0.85, None, None, False, "below the threshold"),
        (True, 0.95, "1", 0.93, True, "≥ champion v1's 0.9300"),
        (True, 0.93, "1", 0.93, True, "≥ champion v1's"),  # a tie promotes the newer model
        (True, 0.92, "1", 0.93, False, "< champion v1's 0.9300"),
        (False, 0.80, "1", 0.70, False, "below the threshold"),  # better than a bad champion, still gated
        (True, 0.99, "2", None, False, "already champion"),
    ],
)
def test_promotion_rule(passed, accuracy, champion_version, champion_accuracy, promote, reason):
    decision = decide(passed, accuracy, 0.90, champion_version, champion_accuracy, "2")
    assert decision.promote is promote and reason in decision.reason


def test_a_champion_without_a_measured_accuracy_is_an_error():
    with pytest.raises(ValueError, match="champion_accuracy is required"):
        decide(True, 0.95, 0.90, "1", None, "2")


def test_metrics_agree_with_scikit_learn():
    import numpy as np
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_score, recall_score

    rng = np.random.default_rng(7)
    y_true = rng.integers(0, 4, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 4, 300))
    y_pred[y_pred == 3] = 2  # class "d" is never predicted: precision 0 by convention
    result = ev.report(y_true, y_pred, ["a", "b", "c", "d"])
    assert result.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    assert (result.confusion == confusion_matrix(y_true, y_pred, labels=range(4))).all()
    assert result.precision == pytest.approx(list(precision_score(y_true, y_pred, average=None, labels=range(4), zero_division=0)))
    assert result.recall == pytest.approx(list(recall_score(y_true, y_pred, average=None, labels=range(4), zero_division=0)))
    assert result.mlflow_metrics()["test_accuracy"] == result.accuracy and result.precision[3] == 0.0
    assert result.confusion_markdown().splitlines()[2].startswith("| **a** | ")
    with pytest.raises(ValueError, match="empty test split"):
        ev.report([], [], ["a", "b"])


def test_metrics_by_hand_including_a_class_the_model_never_saw():
    # 5 known-label images: true a,a,b,b,b → predicted a,b,b,b,b; one more of a class unknown to the model (-1).
    result = ev.report([0, 0, 1, 1, 1, -1], [0, 1, 1, 1, 1, 0], ["a", "b"])
    assert result.confusion.tolist() == [[1, 1], [0, 3]]  # the unknown class has no row
    assert result.accuracy == pytest.approx(4 / 6)  # … but counts as wrong
    assert result.precision == pytest.approx([1 / 2, 3 / 4]) and result.recall == pytest.approx([1 / 2, 1.0])
    assert result.support == [2, 3] and result.count == 6
    assert result.per_class_markdown().splitlines()[2] == "| a | 0.500 | 0.500 | 2 |"


def test_confusion_matrix_png_is_a_heat_map():
    import numpy as np
    from PIL import Image

    result = ev.report(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 1]), ["yes", "no"])
    image = Image.open(io.BytesIO(ev.confusion_png(result, cell=36)))
    assert image.format == "PNG" and image.size == (60 + 2 * 36 + 10, 60 + 2 * 36 + 10)
    # The busiest cell (true no → no, 3) is the darkest blue; the empty one (true no → yes) stays white-ish.
    busiest, empty = image.getpixel((60 + 36 + 2, 60 + 36 + 2)), image.getpixel((60 + 2, 60 + 36 + 2))
    assert busiest[:2] == (0, 0) and busiest[2] == 255 and min(empty) > 240


def test_accuracy_check_states_the_gate_once_and_keeps_the_decision_in_metadata():
    from ecosystem_assets.vision.checks import accuracy_check_result

    decision = decide(True, 0.9416342412451362, 0.9, None, None, "1")
    result = accuracy_check_result(0.9416342412451362, 0.9, decision.reason)
    assert result.description == "test accuracy 0.9416 ≥ the threshold 0.90"
    assert result.metadata["promotion"].value == decision.reason
    assert accuracy_check_result(0.5, 0.9, "x").description == "test accuracy 0.5000 < the threshold 0.90"
