"""Audit a DiffusionGemma fine-tune: train a tiny reference of the family, scan it without data and
with its SFT set.

    python examples/diffusiongemma_finetune.py [--out runs/dg-example] [--n-train 8] [--steps 300]

1. `memaudit.train_block.train_reference`: a tiny DiffusionGemma-architecture model (transformers'
   own DiffusionGemmaForBlockDiffusion, hidden 64, 2 layers, 4 experts, canvas 16) trained with the
   family's objective — uniform corruption of the response canvas at a random level, cross-entropy of
   x0 given the prompt and the corrupted canvas, self-conditioning on half the examples — on seeded
   grammar Q&A pairs. Few pairs (8) → it memorizes them; it writes sft_train.jsonl / sft_test.jsonl.
   (The same as `memaudit train --family diffusion_gemma --n-train 8 --steps 300 --batch-size 16
   --lr 3e-3 --out DIR`; ≈ 40 s on 2 CPU cores.)
2. `memaudit.scan(DIR, prompts_file=...)`: the data-free probe with the family's own sampler under a
   training prompt. Its verdict is `inconclusive (outside_domain)` — the rule has not been validated
   on this family — and the explanation says what the DDiT rule would have read.
3. `memaudit.scan(DIR, train_data=sft_train.jsonl, test_data=sft_test.jsonl)`: whether the model's
   own sampler reproduces the training responses for training prompts, against held-out prompts.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import memaudit
from memaudit.train_block import BlockTrainConfig, train_reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/dg-example")
    ap.add_argument("--n-train", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--samples", type=int, default=32)
    args = ap.parse_args()

    out = Path(args.out)
    if not (out / "config.json").exists():
        summary = train_reference(BlockTrainConfig(n_train=args.n_train, n_test=8, steps=args.steps), out, log=print)
        print(f"trained: loss {summary['final_loss']:.4f} in {summary['seconds']:.0f} s → {out}")
    from memaudit.inspect import inspect_checkpoint

    for label, value in inspect_checkpoint(str(out))["family_details"].items():
        print(f"  {label}: {value}")

    data_free = memaudit.scan(str(out), samples=args.samples, prompts_file=str(out / "sft_train.jsonl"))
    print(f"\ndata-free: {data_free.verdict} ({data_free.reason})\n  {data_free.explanation}")
    print(f"  mean entropy {data_free.stats['mean_entropy']:.3f} nats, duplicates {data_free.stats['duplicate_rate']:.0%}, "
          f"fixed points {data_free.stats['fixed_point_fraction']:.0%}, basins {data_free.stats['basin_return_rate']:.0%}")

    with_data = memaudit.scan(str(out), samples=args.samples, train_data=str(out / "sft_train.jsonl"),
                              test_data=str(out / "sft_test.jsonl"))
    ev = with_data.responses
    print(f"\n{ev['label']}")
    for split in ("train", "test"):
        s = ev[split]
        print(f"  {split}: exact reproduction {s['exact_match_rate']:.0%}, longest verbatim span "
              f"{s['mean_longest_span_fraction']:.0%} of the response, a training response {s['training_response_rate']:.0%}")
    for row in ev["rows"][:4]:
        print(f"    {row['split']} record {row['record']}: {'EXACT' if row['exact'] else 'new'} · {row['text']}")


if __name__ == "__main__":
    main()
