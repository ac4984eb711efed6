import numpy as np, pyarrow.parquet as pq
from pathlib import Path
exec(open('poslock2.py').read().split("def report")[0])
def colH_mask(tok, special):
    N, L = tok.shape
    out = np.full(L, np.nan)
    for j in range(L):
        col = tok[:, j]; col = col[~np.isin(col, special)]
        if len(col) < 32: continue
        _, c = np.unique(col, return_counts=True); p = c / len(col)
        out[j] = -(p * np.log(p)).sum() + (len(c) - 1) / (2 * len(col))
    return out
def Dm(tok, special, R=4):
    rng = np.random.default_rng(0)
    h = colH_mask(tok, special)
    hs = np.nanmean([colH_mask(shifted(tok, rng, None), special) for _ in range(R)], 0)
    d = hs - h
    return float(np.nanmean(d)), float(np.nanmedian(d))
root = Path('/work/validation-runs')
for sp in sorted(root.glob('*/points/n*/scan/samples.parquet')):
    tok = np.stack(pq.read_table(sp).column('token_ids').to_pylist())
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(str(sp.parent.parent / 'checkpoint' / 'tokenizer.json'))
    special = [tk.token_to_id(t) for t in ('<|endoftext|>',) if tk.token_to_id(t) is not None]
    print(f"{str(sp)[22:-28]:40s} mean={Dm(tok, special)[0]:+.3f} median={Dm(tok, special)[1]:+.3f}", flush=True)
from memaudit.data.corpus import load_corpus
from memaudit.data.sources import builtin_documents
from memaudit.data.cache import Cache, default_cache_dir
for kind in ('templates', 'records', 'code', 'stdlib'):
    c = load_corpus(kind, seq_len=64, seed=0, vocab_size=512)
    rng = np.random.default_rng(0)
    eos = c.tokenizer.token_to_id('<|endoftext|>')
    blocks = c._train_pool[rng.choice(len(c._train_pool), 256, replace=False)]
    docs = builtin_documents(kind, 0, Cache(default_cache_dir()))
    for unit in ('line', 'doc'):
        items = [l for d in docs for l in d.split('\n') if l.strip()] if unit == 'line' else docs
        pick = rng.choice(len(items), 256, replace=len(items) < 256)
        seqs = []
        for i in pick:
            ids = c.tokenizer.encode(items[i]).ids[:63] + [eos]
            seqs.append(ids + [eos] * (64 - len(ids)))
        print(f"DATA {kind} {unit}-aligned padded", "mean=%+.3f median=%+.3f" % Dm(np.array(seqs), [eos]))
    print(f"DATA {kind} blocks", "mean=%+.3f median=%+.3f" % Dm(blocks, [eos]))
