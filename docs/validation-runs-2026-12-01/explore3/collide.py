import pyarrow.parquet as pq, numpy as np
def coll(tok):
    """mean over positions of the probability that two different samples share the token there"""
    N, L = tok.shape
    tot = 0.0
    srt = np.sort(tok, axis=0)
    for j in range(L):
        _, c = np.unique(srt[:, j], return_counts=True)
        tot += (c * (c - 1)).sum() / (N * (N - 1))
    return tot / L
def stat(tok, seed=0, R=99):
    rng = np.random.default_rng(seed)
    N, L = tok.shape
    own = coll(tok)
    cols = np.arange(L)[None]
    rot = np.array([coll(np.take_along_axis(tok, (cols + rng.integers(0, L, N)[:, None]) % L, 1)) for _ in range(R)])
    return np.log(own / rot.mean()), (1 + (rot >= own).sum()) / (R + 1)
t = pq.read_table('/work/main/memaudit/calibration/validation/validation_table.parquet').to_pylist()
for r in t:
    tok = np.asarray(r['sample_tokens'])
    vals = [stat(tok[:k]) for k in (32, 64, 128, 256)]
    print(f"{r['sweep']:22s} {r['n_train']:6d} {r['label']:13s}", " ".join(f"{v[0]:+.3f}/{v[1]:.2f}" for v in vals), flush=True)
