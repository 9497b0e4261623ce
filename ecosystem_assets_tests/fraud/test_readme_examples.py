"""The README's request examples ("The fraud API: requests and answers"), sent as written to a real
service: each body is accepted and each answer has the documented shape, so the docs stay true."""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests

README = Path(__file__).resolve().parents[2] / "README.md"


def examples() -> dict[str, dict]:
    """Each POST example's JSON body, by path (the `-d '…'` of its curl line, over its lines)."""
    section = README.read_text().split("### The fraud API: requests and answers", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    bodies = {}
    for path, body in re.findall(r"curl -s localhost:8000(/\w+) -H 'Content-Type: application/json' -d '(.*?)'", section, re.S):
        bodies[path] = json.loads(body)
    return bodies


def test_the_readme_examples_work_as_written(fraud_service):
    bodies = examples()
    assert set(bodies) == {"/predict", "/feedback", "/history"}
    url = fraud_service.url
    predicted = requests.post(f"{url}/predict", json=bodies["/predict"], timeout=30)
    assert predicted.status_code == 200, predicted.text
    answer = predicted.json()
    assert set(answer) == {"prediction_id", "fraud_probability", "is_fraud", "model_version"}
    again = requests.post(f"{url}/predict", json=bodies["/predict"], timeout=30).json()
    assert again == answer  # "the same transaction_id again: the same answer"

    feedback = {**bodies["/feedback"], "prediction_id": answer["prediction_id"]}  # the README elides the id
    recorded = requests.post(f"{url}/feedback", json=feedback, timeout=30)
    assert recorded.json() == {"prediction_id": answer["prediction_id"], "status": "recorded"}, recorded.text
    assert requests.post(f"{url}/feedback", json=feedback, timeout=30).json()["status"] == "unchanged"

    history = requests.post(f"{url}/history", json=bodies["/history"], timeout=30)
    assert history.json() == {"received": 1, "added": 1}, history.text

    monitoring = requests.get(f"{url}/monitoring", params={"window_hours": 24, "end": "2026-11-30T00:00:00+00:00"}, timeout=30)
    assert monitoring.status_code == 200 and {"window_hours", "model_version", "precision", "recall", "labelled"} <= set(monitoring.json())
    assert requests.get(f"{url}/healthz", timeout=30).json()["status"] == "ok"
    assert requests.get(f"{url}/readyz", timeout=30).status_code == 200
