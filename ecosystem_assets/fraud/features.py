"""The one feature function, used offline (training table) and online (the service), so the two
cannot drift apart: `FeatureState.features` computes a transaction's features from the history the
state has seen, and `FeatureState.observe` / `label` add to that history.

Features, after the handbook (Le Borgne et al., ch. 3.4):
- the customer's number of transactions and mean amount over the last 1, 7 and 30 days: the
  current transaction and the customer's strictly earlier ones;
- the terminal's number of transactions and fraud rate over 7 and 30 days *ending 7 days ago*:
  fraud labels arrive with a delay, so the last 7 days are never used;
- night (before 06:00 or from 22:00, in the timestamp's own offset) and weekend flags.

Plain Python over small per-entity deques: a few microseconds a transaction, no pandas on the
serving path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

DAY = 86_400.0
CUSTOMER_WINDOWS = (1, 7, 30)
TERMINAL_WINDOWS = (7, 30)
LABEL_DELAY_DAYS = 7
FEATURES = (
    ["amount"]
    + [f"customer_{kind}_{w}d" for w in CUSTOMER_WINDOWS for kind in ("nb_tx", "mean_amount")]
    + [f"terminal_{kind}_{w}d" for w in TERMINAL_WINDOWS for kind in ("nb_tx", "risk")]
    + ["is_night", "is_weekend"]
)
_CUSTOMER_KEEP = max(CUSTOMER_WINDOWS) * DAY
_TERMINAL_KEEP = (LABEL_DELAY_DAYS + max(TERMINAL_WINDOWS)) * DAY


@dataclass
class FeatureState:
    """Per-customer and per-terminal history, trimmed to what the windows can still see."""

    customers: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    terminals: dict[str, deque[tuple[float, str]]] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    def features(self, customer_id: str, terminal_id: str, amount: float, timestamp: datetime) -> list[float]:
        """Features of a transaction given the history so far (it need not have been observed)."""
        t = timestamp.timestamp()
        # One pass over each history for all its windows (the serving path runs this per request).
        counts = [1] * len(CUSTOMER_WINDOWS)  # the current transaction counts
        totals = [float(amount)] * len(CUSTOMER_WINDOWS)
        for ts, value in self.customers.get(customer_id, ()):
            age = t - ts
            # Strictly earlier only: transactions at the same instant must not depend on which the
            # service happened to receive first (offline order is arbitrary there too).
            if 0 < age:
                for i, window in enumerate(CUSTOMER_WINDOWS):
                    if age < window * DAY:
                        counts[i] += 1
                        totals[i] += value
        row = [float(amount)]
        for count, total in zip(counts, totals):
            row += [float(count), total / count]
        until = t - LABEL_DELAY_DAYS * DAY
        seen = [0] * len(TERMINAL_WINDOWS)
        frauds = [0] * len(TERMINAL_WINDOWS)
        for ts, tx_id in self.terminals.get(terminal_id, ()):
            if ts < until:
                label = self.labels.get(tx_id, 0)
                for i, window in enumerate(TERMINAL_WINDOWS):
                    if ts >= until - window * DAY:
                        seen[i] += 1
                        frauds[i] += label
        for count, fraud in zip(seen, frauds):
            row += [float(count), fraud / count if count else 0.0]
        row += [float(timestamp.hour < 6 or timestamp.hour >= 22), float(timestamp.weekday() >= 5)]
        return row

    def observe(self, transaction_id: str, customer_id: str, terminal_id: str, amount: float, timestamp: datetime) -> None:
        t = timestamp.timestamp()
        customer = self.customers.setdefault(customer_id, deque())
        customer.append((t, float(amount)))
        while customer and customer[0][0] <= t - _CUSTOMER_KEEP:
            customer.popleft()
        terminal = self.terminals.setdefault(terminal_id, deque())
        terminal.append((t, transaction_id))
        while terminal and terminal[0][0] < t - _TERMINAL_KEEP:
            self.labels.pop(terminal.popleft()[1], None)

    def label(self, transaction_id: str, is_fraud: int) -> None:
        self.labels[transaction_id] = int(is_fraud)


def offline_features(transactions: Iterable[dict]) -> list[list[float]]:
    """Training features: each transaction scored on the history before it, in time order, with
    every label known (the 7-day delay inside the windows keeps recent labels out)."""
    state = FeatureState()
    rows = []
    for tx in sorted(transactions, key=lambda r: r["timestamp"]):
        rows.append(state.features(tx["customer_id"], tx["terminal_id"], tx["amount"], tx["timestamp"]))
        state.observe(tx["transaction_id"], tx["customer_id"], tx["terminal_id"], tx["amount"], tx["timestamp"])
        if "is_fraud" in tx:
            state.label(tx["transaction_id"], tx["is_fraud"])
    return rows


def feature_table(transactions):  # -> pd.DataFrame
    """The training table: transactions (a DataFrame) joined with their features, in time order."""
    import pandas as pd

    ordered = transactions.sort_values("timestamp", kind="stable").reset_index(drop=True)
    records = ordered.to_dict("records")
    for record in records:
        record["timestamp"] = record["timestamp"].to_pydatetime()
    features = pd.DataFrame(offline_features(records), columns=FEATURES)
    return pd.concat([ordered.drop(columns=["amount"]), features], axis=1)
