"""What a model gives away, for an auditor who holds the training data (or a sample of it).

    python examples/training_evidence.py CHECKPOINT [--train auto|FILE] [--samples 256] [--n 64]

1. `memaudit.scan(..., train_data=...)`: the data-free verdict, and beside it which generated
   samples are exact or near training copies, the longest verbatim training span of each, and the
   paper's entropy gap (training sequences vs samples, at the rule's t_eval and at 1e-5).
2. `memaudit.recover(..., pattern=...)`: how easily training examples are completed from half of
   their tokens (prefix), their end (suffix) or around a gap (span), against held-out examples.
3. `memaudit.infill`: the clamped sampler behind 2, for your own prompts.

--train auto works for checkpoints written by `memaudit train` (they record their training
subset); otherwise give the training text (.txt/.jsonl/.parquet, tokenized with the checkpoint's
tokenizer) or token ids (.npy, [N, L]). The data evidence never changes the verdict: the exit
status is the data-free gate's (0 generalizing, 1 memorizing, 3 inconclusive).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import memaudit

EXIT_CODES = {"generalizing": 0, "memorizing": 1, "inconclusive": 3}


def show_copy(result, i: int) -> None:
    """One sample beside the training window it matches; differing tokens in [brackets]."""
    m = result.training.matches
    sample, train = result.tokens[i], m.nearest_train_tokens[i]
    mark = lambda a, b: " ".join(f"[{x}]" if x != y else str(x) for x, y in zip(a, b))  # noqa: E731
    print(f"  sample #{i}: training example {m.nearest_train_id[i]}, offset {m.nearest_train_offset[i]}, "
          f"{m.nearest_train_distance[i]} tokens differ, longest verbatim span {m.longest_train_span[i]}")
    print(f"    generated: {mark(sample, train)}")
    print(f"    training:  {mark(train, sample)}")


def audit(checkpoint, train="auto", samples: int = 256, steps: int | None = None, n: int = 64,
          steps_per_unit: int = 100, seed: int = 0):
    denoiser = memaudit.load(str(checkpoint)) if isinstance(checkpoint, str) else checkpoint

    # 1. the scan, with the training data beside it
    result = memaudit.scan(denoiser, samples=samples, steps=steps, seed=seed, train_data=train)
    print(f"data-free verdict: {result.verdict} ({result.reason}) — decides the exit code")
    t = result.summary()["training_data"]
    lo, hi = t["extraction_rate_ci"]
    print(f"training copies among {result.n_samples} samples: {t['n_training_copies']} "
          f"({t['extraction_rate']:.1%}, 95% CI [{lo:.1%}, {hi:.1%}]); near copies "
          f"(≤ {t['index']['near_copy_max_distance']} tokens differ): {t['n_near_copies']}")
    q = t["longest_span_quantiles"]
    print(f"longest verbatim training span per sample: median {q['p50']:g}, p90 {q['p90']:g}, max {q['max']} "
          f"of {result.tokens.shape[1]} tokens")
    for g in t["entropy_gap"]:
        print(f"entropy gap at t={g['t']:g}: samples {g['sample_mean_entropy']:.4f} − training "
              f"{g['train_mean_entropy']:.4f} = {g['entropy_gap']:+.4f} nats, 95% CI "
              f"[{g['entropy_gap_ci'][0]:+.4f}, {g['entropy_gap_ci'][1]:+.4f}]")
    frame = result.to_pandas()      # samples.parquet, with is_training_copy, nearest_train_id, …
    near = frame[frame["is_near_copy"]].sort_values(["nearest_train_distance", "sample_id"], ascending=[False, True])
    for i in near["sample_id"].head(2):
        show_copy(result, int(i))

    # 2. prefix-conditioned extraction: training vs held-out, beside recover's own verdict
    rec = memaudit.recover(denoiser, train=train, t0=(0.25,), n=n, seed=seed, steps_per_unit=steps_per_unit,
                           pattern=["prefix:0.5", "suffix:0.5", "span:0.25"])
    print(f"recovery verdict (uniform corruption): {rec.verdict}")
    for g in rec.pattern_gaps:
        print(f"  {g['pattern']:>10}: exact completion train {g['train']:.1%} vs held-out {g['test']:.1%} "
              f"(gap {g['gap']:+.1%}, 95% CI [{g['gap_ci'][0]:+.1%}, {g['gap_ci'][1]:+.1%}])")

    # 3. the clamped sampler: keep the first half of a sample, regenerate the rest
    x = torch.as_tensor(result.tokens[:4])
    keep = torch.zeros_like(x, dtype=torch.bool)
    keep[:, : x.shape[1] // 2] = True
    filled = memaudit.infill(denoiser, x, keep, steps=steps_per_unit, seed=seed)
    assert torch.equal(filled[keep], x[keep])          # kept positions never change
    same = (filled == x).all(dim=1).float().mean().item()
    print(f"infill: {same:.0%} of 4 samples come back whole from their first half")
    return result, rec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--train", default="auto")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--n", type=int, default=64, help="examples per split for the patterns")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    np.set_printoptions(linewidth=120)
    result, _ = audit(args.checkpoint, train=args.train, samples=args.samples, n=args.n, seed=args.seed)
    return EXIT_CODES.get(result.verdict, 3)


if __name__ == "__main__":
    sys.exit(main())
