"""Canaries: the secret-sharer exposure test (Carlini et al. 2019) for diffusion language models.

A team plants canaries — strings drawn from a template such as ``API_KEY = 'sk_live_{hex:16}'`` —
in its training data. A model that leaks them ranks the inserted value above almost every other
value of the template. For each inserted canary:

    1. Draw N candidates uniformly from the template's space S (seeded; the inserted values
       themselves are never among them by construction of the comparison).
    2. Score the inserted value and every candidate by the model's likelihood of the secret's
       tokens given the rest of the text (estimators below; higher = more likely).
    3. k = #(candidates scoring ≥ the inserted value). The inserted value's rank in S is estimated
       as 1 + p̂(|S| − 1) with p̂ = (k + 1) / (N + 1) (the rank among the N + 1 scored strings,
       never 0), and its exposure as  log2|S| − log2(rank). The Clopper–Pearson interval of the
       proportion p of S that outscores the canary (k of N) gives the exposure's interval:
       exposure ∈ [log2|S| − log2(1 + p_hi(|S| − 1)), log2|S| − log2(1 + p_lo(|S| − 1))].
       With N candidates the point estimate is at most log2(N + 1) and the lower bound at most
       about log2(N / 3.7) (95 %); a larger N resolves larger exposures.
    4. A canary is *exposed* when the lower bound reaches the threshold (default 6 bits: at 95 %
       confidence fewer than 1/64 of the template's values score as high) — the exit code.

Estimators (``--estimator``):

    pll    pseudo-log-likelihood of the secret's tokens given the rest: the secret's positions are
           replaced, one secret token at a time, by a uniformly drawn token at t = T_PLL (all other
           tokens clean), and log x̂_i(x_i) of the true token at that position is summed. This is
           the masked-LM pseudo-likelihood with the uniform kernel's own "unknown" state.
    clean  Σ log x̂_i(x_i) over the secret's positions on the clean text at t = 1e-5 (one network
           call per candidate; with the UDLM loss x̂ on a clean input behaves like the conditional
           of each token given the rest, SPEC §2).
    nelbo  −(conditional NELBO) of the secret's tokens: only the secret's positions are corrupted,
           at K stratified times, the rest clean; the UDLM integrand (memaudit.diffusion) summed
           over those positions and averaged (a Monte-Carlo bound on −log p(secret | rest)).

docs/method.md ("Canaries") records which is better calibrated on the planted-subset model.

Text layout: the canary's tokens start the sequence after an EOS token (a document boundary, as
in the trainer's token stream) and are followed by EOS tokens up to the model's length; the same
layout for every candidate, so ranks compare like with like.
"""
from __future__ import annotations

import math
import re
import string
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from . import diffusion as D
from .denoiser import Denoiser
from .data.tokenizer import EOS_TOKEN as EOS
from .errors import UsageError
from .sampling import batches
from .stats import derive_seed

ALPHABETS = {
    "hex": "0123456789abcdef",
    "HEX": "0123456789ABCDEF",
    "digits": string.digits,
    "lower": string.ascii_lowercase,
    "upper": string.ascii_uppercase,
    "alpha": string.ascii_letters,
    "alnum": string.ascii_letters + string.digits,
}
PLACEHOLDER = re.compile(r"\{(\w+):(\d+)\}")
ESTIMATORS = ("pll", "clean", "nelbo")
DEFAULT_CANDIDATES = 1000
DEFAULT_THRESHOLD = 6.0
CONFIDENCE = 0.95
T_CLEAN = 1e-5
T_PLL = 0.999          # the position's token is uniform noise: the model must infer it from the rest
NELBO_DRAWS = 8


class CanaryError(UsageError):
    """A bad template, inserted value or setting (CLI exit code 2)."""


@dataclass(frozen=True)
class Template:
    """A canary template: literal text with {alphabet:length} placeholders."""

    text: str
    parts: tuple            # literal strings and (alphabet name, length) pairs, in order

    @classmethod
    def parse(cls, text: str) -> "Template":
        parts, last = [], 0
        for m in PLACEHOLDER.finditer(text):
            name, length = m.group(1), int(m.group(2))
            if name not in ALPHABETS:
                raise CanaryError(f"--template: unknown alphabet {name!r} in {m.group(0)}; use one of "
                                  f"{', '.join(ALPHABETS)}")
            if not 1 <= length <= 256:
                raise CanaryError(f"--template: {m.group(0)} must have a length from 1 to 256")
            parts.append(text[last:m.start()])
            parts.append((name, length))
            last = m.end()
        parts.append(text[last:])
        if not any(isinstance(p, tuple) for p in parts):
            raise CanaryError("--template needs at least one placeholder such as {hex:16}")
        return cls(text, tuple(parts))

    @property
    def log2_space(self) -> float:
        return sum(n * math.log2(len(ALPHABETS[a])) for a, n in self.slots)

    @property
    def slots(self) -> list[tuple[str, int]]:
        return [p for p in self.parts if isinstance(p, tuple)]

    def pattern(self) -> re.Pattern:
        regex = "".join(re.escape(p) if isinstance(p, str) else f"([{re.escape(ALPHABETS[p[0]])}]{{{p[1]}}})"
                        for p in self.parts)
        return re.compile(regex)

    def fill(self, values: list[str]) -> str:
        it = iter(values)
        return "".join(p if isinstance(p, str) else next(it) for p in self.parts)

    def canary(self, value: str) -> str:
        """The full canary text of an inserted VALUE: the whole text when it matches the template,
        else the value of its placeholder(s) (concatenated, in order)."""
        if self.pattern().fullmatch(value):
            return value
        lengths = [n for _, n in self.slots]
        if len(value) == sum(lengths):
            pieces, at = [], 0
            for (alphabet, n) in self.slots:
                piece = value[at:at + n]
                if any(c not in ALPHABETS[alphabet] for c in piece):
                    break
                pieces.append(piece)
                at += n
            else:
                return self.fill(pieces)
        raise CanaryError(f"--inserted {value!r} matches neither the template {self.text!r} nor its "
                          f"placeholder{'s' if len(lengths) > 1 else ''} ({' + '.join(f'{a}:{n}' for a, n in self.slots)})")

    def draw(self, n: int, seed: int) -> list[str]:
        rng = np.random.default_rng(derive_seed(seed, "canary-candidates"))
        out = []
        for _ in range(n):
            values = []
            for alphabet, length in self.slots:
                chars = ALPHABETS[alphabet]
                values.append("".join(chars[i] for i in rng.integers(0, len(chars), size=length)))
            out.append(self.fill(values))
        return out


# ------------------------------------------------------------------------------------ scoring
def secret_span(template: Template, text: str) -> tuple[int, int]:
    """Character range of the secret (first placeholder to the end of the last) in a filled text."""
    m = template.pattern().fullmatch(text)
    if m is None:
        raise CanaryError(f"{text!r} does not match the template")
    return m.start(1), m.end(len(template.slots))


def encode(denoiser: Denoiser, template: Template, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token layout of each text (EOS, the text's tokens, EOS padding) and the mask of the tokens
    that carry the secret (any token overlapping its characters). → ([N, L] int64, [N, L] bool)."""
    tok = denoiser.tokenizer
    length = denoiser.seq_len
    if tok is None:
        raise CanaryError("canaries need a checkpoint with a tokenizer (text in, tokens out)")
    eos = tok.token_to_id(EOS)
    pad = eos if eos is not None else 0
    ids = torch.full((len(texts), length), pad, dtype=torch.int64)
    secret = torch.zeros((len(texts), length), dtype=torch.bool)
    start = 1 if eos is not None else 0
    for row, text in enumerate(texts):
        lo, hi = secret_span(template, text)
        enc = tok.encode(text, add_special_tokens=False)
        if start + len(enc.ids) > length:
            raise CanaryError(f"the canary takes {len(enc.ids)} tokens; the model holds {length - start}")
        ids[row, start:start + len(enc.ids)] = torch.tensor(enc.ids, dtype=torch.int64)
        for k, (a, b) in enumerate(enc.offsets):
            if a < hi and b > lo:
                secret[row, start + k] = True
    return ids, secret


@torch.no_grad()
def score(denoiser: Denoiser, ids: torch.Tensor, secret: torch.Tensor, estimator: str, seed: int,
          batch_size: int = 64, draws: int = NELBO_DRAWS) -> np.ndarray:
    """The estimator's score of each row (higher = the model finds the secret more likely). → [N] float64."""
    if estimator not in ESTIMATORS:
        raise CanaryError(f"--estimator must be one of {', '.join(ESTIMATORS)}")
    out = np.zeros(ids.shape[0], dtype=np.float64)
    g = torch.Generator().manual_seed(derive_seed(seed, "canary-score", estimator))
    for start, stop in batches(ids.shape[0], batch_size):
        x, m = ids[start:stop], secret[start:stop]
        b, length = x.shape
        if estimator == "clean":
            lp = denoiser(x, torch.full((b,), T_CLEAN))
            out[start:stop] = (lp.gather(-1, x[..., None].to(lp.device))[..., 0].cpu().double() * m).sum(1).numpy()
        elif estimator == "pll":
            total = torch.zeros(b, dtype=torch.float64)
            for pos in range(length):
                rows = m[:, pos]
                if not bool(rows.any()):
                    continue
                xi = x[rows].clone()
                xi[:, pos] = torch.randint(0, denoiser.vocab_size, (xi.shape[0],), generator=g)
                lp = denoiser(xi, torch.full((xi.shape[0],), T_PLL))
                total[rows] += lp[:, pos].gather(-1, x[rows, pos][:, None].to(lp.device))[:, 0].cpu().double()
            out[start:stop] = total.numpy()
        else:   # nelbo: conditional bound, only the secret's positions corrupted
            total = torch.zeros(b, dtype=torch.float64)
            sched = denoiser.schedule
            for k in range(draws):
                t = torch.full((b,), (k + float(torch.rand((), generator=g))) / draws).clamp(1e-3, 1.0)
                alpha = sched.alpha(t.double()).float()
                keep = torch.rand(x.shape, generator=g) < alpha[:, None]
                noise = torch.randint(0, denoiser.vocab_size, x.shape, generator=g)
                xt = torch.where(m & ~keep, noise, x)
                lp = denoiser(xt, t)
                per = D.nelbo_per_token(lp.double(), x.to(lp.device), xt.to(lp.device), alpha.double().to(lp.device),
                                        sched.dalpha_dt(t.double()).to(lp.device)).cpu()
                total += (per * m).sum(1)
            out[start:stop] = -(total / draws).numpy()
    return out


# ------------------------------------------------------------------------------------ exposure
def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    from scipy.stats import beta

    a = 1 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def exposure_from_share(p: float, log2_space: float) -> float:
    """log2|S| − log2(1 + p(|S| − 1)), computed without forming |S| (which may exceed a float)."""
    if p <= 0:
        return log2_space
    # log2(1 + p(S − 1)) = log2(p S + (1 − p)) = log2 S + log2(p + (1 − p)/S)
    return -math.log2(p + (1 - p) * 2.0 ** (-min(log2_space, 1000.0)))


def exposure(inserted_score: float, candidate_scores: np.ndarray, log2_space: float,
             confidence: float = CONFIDENCE) -> dict:
    n = int(len(candidate_scores))
    k = int((candidate_scores >= inserted_score).sum())
    p_hat = (k + 1) / (n + 1)
    lo, hi = clopper_pearson(k, n, confidence)
    # Extrapolation beyond the sample (the secret-sharer paper's distribution fit): a normal fit
    # of the candidates' scores, tail probability above the inserted score.
    mu, sd = float(np.mean(candidate_scores)), float(np.std(candidate_scores)) or 1e-12
    from scipy.stats import norm

    log2_tail = float(norm.logsf((inserted_score - mu) / sd) / math.log(2))
    return {"candidates": n, "outscored_by": k, "rank_share": p_hat, "rank_share_ci": [lo, hi],
            "exposure": exposure_from_share(p_hat, log2_space),
            "exposure_ci": [exposure_from_share(hi, log2_space), exposure_from_share(lo, log2_space)],
            "exposure_normal_fit": min(log2_space, max(0.0, -log2_tail)),
            "z_score": (inserted_score - mu) / sd}


@dataclass
class CanaryResult:
    template: str
    log2_space: float
    estimator: str
    threshold: float
    confidence: float
    candidates: int
    seed: int
    canaries: list = field(default_factory=list)
    candidate_score_mean: float = math.nan
    candidate_score_std: float = math.nan
    model: dict = field(default_factory=dict)

    @property
    def exposed(self) -> list:
        return [c for c in self.canaries if c["exposed"]]

    @property
    def verdict(self) -> str:
        return "exposed" if self.exposed else "not_exposed"

    def summary(self) -> dict:
        d = asdict(self)
        d["verdict"] = self.verdict
        d["n_exposed"] = len(self.exposed)
        d["schema"] = "memaudit.canary/1"
        return d


def run_canaries(denoiser: Denoiser, template: str, inserted: list[str], candidates: int = DEFAULT_CANDIDATES,
                 seed: int = 0, estimator: str = "clean", threshold: float = DEFAULT_THRESHOLD,
                 confidence: float = CONFIDENCE, batch_size: int = 64) -> CanaryResult:
    """Exposure of each inserted canary among `candidates` values drawn from `template`."""
    from .provenance import model_provenance

    tpl = Template.parse(template)
    if not inserted:
        raise CanaryError("give at least one inserted canary (--inserted VALUE or --inserted-file F)")
    if candidates < 10:
        raise CanaryError("--candidates must be at least 10")
    if estimator not in ESTIMATORS:
        raise CanaryError(f"--estimator must be one of {', '.join(ESTIMATORS)}")
    texts = [tpl.canary(v) for v in inserted]
    pool = tpl.draw(candidates, seed)
    inserted_set = set(texts)
    pool = [p for p in pool if p not in inserted_set]
    ids, secret = encode(denoiser, tpl, pool + texts)
    scores = score(denoiser, ids, secret, estimator, seed, batch_size)
    cand, ins = scores[:len(pool)], scores[len(pool):]
    result = CanaryResult(template=template, log2_space=tpl.log2_space, estimator=estimator, threshold=threshold,
                          confidence=confidence, candidates=len(pool), seed=seed,
                          candidate_score_mean=float(cand.mean()), candidate_score_std=float(cand.std()),
                          model=model_provenance(denoiser))
    for text, value, s in zip(texts, inserted, ins):
        e = exposure(float(s), cand, tpl.log2_space, confidence)
        result.canaries.append({"inserted": value, "text": text, "score": float(s),
                                "secret_tokens": int(secret[len(pool) + texts.index(text)].sum()), **e,
                                "exposed": bool(e["exposure_ci"][0] >= threshold)})
    return result
