"""Card transactions, simulated after the published description of the simulator in Le Borgne et
al., *Reproducible Machine Learning for Credit Card Fraud Detection — Practical Handbook* (ch. 3).

Customers live at a point of a 100×100 grid with a spending profile (mean amount, its spread, mean
transactions a day); terminals are spread over the same grid, and a customer buys at terminals
within a radius. Daily counts are Poisson, times of day normal around noon, amounts normal around
the customer's mean. Fraud, as in the handbook:
1. any amount above 220 is fraud;
2. each day some terminals are compromised: every transaction there in the next 28 days is fraud;
3. each day some customers are compromised: for 14 days a third of their transactions are fraud,
   with the amount multiplied by 5.

Every day is generated from its own seed, so a day is the same whenever and in whatever order it is
generated; compromises that started on earlier days are recomputed from those days' seeds.

Drift (``drift_from``): a new fraud pattern — skimming rings. From that date, terminals are no
longer emptied around the clock for 28 days; instead a ring hits many terminals for a week and
cashes cloned cards there at night (three uses a card, 00:00–05:00, moderate amounts), while
honest customers keep using the terminals. A model that learned "a terminal with recent fraud
keeps producing fraud" flags honest customers at terminals hit a week or more ago, so its live
precision falls (clearly from about 8 days after the drift, and settles after about 16); a model
retrained on the new pattern recovers it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

COLUMNS = ["transaction_id", "customer_id", "terminal_id", "amount", "timestamp", "is_fraud", "fraud_scenario"]


@dataclass(frozen=True)
class SimulationConfig:
    n_customers: int = 1000
    n_terminals: int = 2000
    radius: float = 5.0
    seed: int = 7
    # Rates scale with the population (handbook: 2 of 10,000 terminals, 3 of 5,000 customers a day).
    terminals_compromised_per_day: float = 0.0005
    customers_compromised_per_day: float = 0.002
    drift_from: date | None = None
    ring_terminals_per_day: float = 0.01
    ring_days: int = 7
    ring_cash_outs_per_night: float = 2.0


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _count(rate: float, population: int) -> int:
    return max(1, round(rate * population))


class Population:
    """Customers and terminals: fixed for a given config (seeded), shared by every day."""

    def __init__(self, config: SimulationConfig):
        self.config = config
        rng = _rng("population", config.seed)
        self.customer_xy = rng.uniform(0, 100, size=(config.n_customers, 2))
        self.mean_amount = rng.uniform(5, 100, size=config.n_customers)
        self.std_amount = self.mean_amount / 2
        self.mean_per_day = rng.uniform(0, 4, size=config.n_customers)
        self.terminal_xy = rng.uniform(0, 100, size=(config.n_terminals, 2))
        self.reachable = []
        for xy in self.customer_xy:
            near = np.flatnonzero(np.linalg.norm(self.terminal_xy - xy, axis=1) < config.radius)
            self.reachable.append(near)

    def _drifted(self, day: date) -> bool:
        return self.config.drift_from is not None and day >= self.config.drift_from

    def compromised_terminals(self, day: date) -> tuple[set[int], set[int]]:
        """Terminals compromised on ``day``: (emptied around the clock, cashed out by a ring at night)."""
        c = self.config
        classic: set[int] = set()
        ring: set[int] = set()
        for back in range(28):
            start = day - timedelta(days=back)
            if self._drifted(start):
                if back < c.ring_days:
                    ring.update(
                        _rng("ring", c.seed, start)
                        .choice(c.n_terminals, _count(c.ring_terminals_per_day, c.n_terminals), replace=False)
                        .tolist()
                    )
            else:
                classic.update(
                    _rng("terminals", c.seed, start)
                    .choice(c.n_terminals, _count(c.terminals_compromised_per_day, c.n_terminals), replace=False)
                    .tolist()
                )
        return classic, ring

    def compromised_customers(self, day: date) -> set[int]:
        c = self.config
        hit: set[int] = set()
        for back in range(14):
            start = day - timedelta(days=back)
            hit.update(
                _rng("customers", c.seed, start)
                .choice(c.n_customers, _count(c.customers_compromised_per_day, c.n_customers), replace=False)
                .tolist()
            )
        return hit

    def day(self, day: date) -> pd.DataFrame:
        """All transactions of ``day`` (UTC), labelled, in time order."""
        c = self.config
        rng = _rng("day", c.seed, day)
        counts = rng.poisson(self.mean_per_day)
        customers = np.repeat(np.arange(c.n_customers), counts)
        customers = customers[[len(self.reachable[i]) > 0 for i in customers]]
        n = len(customers)
        seconds = np.clip(rng.normal(43_200, 20_000, n), 0, 86_399).astype(int)
        amounts = np.abs(rng.normal(self.mean_amount[customers], self.std_amount[customers]))
        terminals = np.array([rng.choice(self.reachable[i]) for i in customers], dtype=int)
        scenario = np.zeros(n, dtype=int)
        scenario[amounts > 220] = 1
        classic, ring = self.compromised_terminals(day)
        scenario[(scenario == 0) & np.isin(terminals, list(classic))] = 2
        stolen = (scenario == 0) & np.isin(customers, list(self.compromised_customers(day))) & (rng.random(n) < 1 / 3)
        amounts[stolen] *= 5
        scenario[stolen] = 3
        if ring:  # cloned cards of random customers, each cashed three times at ring terminals at night
            cards = int(rng.poisson(c.ring_cash_outs_per_night * len(ring) / 3))
            m = 3 * cards
            customers = np.concatenate([customers, np.repeat(rng.choice(c.n_customers, cards), 3)])
            terminals = np.concatenate([terminals, rng.choice(sorted(ring), m)])
            amounts = np.concatenate([amounts, rng.uniform(30, 150, m)])
            seconds = np.concatenate([seconds, rng.integers(0, 5 * 3600, m)])
            scenario = np.concatenate([scenario, np.full(m, 4)])
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        frame = pd.DataFrame(
            {
                "customer_id": [f"C{i:05d}" for i in customers],
                "terminal_id": [f"T{i:05d}" for i in terminals],
                "amount": np.round(amounts, 2),
                "timestamp": pd.to_datetime([midnight + timedelta(seconds=int(s)) for s in seconds]),
                "is_fraud": (scenario > 0).astype(int),
                "fraud_scenario": scenario,
            }
        ).sort_values(["timestamp", "customer_id"], kind="stable")
        frame.insert(0, "transaction_id", [f"X{day:%Y%m%d}-{i:06d}" for i in range(len(frame))])
        return frame[COLUMNS].reset_index(drop=True)


def simulate_days(config: SimulationConfig, first: date, last: date) -> pd.DataFrame:
    """Transactions of every day from ``first`` to ``last`` inclusive."""
    population = Population(config)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return pd.concat([population.day(d) for d in days], ignore_index=True)
