"""Issue 12 (session 6): self-consistency of the denoiser on its own samples.
For each point: the scan's 256 samples (samples.parquet), corrupted at t, one forward:
per-sample mean entropy H, cross-entropy CE = -log x̂(x0), top-1 prob, accuracy argmax==x0,
over all positions and over corrupted positions."""
import json, sys, time
from pathlib import Path
import numpy as np, torch, pyarrow.parquet as pq
torch.set_num_threads(1)
from memaudit.adapters import as_denoiser
from memaudit.sampling import SampleStreams, batches
from memaudit import diffusion as D
root = Path('/work/validation-runs')
out = root / 'explore3' / 'selfcal.jsonl'
T = [0.05, 0.25, 0.5]
done = {json.loads(l)['point'] for l in out.read_text().splitlines()} if out.exists() else set()
pts = sorted(root.glob('*/points/n*/checkpoint'))
extra = [Path(p) for p in sys.argv[1:]]
for ck in pts + extra:
    name = str(ck.parent.relative_to(root)) if str(ck).startswith(str(root)) else str(ck)
    if name in done: continue
    sp = ck.parent / 'scan' / 'samples.parquet'
    if not sp.exists(): continue
    t0 = time.time()
    d = as_denoiser(str(ck), None, 'cpu')
    tok = torch.tensor(np.stack(pq.read_table(sp).column('token_ids').to_pylist())).long()
    rec = {"point": name, "V": d.vocab_size}
    with torch.no_grad():
        for t in T:
            H, CE, C, A, CEc, Ac, Cc = [], [], [], [], [], [], []
            for a, b in batches(len(tok), 64):
                st = SampleStreams(7, ("selfcal", t), range(a, b))
                al = d.schedule.alpha(torch.full((b - a,), t, dtype=torch.float64))
                x0 = tok[a:b]; xt = st.corrupt(x0, al, d.vocab_size)
                lp = d(xt, torch.full((b - a,), t))
                h = D.entropy(lp).float()
                ce = -lp.gather(-1, x0[..., None])[..., 0]
                top, arg = lp.max(-1)
                acc = (arg == x0).float(); conf = top.exp()
                m = (xt != x0).float()
                H.append(h.mean(1)); CE.append(ce.mean(1)); C.append(conf.mean(1)); A.append(acc.mean(1))
                CEc.append((ce * m).sum(1) / m.sum(1).clamp(min=1)); Ac.append((acc * m).sum(1) / m.sum(1).clamp(min=1)); Cc.append((conf*m).sum(1)/m.sum(1).clamp(min=1))
            H, CE, C, A, CEc, Ac, Cc = [torch.cat(x).double() for x in (H, CE, C, A, CEc, Ac, Cc)]
            rec[f"t{t}"] = dict(H=round(H.mean().item(), 4), CE=round(CE.mean().item(), 4), gap=round((CE - H).mean().item(), 4),
                                conf=round(C.mean().item(), 4), acc=round(A.mean().item(), 4),
                                CEc=round(CEc.mean().item(), 4), accc=round(Ac.mean().item(), 4), confc=round(Cc.mean().item(),4))
    rec["sec"] = round(time.time() - t0, 1)
    with out.open('a') as fh: fh.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)
