import sys, json, numpy as np, torch
torch.set_num_threads(1)
from memaudit.adapters import as_denoiser
from memaudit.sampling import SampleStreams, batches, generate
from memaudit import diffusion as D
for ck in sys.argv[1:]:
    d = as_denoiser(ck, None, 'cpu')
    tok = generate(d, 256, steps=32, seed=0, batch_size=64, grid='quadratic', show_progress=False)
    out = {}
    for t in (0.05, 0.5):
        C, A, G = [], [], []
        with torch.no_grad():
            for a, b in batches(256, 64):
                st = SampleStreams(7, ("selfcal", t), range(a, b))
                al = d.schedule.alpha(torch.full((b - a,), t, dtype=torch.float64))
                x0 = tok[a:b]; xt = st.corrupt(x0, al, d.vocab_size)
                lp = d(xt, torch.full((b - a,), t))
                top, arg = lp.max(-1)
                C.append(top.exp().mean(1)); A.append((arg == x0).float().mean(1))
                G.append((-lp.gather(-1, x0[..., None])[..., 0] - D.entropy(lp).float()).mean(1))
        c, a_, g = torch.cat(C).double(), torch.cat(A).double(), torch.cat(G).double()
        out[t] = dict(conf=round(c.mean().item(), 4), acc=round(a_.mean().item(), 4), overconf=round((c - a_).mean().item(), 4), gap=round(g.mean().item(), 4))
    print(ck, json.dumps(out), flush=True)
