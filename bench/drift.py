"""Feature drift of 1 million live rows: the project's `detect_drift` against Evidently 0.7's
DataDriftPreset on the full data, measured in the same run, on an undrifted and a drifted case.

Goal (issue 4): the project's computation ≥ 5× faster than Evidently and under 15 s, with the same
dataset-drift verdict as Evidently in both cases. The script exits non-zero when a verdict differs.

Data, deterministic (seeded simulator, default population of 1,000 customers / 2,000 terminals,
skimming rings from DRIFT_FROM), built with the project's own `simulate` and `feature_table` in one
time-ordered pass, so every used day has its 37 days of feature history:
- reference: 20,000 rows sampled (as `training.train_and_promote` does) from the 14 days of
  training features that follow the 37 warm-up days;
- undrifted pool: the next ``--pool-days`` days (same regime, after the reference window, before DRIFT_FROM);
- drifted pool: ``--pool-days`` days from 16 days after DRIFT_FROM (the ring pattern has settled);
- each pool (~2,000 rows a day) is resampled with replacement to ``--rows`` live rows (fixed seed):
  computing features for 1 M simulated transactions in pure Python would dominate the run.
Reference and both current tables are cached in bench/.data/ (gitignored).

Evidently gets the 13 features as numerical columns; its dataset verdict is the legacy rule it
uses itself (share of drifted columns ≥ drift_share = 0.5), per column value ≥ threshold 0.1.

    python bench/drift.py [--rows 1000000] [--pool-days 50] [--repeat 3] [--evidently-repeat 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from ecosystem_assets.fraud.features import HISTORY_DAYS  # the feature windows' reach

DATA = Path(__file__).resolve().parent / ".data"
DRIFT_FROM = date(2026, 9, 1)
TRAINING_DAYS = 14  # fraud_features' default window
SETTLE_DAYS = 16  # the ring pattern has settled 16 days after the drift starts (simulate.py)
SEED = 20260901


def build_data(rows: int, pool_days: int):
    """(reference, {"undrifted": current, "drifted": current}) as DataFrames of FEATURES, cached."""
    import numpy as np
    import pandas as pd

    from ecosystem_assets.fraud.features import FEATURES, feature_table
    from ecosystem_assets.fraud.simulate import SimulationConfig, simulate_days
    from ecosystem_assets.fraud.training import REFERENCE_ROWS

    stem = f"drift-{rows}-{pool_days}-v1"
    paths = {name: DATA / f"{stem}-{name}.parquet" for name in ("reference", "undrifted", "drifted")}
    if all(p.exists() for p in paths.values()):
        frames = {name: pd.read_parquet(p) for name, p in paths.items()}
        return frames.pop("reference"), frames

    undrifted_first = DRIFT_FROM - timedelta(days=pool_days)
    reference_first = undrifted_first - timedelta(days=TRAINING_DAYS)
    first = reference_first - timedelta(days=HISTORY_DAYS)
    drifted_first = DRIFT_FROM + timedelta(days=SETTLE_DAYS)
    last = drifted_first + timedelta(days=pool_days - 1)
    started = time.perf_counter()
    print(f"building data: simulating {first}..{last} (drift from {DRIFT_FROM}) and computing features ...", flush=True)
    raw = simulate_days(SimulationConfig(drift_from=DRIFT_FROM), first, last)
    table = feature_table(raw)
    day = table["timestamp"].dt.date

    def between(a: date, b: date):
        return table.loc[(day >= a) & (day <= b), FEATURES].reset_index(drop=True)

    training = between(reference_first, undrifted_first - timedelta(days=1))
    reference = training.sample(min(REFERENCE_ROWS, len(training)), random_state=0).reset_index(drop=True)
    pools = {"undrifted": between(undrifted_first, DRIFT_FROM - timedelta(days=1)), "drifted": between(drifted_first, last)}
    rng = np.random.default_rng(SEED)
    frames = {name: pool.iloc[rng.integers(0, len(pool), rows)].reset_index(drop=True) for name, pool in pools.items()}
    print(
        f"  {len(raw):,} transactions; reference {len(reference):,} rows of {len(training):,} "
        f"({reference_first}..{undrifted_first - timedelta(days=1)}); pools: undrifted {len(pools['undrifted']):,} rows "
        f"({undrifted_first}..{DRIFT_FROM - timedelta(days=1)}), drifted {len(pools['drifted']):,} rows "
        f"({drifted_first}..{last}); {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    DATA.mkdir(parents=True, exist_ok=True)
    for name, frame in {"reference": reference, **frames}.items():
        frame.to_parquet(paths[name], index=False)
    return reference, frames


def project(reference, current, columns):
    from ecosystem_assets.fraud.drift import detect_drift

    result = detect_drift(reference, current, columns)
    return result.dataset_drift, result.share, {c.column: (c.method, c.score, c.drifted) for c in result.columns}


def evidently(reference, current, columns):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(columns))
    cur = Dataset.from_pandas(current[columns], data_definition=definition)
    ref = Dataset.from_pandas(reference[columns], data_definition=definition)
    snapshot = Report([DataDriftPreset()]).run(cur, ref)  # Evidently 0.7: current first
    metrics = snapshot.dict()["metrics"]
    count = metrics[0]
    assert count["config"]["type"].endswith("DriftedColumnsCount"), count["metric_name"]
    share = float(count["value"]["share"])
    per_column = {}
    for m in metrics[1:]:
        config = m["config"]
        if config["type"].endswith("ValueDrift"):
            per_column[config["column"]] = (config["method"], float(m["value"]), float(m["value"]) >= config["threshold"])
    assert sorted(per_column) == sorted(columns), f"Evidently judged {sorted(per_column)}"
    # Evidently's own dataset rule (legacy get_dataset_drift): drifted when share ≥ drift_share.
    return share >= float(count["config"]["drift_share"]), share, per_column


def timed(fn, repeat: int, *args):
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="live rows per case")
    parser.add_argument("--pool-days", type=int, default=50, help="simulated days of real feature rows per case")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the project computation (median)")
    parser.add_argument("--evidently-repeat", type=int, default=1, help="runs of Evidently (median)")
    parser.add_argument("--columns", action="store_true", help="print every column's scores")
    args = parser.parse_args()
    os.environ["DO_NOT_TRACK"] = "1"

    from ecosystem_assets.fraud.drift import COLUMN_THRESHOLD
    from ecosystem_assets.fraud.features import FEATURES

    reference, currents = build_data(args.rows, args.pool_days)
    small = currents["undrifted"].head(5_000)
    project(reference, small, FEATURES), evidently(reference, small, FEATURES)  # warm-up: imports, registries

    all_equal = True
    for case, current in currents.items():
        p_time, (p_verdict, p_share, p_cols) = timed(project, args.repeat, reference, current, FEATURES)
        e_time, (e_verdict, e_share, e_cols) = timed(evidently, args.evidently_repeat, reference, current, FEATURES)
        equal = p_verdict == e_verdict
        all_equal &= equal
        method_diff = [c for c in FEATURES if p_cols[c][0] != e_cols[c][0]]
        flag_diff = [c for c in FEATURES if p_cols[c][2] != e_cols[c][2]]
        worst = max(FEATURES, key=lambda c: abs(p_cols[c][1] - e_cols[c][1]))
        print(f"\n[{case}] reference {len(reference):,} rows, current {len(current):,} rows, {len(FEATURES)} features")
        print(
            f"  Evidently DataDriftPreset (baseline)  median {e_time:7.3f} s over {args.evidently_repeat} run(s); "
            f"dataset drift {e_verdict}, share {e_share:.3f}"
        )
        print(
            f"  project detect_drift                  median {p_time:7.3f} s over {args.repeat} run(s); "
            f"dataset drift {p_verdict}, share {p_share:.3f}"
        )
        print(f"  speed-up Evidently/project: {e_time / p_time:.1f}x (goal ≥ 5x); project under 15 s: {p_time < 15}")
        print(
            f"  verdicts {'EQUAL' if equal else 'DIFFER'}; columns with another test: {method_diff or 'none'}; "
            f"columns judged differently: {flag_diff or 'none'}; largest score gap: {worst} "
            f"{p_cols[worst][1]:.6f} vs {e_cols[worst][1]:.6f}"
        )
        close = min(FEATURES, key=lambda c: abs(e_cols[c][1] - COLUMN_THRESHOLD))
        print(
            f"  closest to the {COLUMN_THRESHOLD} column threshold: {close} {p_cols[close][1]:.5f} (project) vs "
            f"{e_cols[close][1]:.5f} (Evidently)"
        )
        if args.columns or flag_diff or method_diff:
            print(f"    {'feature':26} {'test':30} {'project':>10} {'Evidently':>10} {'gap':>10}")
            for c in FEATURES:
                gap = p_cols[c][1] - e_cols[c][1]
                marks = ("*" if p_cols[c][2] else " ") + ("*" if e_cols[c][2] else " ")
                print(f"    {c:26} {e_cols[c][0]:30} {p_cols[c][1]:10.5f} {e_cols[c][1]:10.5f} {gap:+10.2e} {marks}")
    print(f"\nverdicts equal in both cases: {all_equal}")
    return 0 if all_equal else 1


if __name__ == "__main__":
    sys.exit(main())
