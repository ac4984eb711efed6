"""Position-locking of the samples' content: per-position empirical token entropy (plug-in) of the
N samples vs the same samples circularly shifted by a random per-sample offset."""
import sys, json, numpy as np, pyarrow.parquet as pq
from pathlib import Path
def colH(tok):
    N, L = tok.shape
    hs = []
    for j in range(L):
        _, c = np.unique(tok[:, j], return_counts=True); p = c / N
        hs.append(-(p * np.log(p)).sum())
    return np.array(hs)
def stat(tok, seed=0):
    rng = np.random.default_rng(seed)
    N, L = tok.shape
    h = colH(tok)
    sh = []
    for r in range(5):
        off = rng.integers(0, L, N)
        idx = (np.arange(L)[None, :] + off[:, None]) % L
        sh.append(colH(np.take_along_axis(tok, idx, 1)).mean())
    return h.mean(), float(np.mean(sh)), np.median(h)
root = Path('/work/validation-runs')
rows = []
paths = sorted(root.glob('*/points/n*/scan/samples.parquet')) + [Path(p) for p in sys.argv[1:]]
for sp in paths:
    tok = np.stack(pq.read_table(sp).column('token_ids').to_pylist())
    h, hs, med = stat(tok)
    name = str(sp).replace('/work/validation-runs/', '').replace('/scan/samples.parquet', '')
    print(f"{name:40s} col_H={h:.3f} shifted_H={hs:.3f} diff={hs-h:+.3f} ratio={h/hs:.3f}")
