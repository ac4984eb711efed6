"""Measure the stored-subset search on a checkpoint: python benchmarks/stored_search.py CKPT default|deep|KIND,KIND N_SAMPLES [STARTS]."""
import sys, time, json
from dataclasses import replace
import torch, numpy as np
import memaudit
from memaudit.sampling import generate
from memaudit.stored import search_stored, StoredSettings, DEFAULT_SCAN, DEEP, START_KINDS
ckpt, mode = sys.argv[1], sys.argv[2]
nsamp = int(sys.argv[3]) if len(sys.argv) > 3 else 16
den = memaudit.load(ckpt, weights="ema")
t = time.time()
samples = generate(den, nsamp, steps=32, grid="quadratic", seed=0, batch_size=64).numpy()
ts = time.time() - t
st = {"default": DEFAULT_SCAN, "deep": DEEP}.get(mode)
if st is None:
    kinds = tuple(mode.split(","))
    st = StoredSettings(starts=int(sys.argv[4]) if len(sys.argv) > 4 else 32, kinds=kinds)
t = time.time()
res = search_stored(den, st, samples=samples, batch_size=64)
tsr = time.time() - t
print(f"samples {nsamp} in {ts:.1f}s; search {tsr:.1f}s, calls {res.network_calls}, starts {res.start_kinds}")
print("baseline", res.baseline, "found", res.found, "estimate", res.estimate, res.estimate_ci)
for c in res.candidates:
    planted = any(k in (c["text"] or "") for k in ("sk_live", "billing", "northwind", "RETRY", "deployment"))
    print(f"  stored={c['stored']} planted={planted} len={c['length']} rec={c['recurrence']} kinds={c['start_kinds']} basin={c['basin']} H={c['mean_entropy']:.3f} :: {c['text'][:100]!r}")
print("low-entropy starts:", {k: (v["n"], v["of"], round(v["median_entropy"], 2), [round(e["mean_entropy"], 2) for e in v["examples"]], [e["text"][:60] for e in v["examples"]][:1]) for k, v in res.low_entropy_starts.items()})
print("samples containing planted:", sum(any(k in den.decode(s) for k in ("sk_live", "billing", "northwind")) for s in samples))
