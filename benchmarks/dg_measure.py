"""DiffusionGemma on CPU: cost per canvas step, and what the probe's self-conditioning choice changes.

    python benchmarks/dg_measure.py MODEL_DIR [--samples 16] [--prompts sft_train.jsonl]

Draws samples with the family's own sampler (memaudit.block_sampling) under each prompt (the BOS
token by default), times one decoder call per canvas step, and measures the entropy of the x0
prediction on the finished canvases with self-conditioning 'none' (zeros) and 'self' (the model's
own first pass on the same canvas fed back), clean and re-noised at t = 0.05. Prints one JSON.
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--prompts", default=None)
    args = ap.parse_args()

    import memaudit
    from memaudit.probe import evaluate_entropy
    from memaudit.prompted import resolve_prompts
    from memaudit.sampling import generate

    torch.set_num_threads(1)
    base = memaudit.load(args.model)
    run = resolve_prompts(base, prompts_file=args.prompts)
    prompts = run.prompts[: max(1, min(len(run.prompts), 8))]
    per = max(1, args.samples // len(prompts))
    out = {"model": args.model, "canvas": base.seq_len, "vocab": base.vocab_size, "prompts": len(prompts),
           "samples": per * len(prompts)}
    canvas = torch.randint(0, base.vocab_size, (per, base.seq_len))
    d = run.with_prompt(prompts[0])
    d.raw_logits(canvas)
    t0 = time.perf_counter()
    for _ in range(10):
        d.raw_logits(canvas)
    out["seconds_per_canvas_step"] = {"batch": per, "value": (time.perf_counter() - t0) / 10}
    results = {mode: {"clean": [], "t0.05": []} for mode in ("none", "self")}
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        d = run.with_prompt(p)
        x = generate(d, per, seed=i, batch_size=per, show_progress=False)
        for mode in ("none", "self"):
            d.self_conditioning = mode
            for label, t in (("clean", 1e-5), ("t0.05", 0.05)):
                h, _ = evaluate_entropy(d, x, t, seed=0)
                results[mode][label].append(h)
    out["sampling_and_entropy_seconds"] = time.perf_counter() - t0
    for mode, by_t in results.items():
        for label, hs in by_t.items():
            h = torch.cat(hs)
            out[f"entropy_{mode}_{label}"] = {"mean": float(h.mean()), "tokens_below_0.1": float((h < 0.1).float().mean())}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
