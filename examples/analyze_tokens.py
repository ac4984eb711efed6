"""Analyse a scan's per-token entropies with pandas (no notebook needed).

    python examples/analyze_tokens.py REPORT_DIR        # the --out directory of `memaudit scan`

Reads tokens.parquet (one row per sample × position) and samples.parquet (one row per sample) and
prints: the provenance the report was made with; how entropy is distributed; which positions of
the sequence the model is most certain about; which tokens are most often predicted with near-zero
entropy; the samples that look most like stored sequences; and, when the scan was run with extra
evaluation times, how entropy grows with the noise level. All entropies are in nats.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq


def load(report_dir: Path):
    tokens = pq.read_table(report_dir / "tokens.parquet").to_pandas()
    samples = pq.read_table(report_dir / "samples.parquet").to_pandas()
    meta = json.loads(pq.read_schema(report_dir / "tokens.parquet").metadata[b"memaudit"])
    return tokens, samples, meta


def analyse(report_dir: Path, top: int = 10) -> dict:
    tokens, samples, meta = load(report_dir)
    tau = float(meta["tau"])
    model = meta["model"]
    ln_v = math.log(model["vocab_size"])
    out = {}

    print(f"checkpoint: {model.get('checkpoint') or model.get('hub_id')}  family={model.get('family')} "
          f"weights={model.get('weights')}  V={model['vocab_size']} (ln V = {ln_v:.3f} nats)")
    print(f"verdict recorded in the report: {meta['verdict']} ({meta['reason']}); rule {meta['rule']['name']} "
          f"({meta['rule']['status']}); tau = {tau:g} nats; t_eval = {meta['t_eval']:g}")

    # With an entropy profile over several t, keep the primary evaluation time for the rest.
    profile = None
    if "t_eval" in tokens.columns:
        profile = tokens.groupby("t_eval")["entropy"].agg(["mean", "median", lambda h: (h < tau).mean()])
        profile.columns = ["mean_entropy", "median_entropy", "share_below_tau"]
        tokens = tokens[tokens["t_eval"] == meta["t_eval"]]

    h = tokens["entropy"].astype("float64")
    print("\n== per-token entropy (nats)")
    print(h.describe(percentiles=[0.05, 0.25, 0.5, 0.75, 0.95]).to_string())
    out["share_below_tau"] = float((h < tau).mean())
    print(f"share of tokens with H < tau: {out['share_below_tau']:.1%}; mean H / ln V: {h.mean() / ln_v:.1%}")

    by_position = tokens.groupby("position")["entropy"].agg(["mean", "median"])
    by_position["share_below_tau"] = tokens.assign(low=tokens["entropy"] < tau).groupby("position")["low"].mean()
    out["by_position"] = by_position
    print(f"\n== the {min(top, len(by_position))} positions the model is most certain about")
    print(by_position.nsmallest(top, "mean").to_string(float_format=lambda v: f"{v:.4f}"))

    low = tokens[tokens["entropy"] < tau]
    counts = low.groupby("token_id").size().rename("n_low").to_frame()
    counts["share_of_its_occurrences"] = counts["n_low"] / tokens.groupby("token_id").size().reindex(counts.index)
    out["low_tokens"] = counts
    print(f"\n== tokens most often predicted with H < tau ({len(low)} token positions)")
    print(counts.sort_values("n_low", ascending=False).head(top).to_string(float_format=lambda v: f"{v:.2f}"))

    per_sample = tokens.groupby("sample_id")["entropy"].mean().rename("mean_entropy_from_tokens")
    joined = samples.set_index("sample_id").join(per_sample)
    # samples.parquet's mean_entropy is the same statistic, computed by memaudit in float64.
    assert (joined["mean_entropy"] - joined["mean_entropy_from_tokens"]).abs().max() < 1e-4
    cols = ["mean_entropy", "low_entropy_fraction", "is_duplicate", "is_fixed_point"]
    if joined["text"].notna().any():
        cols.append("text")
    print(f"\n== the {min(top, len(joined))} samples that look most like stored sequences")
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(joined.nsmallest(top, "mean_entropy")[cols].to_string())
    out["samples"] = joined

    if profile is not None:
        print("\n== entropy against evaluation time t")
        print(profile.to_string(float_format=lambda v: f"{v:.4f}"))
        out["profile"] = profile
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report_dir", type=Path)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    if not (args.report_dir / "tokens.parquet").is_file():
        print(f"{args.report_dir} has no tokens.parquet: pass the --out directory of `memaudit scan`", file=sys.stderr)
        return 2
    analyse(args.report_dir, top=args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
