"""How many samples the adaptive scan draws on trained models: every calibration and validation
point, replayed from the per-sample values in the checked-in tables (no model needed).

    python benchmarks/adaptive_counts.py            # both tables under the default rule
    python benchmarks/adaptive_counts.py --rule FILE

For each point it prints the full-sample (256) verdict, the adaptive verdict, the samples the
adaptive scan used (looks 32/64/128/256, memaudit.verdict.sequential) and, summed over the points,
the share of the fixed-sample cost the adaptive scans spend (a scan's cost is proportional to its
samples). Not a test: it prints figures.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from memaudit.experiments.validation import replay_adaptive  # noqa: E402
from memaudit.verdict import load_rule  # noqa: E402

CALIBRATION = Path(__file__).resolve().parents[1] / "memaudit" / "calibration"
TABLES = {"calibration": CALIBRATION / "calibration_table.parquet",
          "validation": CALIBRATION / "validation" / "validation_table.parquet"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rule", default=None, help="rule file (default: the scan's default rule)")
    args = ap.parse_args()
    rule = load_rule(args.rule)
    print(f"rule {rule.name} v{rule.version} ({rule.sha256[:16]})")
    print("| table | point | label | full (256) | adaptive | samples used |")
    print("|---|---|---|---|---|---:|")
    used_total = full_total = 0
    by_verdict: dict[str, list[int]] = {}
    for table, path in TABLES.items():
        for row in pq.read_table(path).to_pylist():
            full, adaptive, used = replay_adaptive(row, rule)
            n = len(row["duplicate_of"])
            used_total, full_total = used_total + used, full_total + n
            by_verdict.setdefault(adaptive.verdict, []).append(used)
            name = f"{row.get('sweep') or row['data'] + '·' + row['preset']} n={row['n_train']}"
            print(f"| {table} | {name} | {row['label']} | {full.verdict} ({full.reason}) | "
                  f"{adaptive.verdict} ({adaptive.reason}) | {used} |")
    print(f"\nadaptive samples in all: {used_total} of {full_total} ({used_total / full_total:.0%} of the fixed-sample cost)")
    for verdict, counts in sorted(by_verdict.items()):
        print(f"  {verdict}: {len(counts)} points, median {sorted(counts)[len(counts) // 2]} samples, "
              f"{sum(c < 256 for c in counts)} stopped early")


if __name__ == "__main__":
    main()
