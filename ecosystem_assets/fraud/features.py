"""The one feature function, used offline (training table) and online (the service), so the two
cannot drift apart: `FeatureState.features` computes a transaction's features from the history the
state has seen, and `FeatureState.observe` / `label` add to that history.

Features, after the handbook (Le Borgne et al., ch. 3.4):
- the customer's number of transactions and mean amount over the last 1, 7 and 30 days: the
  current transaction and the customer's strictly earlier ones;
- the terminal's number of transactions and fraud rate over 7 and 30 days *ending 7 days ago*:
  fraud labels arrive with a delay, so the last 7 days are never used;
- night (before 06:00 or from 22:00, in the timestamp's own offset) and weekend flags.

Plain Python over per-entity lists kept in time order: each window is two binary searches and a
slice, about 10 µs a transaction, no pandas on the serving path.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from math import fsum
from typing import Any

DAY = 86_400.0
CUSTOMER_WINDOWS = (1, 7, 30)  # shortest first: the Redis store reads the last (longest) one whole
TERMINAL_WINDOWS = (7, 30)
LABEL_DELAY_DAYS = 7
FEATURES = (
    ["amount"]
    + [f"customer_{kind}_{w}d" for w in CUSTOMER_WINDOWS for kind in ("nb_tx", "mean_amount")]
    + [f"terminal_{kind}_{w}d" for w in TERMINAL_WINDOWS for kind in ("nb_tx", "risk")]
    + ["is_night", "is_weekend"]
)
CUSTOMER_KEEP_S = max(CUSTOMER_WINDOWS) * DAY
TERMINAL_KEEP_S = (LABEL_DELAY_DAYS + max(TERMINAL_WINDOWS)) * DAY
# The one history window (37 days): older transactions can no longer change any feature. The
# training table, the replay's warm-up, the service's input rules and the benches derive from it.
HISTORY_DAYS = max(max(CUSTOMER_WINDOWS), LABEL_DELAY_DAYS + max(TERMINAL_WINDOWS))
HISTORY_KEEP_S = HISTORY_DAYS * DAY
_EMPTY: tuple[list, list] = ([], [])


def insert_in_time_order(times: list[float], values: list, t: float, value: Any) -> None:
    """Add (t, value) keeping ``times`` sorted; equal times keep arrival order."""
    if not times or t >= times[-1]:
        times.append(t)
        values.append(value)
    else:  # out of order (a late transaction): rare, so a list insert is fine
        at = bisect_right(times, t)
        times.insert(at, t)
        values.insert(at, value)


def _remove(histories: dict[str, tuple[list[float], list]], key: str, t: float, value: Any) -> None:
    """Remove the newest entry (t, value) of ``histories[key]`` (equal entries are interchangeable)."""
    times, values = histories.get(key, _EMPTY)
    for at in range(bisect_right(times, t) - 1, bisect_left(times, t) - 1, -1):
        if values[at] == value:
            del times[at], values[at]
            break
    if key in histories and not times:
        del histories[key]


def customer_lows(t: float) -> list[float]:
    """The customer windows of a transaction at ``t`` (CUSTOMER_WINDOWS order): each holds the
    customer's transactions strictly after its low and strictly before ``t``."""
    return [t - window * DAY for window in CUSTOMER_WINDOWS]


def customer_windows(times: list[float], amounts: list[float], t: float) -> list[list[float]]:
    """A customer's amounts in each window of a transaction at ``t``, from the customer's history
    in time order. Strictly earlier only: transactions at the same instant must not depend on which
    the service happened to receive first (offline order is arbitrary there too)."""
    end = bisect_left(times, t)
    return [amounts[bisect_right(times, low, 0, end) : end] for low in customer_lows(t)]


def trim_customer(times: list[float], amounts: list[float], t: float) -> None:
    """Drop from a customer's history (in time order) what no customer window of a transaction at
    ``t`` or later can see: everything at or before t − CUSTOMER_KEEP_S (the Redis script trims the
    same, inclusive bound)."""
    drop = bisect_right(times, t - CUSTOMER_KEEP_S)
    if drop:
        del times[:drop], amounts[:drop]


def terminal_bounds(t: float) -> list[tuple[float, float]]:
    """The terminal windows of a transaction at ``t``, as [low, high): they end LABEL_DELAY_DAYS
    before it (labels of the last 7 days are not known yet)."""
    until = t - LABEL_DELAY_DAYS * DAY
    return [(until - window * DAY, until) for window in TERMINAL_WINDOWS]


def feature_row(
    amount: float, timestamp: datetime, customer: Sequence[Sequence[float]], terminal: Sequence[tuple[int, int]]
) -> list[float]:
    """The feature row, in FEATURES order, from what the windows hold: per customer window the
    amounts of the customer's earlier transactions in it, per terminal window (transactions,
    frauds). The training table and every online feature store (serving/feature_store.py) compute
    rows here.

    Means are `math.fsum`, exact whatever the order: two stores may order transactions of the
    same instant differently (a list by arrival, a Redis sorted set by member)."""
    row = [amount]
    for amounts in customer:
        count = len(amounts) + 1  # the current transaction counts
        row += [float(count), fsum([amount, *amounts]) / count]
    for count, frauds in terminal:
        row += [float(count), frauds / count if count else 0.0]
    row += [float(timestamp.hour < 6 or timestamp.hour >= 22), float(timestamp.weekday() >= 5)]
    return row


@dataclass
class FeatureState:
    """Per-customer (times, amounts) and per-terminal (times, transaction ids) history, in time
    order and trimmed to what the windows can still see; the ids of transactions labelled fraud
    (an unlabelled transaction counts as genuine, as the handbook's delayed labels do)."""

    customers: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    terminals: dict[str, tuple[list[float], list[str]]] = field(default_factory=dict)
    frauds: set[str] = field(default_factory=set)

    def features(self, customer_id: str, terminal_id: str, amount: float, timestamp: datetime) -> list[float]:
        """Features of a transaction given the history so far (it need not have been observed)."""
        t = timestamp.timestamp()
        times, ids = self.terminals.get(terminal_id, _EMPTY)
        terminal = []
        for low, high in terminal_bounds(t):
            start, stop = bisect_left(times, low), bisect_left(times, high)
            terminal.append((stop - start, len(self.frauds.intersection(ids[start:stop]))))
        times, amounts = self.customers.get(customer_id, _EMPTY)
        return feature_row(float(amount), timestamp, customer_windows(times, amounts, t), terminal)

    def observe(
        self, transaction_id: str, customer_id: str, terminal_id: str, amount: float, timestamp: datetime, trim: bool = True
    ) -> None:
        """Add a transaction to the history; ``trim=False`` defers dropping what the windows no longer
        see (`trim`), so that an observation whose write then fails can be undone exactly (`forget`)."""
        t = timestamp.timestamp()
        times, amounts = self.customers.setdefault(customer_id, ([], []))
        insert_in_time_order(times, amounts, t, float(amount))
        times, ids = self.terminals.setdefault(terminal_id, ([], []))
        insert_in_time_order(times, ids, t, transaction_id)
        if trim:
            self.trim(customer_id, terminal_id, t)

    def trim(self, customer_id: str, terminal_id: str, t: float) -> None:
        """Drop the entity histories' entries that no window of a transaction at ``t`` can see."""
        times, amounts = self.customers.get(customer_id, _EMPTY)
        trim_customer(times, amounts, t)
        times, ids = self.terminals.get(terminal_id, _EMPTY)
        drop = bisect_left(times, t - TERMINAL_KEEP_S)
        if drop:
            self.frauds.difference_update(ids[:drop])
            del times[:drop], ids[:drop]

    def forget(self, transaction_id: str, customer_id: str, terminal_id: str, amount: float, timestamp: datetime) -> None:
        """Undo `observe(..., trim=False)` of a transaction that was not stored after all."""
        t = timestamp.timestamp()
        _remove(self.customers, customer_id, t, float(amount))
        _remove(self.terminals, terminal_id, t, transaction_id)

    def evict_idle(self, before: float) -> int:
        """Drop customers and terminals with no transaction a window of a transaction at ``before``
        or later can see (idle ones would otherwise stay forever). Returns how many."""
        idle = [c for c, (times, _) in self.customers.items() if not times or times[-1] <= before - CUSTOMER_KEEP_S]
        for customer_id in idle:
            del self.customers[customer_id]
        gone = [k for k, (times, _) in self.terminals.items() if not times or times[-1] < before - TERMINAL_KEEP_S]
        for terminal_id in gone:
            self.frauds.difference_update(self.terminals.pop(terminal_id)[1])
        return len(idle) + len(gone)

    def label(self, transaction_id: str, is_fraud: int) -> None:
        if is_fraud:
            self.frauds.add(transaction_id)
        else:
            self.frauds.discard(transaction_id)


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


def feature_table(transactions: Any) -> Any:  # -> pd.DataFrame
    """The training table: transactions (a DataFrame) joined with their features, in time order."""
    import pandas as pd

    ordered = transactions.sort_values("timestamp", kind="stable").reset_index(drop=True)
    records = ordered.to_dict("records")
    for record in records:
        record["timestamp"] = record["timestamp"].to_pydatetime()
    features = pd.DataFrame(offline_features(records), columns=FEATURES)
    return pd.concat([ordered.drop(columns=["amount"]), features], axis=1)
