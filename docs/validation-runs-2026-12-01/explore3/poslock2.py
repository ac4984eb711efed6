import sys, json, numpy as np, pyarrow.parquet as pq
from pathlib import Path
def colH(tok):
    N, L = tok.shape
    out = np.empty(L)
    for j in range(L):
        _, c = np.unique(tok[:, j], return_counts=True); p = c / N
        out[j] = -(p * np.log(p)).sum()
    return out
def shifted(tok, rng, k):
    N, L = tok.shape
    if k is None:
        off = rng.integers(0, L, N); idx = (np.arange(L)[None] + off[:, None]) % L
    else:
        d = rng.integers(1, k + 1, N) * rng.choice([-1, 1], N)
        idx = np.arange(L)[None] + d[:, None]
        idx = np.where(idx < 0, -idx, idx); idx = np.where(idx >= L, 2 * (L - 1) - idx, idx)
    return np.take_along_axis(tok, idx, 1)
def D(tok, k, agg, R=4, seed=0):
    rng = np.random.default_rng(seed)
    h = colH(tok)
    hs = np.mean([colH(shifted(tok, rng, k)) for _ in range(R)], 0)
    diff = hs - h
    return float(np.median(diff) if agg == 'median' else diff.mean())
def report(name, tok):
    vals = [D(tok, None, 'mean'), D(tok, 2, 'mean'), D(tok, 2, 'median'), D(tok, 4, 'median')]
    print(f"{name:40s} " + " ".join(f"{v:+.3f}" for v in vals), flush=True)
print(f"{'point':40s} glob   loc2m  loc2med loc4med")
root = Path('/work/validation-runs')
for sp in [] and sorted(root.glob('*/points/n*/scan/samples.parquet')):
    tok = np.stack(pq.read_table(sp).column('token_ids').to_pylist())
    report(str(sp).replace('/work/validation-runs/', '').replace('/scan/samples.parquet', ''), tok)
# data simulations: sentence-aligned padded sequences and stream blocks
from memaudit.data.corpus import load_corpus
from memaudit.data import generators
for kind in ('templates', 'records', 'code', 'stdlib'):
    try:
        c = load_corpus(kind, seq_len=64, seed=0, vocab_size=512)
    except Exception as e:
        print(kind, 'skip', e); continue
    rng = np.random.default_rng(0)
    blocks = c._train_pool[rng.choice(len(c._train_pool), 256, replace=False)]
    report(f"DATA {kind} stream blocks", blocks)
    from memaudit.data.sources import builtin_documents
    from memaudit.data.cache import Cache, default_cache_dir
    docs = builtin_documents(kind, 0, Cache(default_cache_dir()))
    eos = c.tokenizer.token_to_id('<|endoftext|>') if c.tokenizer.token_to_id('<|endoftext|>') is not None else 0
    # sentence/document-aligned: each sequence starts at a document (or line) start, padded with eos
    lines = [l for d in docs for l in d.split('\n') if l.strip()]
    pick = rng.choice(len(lines), 256, replace=False)
    seqs = []
    for i in pick:
        ids = c.tokenizer.encode(lines[i]).ids[:63] + [eos]
        seqs.append(ids + [eos] * (64 - len(ids)))
    report(f"DATA {kind} line-aligned padded", np.array(seqs))
    # memorizer simulations: n stored blocks, position-wise chimeras
    for n in (8, 32, 128):
        st = blocks[:n]
        ch = st[rng.integers(0, n, (256, 64)), np.arange(64)[None]]
        report(f"SIM chimera n={n} ({kind})", ch)
print('profile of global diff per position (8 bins)')
for name in ['templates-nano-s1/points/n0000008', 'code-nano-s1/points/n0000032', 'templates-nano-s300/points/n0000008', 'records-nano-s1/points/n0012947']:
    tok = np.stack(pq.read_table(root / name / 'scan/samples.parquet').column('token_ids').to_pylist())
    rng = np.random.default_rng(0)
    h = colH(tok); hs = np.mean([colH(shifted(tok, rng, None)) for _ in range(8)], 0)
    d = hs - h
    print(name, np.round(d.reshape(8, -1).mean(1), 3))
