"""How long the code location takes to load, against `import dagster` alone, measured in the same run.

Every Dagster UI reload, run worker and sensor tick pays this. Goal: ratio ≤ 1.5.
Usage: python bench/load_time.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wall_time(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], cwd=REPO, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    wall_time("import ecosystem_assets.definitions")  # warm the file cache and .pyc files
    baseline, project = [], []
    for _ in range(args.runs):  # interleaved, so drift on a busy machine hits both alike
        baseline.append(wall_time("import dagster"))
        project.append(wall_time("import ecosystem_assets.definitions"))
    b, p = statistics.median(baseline), statistics.median(project)
    print(f"import dagster (baseline)            median {b:.3f} s over {args.runs} runs")
    print(f"import ecosystem_assets.definitions  median {p:.3f} s over {args.runs} runs")
    print(f"ratio project/baseline: {p / b:.2f} (goal ≤ 1.5)")


if __name__ == "__main__":
    main()
