"""Replay simulated production days through the live fraud service: each transaction is scored
(POST /predict) and its true label sent back (POST /feedback), as the bank's chargeback process
would. Used by ``ecosystem-assets replay`` to tell the closed-loop story on one machine.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

HISTORY_BATCH = 5_000


@dataclass
class DayReport:
    day: str
    transactions: int = 0
    flagged: int = 0
    true_positives: int = 0
    frauds: int = 0
    versions: set[str] = field(default_factory=set)

    @property
    def precision(self) -> float | None:
        return self.true_positives / self.flagged if self.flagged else None

    def line(self) -> str:
        precision = f"{self.precision:.3f}" if self.precision is not None else "n/a"
        return (
            f"{self.day}: {self.transactions} transactions, {self.frauds} frauds, flagged {self.flagged}, "
            f"precision {precision}, model version(s) {', '.join(sorted(self.versions))}"
        )


def payload(row: dict[str, Any]) -> dict[str, Any]:
    """A simulated transaction row as the service's JSON transaction (no label)."""
    return {
        "transaction_id": row["transaction_id"],
        "customer_id": row["customer_id"],
        "terminal_id": row["terminal_id"],
        "amount": float(row["amount"]),
        "timestamp": row["timestamp"].isoformat(),
    }


def bearer(token: str | None) -> dict[str, str]:
    """The Authorization header for ``token`` (none for an open, loopback-only service)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def send_history(service_url: str, frame: Any, timeout_s: float = 120.0, feedback_token: str | None = None) -> int:
    """Warm the service's feature history with labelled past transactions; returns how many were new."""
    import requests

    added = 0
    records = frame.to_dict("records")
    with requests.Session() as session:
        session.headers.update(bearer(feedback_token))
        for start in range(0, len(records), HISTORY_BATCH):
            batch = [{**payload(r), "is_fraud": bool(r["is_fraud"])} for r in records[start : start + HISTORY_BATCH]]
            response = session.post(f"{service_url}/history", json={"transactions": batch}, timeout=timeout_s)
            response.raise_for_status()
            added += response.json()["added"]
    return added


def replay_day(
    service_url: str,
    day: str,
    frame: Any,
    workers: int = 8,
    timeout_s: float = 30.0,
    predict_token: str | None = None,
    feedback_token: str | None = None,
) -> DayReport:
    """Score every transaction of ``frame`` (in time order, ``workers`` at a time) and send its label."""
    import requests

    report = DayReport(day)
    predict_headers, feedback_headers = bearer(predict_token), bearer(feedback_token)
    lock = threading.Lock()
    local = threading.local()

    def one(row: dict[str, Any]) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        response = session.post(f"{service_url}/predict", json={"transaction": payload(row)}, headers=predict_headers, timeout=timeout_s)
        response.raise_for_status()
        answer = response.json()
        session.post(
            f"{service_url}/feedback",
            json={"prediction_id": answer["prediction_id"], "is_fraud": bool(row["is_fraud"])},
            headers=feedback_headers,
            timeout=timeout_s,
        ).raise_for_status()
        with lock:
            report.transactions += 1
            report.frauds += int(row["is_fraud"])
            report.flagged += int(answer["is_fraud"])
            report.true_positives += int(answer["is_fraud"] and row["is_fraud"])
            report.versions.add(answer["model_version"])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, frame.sort_values("timestamp").to_dict("records")))
    return report
