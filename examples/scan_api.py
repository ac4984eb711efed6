"""Audit a checkpoint from Python: scan it, read the verdict and statistics, write the reports.

    python examples/scan_api.py CHECKPOINT [--samples 256] [--seed 0] [--out DIR]

CHECKPOINT is anything `memaudit.load` accepts: a memaudit run directory (e.g. one written by
`memaudit train`), a Duo/UDLM Lightning .ckpt, a SEDD run, an HF-style directory or a hub id. The
exit status follows the CLI's contract (0 generalizing, 1 memorizing, 3 inconclusive), so the script
can replace `memaudit scan` in a pipeline that needs custom logic around it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import memaudit
from memaudit.report import write_junit, write_report, write_scan_html, write_summary_md

EXIT_CODES = {"generalizing": 0, "memorizing": 1, "inconclusive": 3}


def audit(checkpoint, samples: int = 256, seed: int = 0, out: Path | None = None, steps: int | None = None):
    """Scan `checkpoint` (a path, hub id or an already loaded Denoiser) and return the result."""
    # memaudit.load(...) gives a Denoiser; scan() accepts either that or the path itself.
    denoiser = checkpoint if not isinstance(checkpoint, (str, Path)) else memaudit.load(str(checkpoint))
    result = memaudit.scan(denoiser, samples=samples, seed=seed, steps=steps)

    print(f"verdict: {result.verdict} ({result.reason})")
    print(f"  {result.explanation}")
    lo, hi = result.mean_entropy_ci
    print(f"  mean conditional entropy {result.mean_entropy:.4f} nats, 95% CI [{lo:.4f}, {hi:.4f}] "
          f"(ln V = {result.max_entropy:.3f})")
    print(f"  samples with mean entropy < tau: {result.near_zero_sample_fraction:.1%}; "
          f"duplicates: {result.duplicate_rate:.1%}; fixed points: {result.fixed_point_fraction:.1%}")
    rule = result.rule.describe()
    print(f"  rule: {rule['name']} v{rule['version']} ({rule['status']})")

    # One row per sample, as a pandas DataFrame (the samples.parquet table).
    frame = result.to_pandas()
    lowest = frame.nsmallest(3, "mean_entropy")[["sample_id", "mean_entropy", "is_duplicate", "is_fixed_point"]]
    print("lowest-entropy samples:")
    print(lowest.to_string(index=False))

    if out is not None:
        out = Path(out)
        write_report(result, out)                          # summary.json, samples.parquet, tokens.parquet, report.html
        decode = getattr(denoiser, "decode", None)         # show samples token by token as text
        write_scan_html(out, decode=decode if getattr(denoiser, "tokenizer", None) is not None else None)
        summary = result.summary()
        write_junit(summary, out / "junit.xml")
        write_summary_md(summary, out / "summary.md", artifacts=sorted(p.name for p in out.iterdir()))
        print(f"report: {out / 'report.html'}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: memaudit's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        result = audit(args.checkpoint, samples=args.samples, seed=args.seed, out=args.out, steps=args.steps)
    except memaudit.LoadError as e:
        print(f"cannot load {args.checkpoint}: {e}", file=sys.stderr)
        return 4
    return EXIT_CODES.get(result.verdict, 5)


if __name__ == "__main__":
    sys.exit(main())
