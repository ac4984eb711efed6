"""The data-free probe: sample from the model, measure the conditional entropy of its predictions.

    1. Draw N sequences with the model's own sampler (`memaudit.sampling.generate`: uniform noise at
       t = 1, S ancestral steps, greedy noise removal).
    2. Re-noise each sample at the rule's t_eval (memaudit.verdict) with one seeded corruption
       draw (a share ≈ t of the tokens is redrawn: about 5 % at t = 0.05, effectively none at
       1e-5, where the input is the clean sample) and take
       H_i = −Σ_v x̂_i(v) ln x̂_i(v), in nats, from the network's x0 prediction x̂ (the softmax of
       its output, not the reverse posterior), computed in float32. Optionally at several t.
    3. Supporting data-free signals: exact duplicates among samples; whether each sample is a
       fixed point of the greedy reverse dynamics (argmax of the exact posterior at every step,
       started from the clean sample at t_fp); mean entropy relative to ln V.
    4. Summaries with seeded bootstrap confidence intervals over samples (`memaudit.stats`), then
       the verdict of a documented rule (`memaudit.verdict`).

Everything is a pure function of (checkpoint, settings, seed): no wall-clock values enter the
statistics, so reports are byte-identical between runs (timings live in `ScanResult.timings`
and never reach a report file).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .errors import UsageError
from . import __version__
from . import diffusion as D
from . import threads
from .adapters import as_denoiser
from .denoiser import PRECISIONS, Denoiser, at_precision
from .labels import checkpoint_label
from .progress import progress_bar
from .provenance import SCHEMA_VERSION, model_provenance, software_versions  # noqa: F401  (re-exported)
from .sampling import GRIDS, SampleStreams, batches, generate, reverse_process
from .stats import scan_statistics, training_set_comparison

# Default sampler: 32 steps on a quadratic time grid (memaudit.sampling.time_grid), chosen by
# measurement against the paper-style reference (1000 linear ancestral steps, float64 posterior;
# docs/performance.md). On the linear grid the smallest step count whose mean entropy stays inside
# the reference's 95% interval on the nano reference models is 64 (32 is biased up by +0.012 to
# +0.019 nats, at or past the interval's edge). The quadratic grid spends its steps near t = 0,
# where tokens are decided: at 32 steps it gave 0.8793 / 0.8745 nats on the generalizing reference
# model (seeds 0 / 1; reference 0.8813 [0.8701, 0.8910]; linear 64: 0.8716 / 0.8711) and 0.0017
# on the memorizing one (reference 0.0034 [0.0003, 0.0079]), at half the cost.
DEFAULT_STEPS = 32
DEFAULT_GRID = "quadratic"
DEFAULT_SAMPLES = 256
DEFAULT_BATCH_SIZE = 128
# Fixed-point test: the clean sample is placed at t_fp and run through FIXED_POINT_STEPS greedy
# posterior steps plus the greedy α_s = 1 step. With so few (coarse) steps, samples of generalizing
# models are mostly *not* fixed points (≈ 20 %; ≈ 93 % with the reference's 250 steps), while
# memorizing models' samples are (≈ 97 % either way), and nearly flat models keep any input.
FIXED_POINT_T = 0.25
FIXED_POINT_STEPS = 4
# Basin test: each sample is re-noised heavily (BASIN_T = 0.5: about half its tokens redrawn
# uniformly) and restored by the model's ancestral reverse process in BASIN_STEPS steps (linear
# grid, greedy noise removal). A stored sequence lies in a wide basin and comes back whole; a
# typical sequence of a learned language comes back as another valid sequence (issue 12,
# docs/calibration.md). Exact whole-sequence return is the statistic: it does not depend on how
# predictable the language is token by token, only on whether the sample is an attractor.
BASIN_T = 0.5
BASIN_STEPS = 16
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95


class ScanError(UsageError):
    """Bad scan settings (CLI exit code 2)."""


EXECUTION_SETTINGS = ("batch_size", "max_memory")
PER_MODEL_SETTINGS = ("layout", "precision")   # 'auto' resolves from the loaded checkpoint and its device


@dataclass(frozen=True)
class ScanSettings:
    samples: int = DEFAULT_SAMPLES
    steps: int = DEFAULT_STEPS
    grid: str = DEFAULT_GRID
    seed: int = 0
    t_eval: float | None = None        # None: the rule's
    t_profile: tuple[float, ...] = ()
    tau: float = 0.1                   # a scan always uses the rule's; this default serves direct use of the statistics
    batch_size: int | None = None      # None: the largest batch that fits max_memory (memaudit.budget)
    max_memory: int | None = None      # bytes; None: a share of the memory available to the process
    adaptive: bool = True              # stop at the first definite look (memaudit.verdict.sequential)
    min_samples: int | None = None     # the first look; None: the rule's min_samples
    final: str = "greedy"
    posterior_dtype: str = "float64"
    precision: str = "auto"            # the network's: float32 | bfloat16 | float16 | auto (bf16 on CUDA)
    fixed_point_t: float = FIXED_POINT_T
    fixed_point_steps: int = FIXED_POINT_STEPS
    basin_t: float = BASIN_T
    basin_steps: int = BASIN_STEPS
    n_train: int | None = None               # training-set size from the model card, if known (reported only)
    layout: str = "auto"                     # how the training sequences were cut: stream | aligned | auto
                                             # (memaudit checkpoints: stream; others: unknown)
    bootstrap_resamples: int | None = None   # None: the rule's
    confidence: float = CONFIDENCE           # a scan always uses the rule's
    device: str = "cpu"                      # a scan records where the model is

    def resolve(self, rule, device: str) -> "ScanSettings":
        """The concrete settings of a scan under `rule` on `device` (what reports record): every
        None becomes the rule's value, the evaluation times are sorted, duplicates dropped."""
        t_eval = float(rule.t_eval if self.t_eval is None else self.t_eval)
        profile = sorted({float(t) for t in self.t_profile if float(t) != t_eval})
        return replace(self, samples=int(self.samples), steps=int(self.steps), grid=str(self.grid),
                       seed=int(self.seed), t_eval=t_eval, t_profile=tuple(profile), tau=float(rule.tau),
                       batch_size=None if self.batch_size is None else int(self.batch_size),
                       max_memory=None if self.max_memory is None else int(self.max_memory),
                       adaptive=bool(self.adaptive),
                       min_samples=int(rule.min_samples if self.min_samples is None else self.min_samples),
                       fixed_point_t=float(self.fixed_point_t),
                       fixed_point_steps=int(self.fixed_point_steps), basin_t=float(self.basin_t),
                       basin_steps=int(self.basin_steps),
                       n_train=None if self.n_train is None else int(self.n_train),
                       bootstrap_resamples=int(rule.bootstrap_resamples if self.bootstrap_resamples is None
                                               else self.bootstrap_resamples),
                       confidence=float(rule.confidence), device=str(device))

    def validate(self) -> None:
        if self.samples < 1:
            raise ScanError(f"--samples must be ≥ 1 (got {self.samples})")
        if self.steps < 1:
            raise ScanError(f"--steps must be ≥ 1 (got {self.steps})")
        if self.grid not in GRIDS:
            raise ScanError(f"--grid must be one of {', '.join(GRIDS)} (got {self.grid!r})")
        if self.batch_size is not None and self.batch_size < 1:
            raise ScanError(f"--batch-size must be ≥ 1 (got {self.batch_size})")
        if self.max_memory is not None and self.max_memory < 1:
            raise ScanError(f"--max-memory must be positive (got {self.max_memory})")
        if self.min_samples is not None and not 1 <= self.min_samples:
            raise ScanError(f"--min-samples must be ≥ 1 (got {self.min_samples})")
        for t in (self.t_eval, *self.t_profile):
            if not (0.0 < t <= 1.0) or not math.isfinite(t):
                raise ScanError(f"evaluation times must lie in (0, 1] (got {t})")
        if not 0.0 < self.fixed_point_t <= 1.0:
            raise ScanError(f"fixed-point time must lie in (0, 1] (got {self.fixed_point_t})")
        if self.fixed_point_steps < 1:
            raise ScanError("fixed-point steps must be ≥ 1")
        if self.n_train is not None and self.n_train < 1:
            raise ScanError(f"--n-train must be ≥ 1 (got {self.n_train})")
        if not 0.0 < self.basin_t <= 1.0 or self.basin_steps < 1:
            raise ScanError(f"basin time must lie in (0, 1] and basin steps be ≥ 1 (got {self.basin_t}, "
                            f"{self.basin_steps})")
        if self.precision not in ("auto", *PRECISIONS):
            raise ScanError(f"--precision must be auto, {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.layout not in ("auto", "stream", "aligned", "unknown"):
            raise ScanError(f"--layout must be auto, stream or aligned (got {self.layout!r})")
        if self.final not in ("greedy", "ancestral"):
            raise ScanError(f"final must be 'greedy' or 'ancestral' (got {self.final!r})")
        if self.posterior_dtype not in ("float64", "float32"):
            raise ScanError(f"posterior dtype must be float64 or float32 (got {self.posterior_dtype!r})")
        if not 0.5 < self.confidence < 1.0:
            raise ScanError(f"confidence must lie in (0.5, 1) (got {self.confidence})")
        if self.bootstrap_resamples < 10:
            raise ScanError("at least 10 bootstrap resamples are needed")

    def to_dict(self) -> dict:
        """What reports record. The batch size and the memory budget only decide how the work is
        split, never a result (per-sample random streams), so they are left out: the same seed
        gives the same report files on any machine."""
        d = asdict(self)
        d["t_profile"] = list(self.t_profile)
        for execution_only in EXECUTION_SETTINGS:
            d.pop(execution_only)
        return d


@dataclass
class ScanResult:
    """Everything a scan measured. Arrays are numpy; statistics are plain floats (nats)."""

    verdict: str
    reason: str
    explanation: str
    settings: ScanSettings
    rule: Any                              # memaudit.verdict.Rule
    model: dict                            # denoiser.describe(): family, weights, files, hashes …
    tokens: np.ndarray                     # [N, L] int64, the generated samples
    t_values: list[float]                  # evaluation times; t_values[0] is t_eval
    entropy: np.ndarray                    # [T, N, L] float32, nats
    top1_prob: np.ndarray                  # [T, N, L] float32
    texts: list[str | None]                # decoded samples (None without a tokenizer)
    is_duplicate: np.ndarray               # [N] bool: equal to an earlier sample
    duplicate_of: np.ndarray               # [N] int64: id of the first equal sample, −1 if none
    is_fixed_point: np.ndarray             # [N] bool
    fixed_point_distance: np.ndarray       # [N] float32: share of tokens the greedy dynamics changes
    basin_agreement: np.ndarray            # [N] float32: share of tokens restored after re-noising at basin_t
    near_copies_earlier: np.ndarray        # [N] int64: earlier samples within the rule's near-copy distance
    stats: dict                            # the summary statistics (see `summarize`)
    stopping: dict = field(default_factory=dict)  # how many samples were used and why (verdict.sequential)
    domain: dict = field(default_factory=dict)    # the rule's validated domain and whether this model is inside
    timings: dict = field(default_factory=dict)   # seconds; never written to report files
    decode: Any = field(default=None, repr=False)  # ids → text (the model's tokenizer), for report.html
    training: Any = None   # memaudit.extraction.TrainingEvidence with --train: beside the verdict, never deciding it
    responses: Any = None  # prompt-conditioned families with --train: memaudit.sft evidence (a dict), beside the verdict
    stored: Any = None     # memaudit.stored.StoredResult: the stored-subset search, a finding beside the verdict

    @property
    def stored_found(self) -> bool:
        """A stored-subset finding: the data-free search found stored sequences, or (with --train)
        training blocks restore above the model's own samples (memaudit.documents)."""
        if self.stored is not None and self.stored.found:
            return True
        docs = (self.training.stats.get("documents") if self.training is not None else None) or {}
        return bool(docs.get("finding"))

    @property
    def finding(self) -> str:
        """The verdict with the stored-subset finding beside it ('generalizing, with a stored subset of ≈ 2 sequences')."""
        found = getattr(self.stored, "finding", None) if self.stored is not None else None
        text = f"{self.verdict}, with {found}" if found else self.verdict
        docs = (self.training.stats.get("documents") if self.training is not None else None) or {}
        if docs.get("finding"):
            text += (f"; with training data, {docs['n_stored']} of {docs['n_measured']} measured training blocks "
                     f"stored (≈ {docs['stored_share']:.1%} of the training set)")
        return text

    # -- convenience accessors ----------------------------------------------------------------
    def __getattr__(self, name):
        stats = self.__dict__.get("stats")
        if stats is not None and name in stats:
            return stats[name]
        raise AttributeError(name)

    @property
    def n_samples(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def sample_mean_entropy(self) -> np.ndarray:
        return self.entropy[0].mean(axis=1, dtype=np.float64).astype(np.float32)

    @property
    def sample_low_entropy_fraction(self) -> np.ndarray:
        return (self.entropy[0] < self.settings.tau).mean(axis=1, dtype=np.float64).astype(np.float32)

    def provenance(self) -> dict:
        """The `memaudit` metadata blob of every report file (no timestamps, no temp paths)."""
        return {
            **software_versions(),
            "model": self.model,
            "sampler": {"steps": self.settings.steps, "final": self.settings.final,
                        "posterior_dtype": self.settings.posterior_dtype,
                        "start": "uniform noise at t=1",
                        "time_grid": f"{self.settings.grid} from 1 to 1e-5"},
            "seeds": {"seed": self.settings.seed,
                      "sampling": "sample i: derive_seed(seed, 'sample', i)",
                      "corruption": "sample i at evaluation time k: derive_seed(seed, 'eval', k, i)",
                      "basin": "sample i: derive_seed(seed, 'basin', basin_t, i)",
                      "bootstrap": "derive_seed(seed, 'bootstrap')"},
            "settings": self.settings.to_dict(),
            "t_eval": self.settings.t_eval,
            "tau": self.settings.tau,
            "rule": self.rule.describe(),
            "domain": self.domain,
            "stopping": self.stopping,
            "verdict": self.verdict,
            "reason": self.reason,
            "units": "nats",
            **({"training_data": self.training.provenance()} if self.training is not None else {}),
            **({"sft_evidence": self.responses} if self.responses is not None else {}),
        }

    def summary(self, include_timings: bool = False) -> dict:
        """The one JSON document of `memaudit scan --json` (and of summary.json, without timings)."""
        doc = {
            "verdict": self.verdict,
            "reason": self.reason,
            "explanation": self.explanation,
            **self.stats,
            "rule": self.rule.describe(),
            "domain": self.domain,
            "stopping": self.stopping,
            "checkpoint": checkpoint_label(self.model),
            "model": self.model,
            "settings": self.settings.to_dict(),
            "units": "nats",
            "memaudit_version": __version__,
            "schema_version": SCHEMA_VERSION,
        }
        if self.training is not None:
            doc["training_data"] = self.training.summary()
        if self.responses is not None:
            doc["sft_evidence"] = self.responses
        if self.stored is not None:
            doc["stored_subset"] = self.stored.summary()
        if self.stored is not None or self.training is not None:
            doc["finding"] = self.finding
        if include_timings:
            doc["timings"] = self.timings
        return doc

    def to_pandas(self):
        """One row per sample (the samples.parquet table)."""
        from .report import samples_table

        return samples_table(self).to_pandas()

    def tokens_frame(self):
        """One row per sample × position [× t] (the tokens.parquet table)."""
        from .report import tokens_table

        return tokens_table(self).to_pandas()



# --------------------------------------------------------------------------------- measurement
@torch.no_grad()
def evaluate_entropy(denoiser: Denoiser, tokens: torch.Tensor, t: float, seed: int, stream: int = 0,
                     batch_size: int = DEFAULT_BATCH_SIZE, task=None, first: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """H_i (nats) and the top-1 probability of x̂ at time t on one seeded corruption of `tokens`.

    tokens [N, L] int64 (CPU) → (entropy [N, L] float32, top1 [N, L] float32), both on the CPU.
    Sample i's corruption comes from its own stream (seed, 'eval', stream, i), drawn on the CPU, so
    it depends neither on the device nor on the batch size; tokens[0] is sample number `first`.
    """
    entropies, top1 = [], []
    for start, stop in batches(tokens.shape[0], batch_size):
        streams = SampleStreams(seed, ("eval", stream), range(first + start, first + stop))
        alpha = denoiser.schedule.alpha(torch.full((stop - start,), float(t), dtype=torch.float64))
        x = streams.corrupt(tokens[start:stop], alpha, denoiser.vocab_size)
        log_probs = denoiser(x, torch.full((x.shape[0],), float(t)))   # float32 [b, L, V]
        entropies.append(D.entropy(log_probs).float().cpu())
        top1.append(log_probs.max(-1).values.exp().float().cpu())
        del log_probs
        if task is not None:
            task.advance(stop - start)
    return torch.cat(entropies), torch.cat(top1)


@torch.no_grad()
def fixed_point_distance(denoiser: Denoiser, tokens: torch.Tensor, t_start: float = FIXED_POINT_T,
                         steps: int = FIXED_POINT_STEPS, batch_size: int = DEFAULT_BATCH_SIZE,
                         posterior_dtype: torch.dtype = torch.float64, task=None) -> torch.Tensor:
    """How far each clean sequence is from being a fixed point of the greedy reverse dynamics:
    the share of its tokens that the dynamics changes (0 = a fixed point).

    The clean sequence is placed at t_start (no corruption, as in the reference fixed-point
    evaluation) and run through `steps` argmax-of-posterior steps and the argmax of the α_s = 1
    posterior. Deterministic. tokens [N, L] → [N] float32 (CPU).
    """
    out = []
    for start, stop in batches(tokens.shape[0], batch_size):
        x0 = tokens[start:stop].to(denoiser.device)
        x = reverse_process(denoiser, x0, t_start, steps, final="argmax", posterior_dtype=posterior_dtype,
                            on_step=None if task is None else (lambda: task.advance(stop - start)))
        if task is not None:
            task.advance(stop - start)
        out.append((x != x0).float().mean(dim=1).cpu())
    return torch.cat(out)


@torch.no_grad()
def basin_agreement(denoiser: Denoiser, tokens: torch.Tensor, t0: float = BASIN_T, steps: int = BASIN_STEPS,
                    seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE,
                    posterior_dtype: torch.dtype = torch.float64, task=None, first: int = 0) -> torch.Tensor:
    """The share of each sequence's tokens that comes back after re-noising it at t0 and restoring
    it with the model's ancestral reverse process (greedy noise removal); sample i's draws come
    from its own stream (seed, 'basin', t0, i). 1 = the sequence returned whole: it is an
    attractor of the model. tokens [N, L] → [N] float32 (CPU)."""
    out = []
    for start, stop in batches(tokens.shape[0], batch_size):
        x0 = tokens[start:stop]
        streams = SampleStreams(seed, ("basin", repr(float(t0))), range(first + start, first + stop))
        alpha = denoiser.schedule.alpha(torch.full((stop - start,), float(t0), dtype=torch.float64))
        x_t = streams.corrupt(x0, alpha, denoiser.vocab_size)
        x = reverse_process(denoiser, x_t, float(t0), steps, streams=streams, final="greedy",
                            posterior_dtype=posterior_dtype,
                            on_step=None if task is None else (lambda: task.advance(stop - start))).cpu()
        out.append((x == x0).float().mean(dim=1))
    return torch.cat(out)


def find_duplicates(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is_duplicate [N] bool, duplicate_of [N] int64): a sample is a duplicate when it equals an
    earlier sample; duplicate_of names the first one (−1 otherwise)."""
    first: dict[bytes, int] = {}
    dup_of = np.full(tokens.shape[0], -1, dtype=np.int64)
    for i, row in enumerate(np.ascontiguousarray(tokens, dtype=np.int64)):
        key = row.tobytes()
        if key in first:
            dup_of[i] = first[key]
        else:
            first[key] = i
    return dup_of >= 0, dup_of


def near_copies(tokens: np.ndarray, max_fraction: float, block: int = 64) -> np.ndarray:
    """[N] int64: for each sample, how many earlier samples differ from it in at most
    max_fraction of its positions (identical ones included). Summed over the first k samples it is
    the number of near-identical pairs among them, for any k (the adaptive scan's looks)."""
    t = torch.as_tensor(np.ascontiguousarray(tokens, dtype=np.int64))
    n, length = t.shape
    limit = math.floor(max_fraction * length)
    counts = np.zeros(n, dtype=np.int64)
    index = torch.arange(n)
    for start in range(0, n, block):
        rows = t[start:start + block]                                     # [b, L]
        differing = (rows[:, None, :] != t[None, :, :]).sum(-1)          # [b, N]
        earlier = index[None, :] < index[start:start + rows.shape[0], None]
        counts[start:start + rows.shape[0]] = ((differing <= limit) & earlier).sum(1).numpy()
    return counts


def resolve_layout(requested: str, denoiser: Denoiser) -> str:
    """How the model's training sequences were cut, for the position test of the rule: as the user
    says (`--layout stream|aligned`), else what the loader read from the checkpoint (memaudit's own:
    'stream', its trainer cuts blocks from one token stream; a Duo/UDLM Lightning config:
    data.wrap), else 'unknown'."""
    if requested != "auto":
        return requested
    return str(denoiser.provenance.get("training_layout") or "unknown")


def summarize(entropy: np.ndarray, top1: np.ndarray, duplicate_of: np.ndarray, fixed_point_dist: np.ndarray,
              basin: np.ndarray, vocab_size: int, settings: ScanSettings, t_values: list[float],
              near_earlier: np.ndarray | None = None, near_fraction: float | None = None,
              tokens: np.ndarray | None = None) -> dict:
    """Summary statistics of the primary evaluation (entropy[0]): the rule's statistics
    (`memaudit.stats.scan_statistics`, with bootstrap CIs) from the per-sample means, plus
    descriptive ones (sequence length, quantiles of the per-sample means, top-1 probability, the
    profile over t_values)."""
    h = entropy[0].astype(np.float64)                     # [N, L]
    sample_mean = h.mean(axis=1)                          # per-sample mean entropy
    sample_low = (h < settings.tau).mean(axis=1)          # per-sample share of tokens below τ
    stats = scan_statistics(sample_mean, duplicate_of, fixed_point_dist == 0, fixed_point_dist,
                            vocab_size=vocab_size, tau=settings.tau, t_eval=settings.t_eval, seed=settings.seed,
                            resamples=settings.bootstrap_resamples, confidence=settings.confidence,
                            sample_low_entropy_fraction=sample_low, basin_agreement=basin,
                            seq_len=int(h.shape[1]), near_earlier=near_earlier, near_fraction=near_fraction,
                            tokens=tokens, layout=settings.layout)
    quantiles = np.quantile(sample_mean, [0.05, 0.25, 0.5, 0.75, 0.95])
    stats["seq_len"] = int(h.shape[1])
    stats["sample_entropy_quantiles"] = {k: float(v) for k, v in zip(("p05", "p25", "p50", "p75", "p95"), quantiles)}
    stats["mean_top1_prob"] = float(top1[0].astype(np.float64).mean())
    if len(t_values) > 1:
        stats["profile"] = [{"t": float(t), "mean_entropy": float(entropy[k].astype(np.float64).mean()),
                             "low_entropy_fraction": float((entropy[k] < settings.tau).mean()),
                             "mean_top1_prob": float(top1[k].astype(np.float64).mean())}
                            for k, t in enumerate(t_values)]
    return stats


# ---------------------------------------------------------------------------------------- scan
def scan(checkpoint_or_denoiser, samples: int = DEFAULT_SAMPLES, steps: int | None = None, seed: int = 0,
         t_eval: float | None = None, batch_size: int | None = None, weights: str | None = None,
         device: str | None = None, rule=None, final: str = "greedy", show_progress: bool | None = None,
         t_profile: tuple[float, ...] | list[float] = (), posterior_dtype: str = "float64",
         fixed_point_t: float = FIXED_POINT_T, fixed_point_steps: int = FIXED_POINT_STEPS,
         bootstrap_resamples: int | None = None, grid: str | None = None, adaptive: bool = True,
         settings: ScanSettings | None = None, tokenizer: str | None = None, trust_remote_code: bool = False,
         time_input: str | None = None, schedule: str | None = None, train_data=None,
         precision: str = "auto", prompt: str | None = None, prompts_file: str | None = None,
         test_data=None, stored="auto") -> ScanResult:
    """Probe a checkpoint (path, hub id or Denoiser) without training data and classify its regime.

    settings: a ScanSettings with everything the scan does (the keyword arguments are a shorthand
    for the same fields and are ignored when settings is given). steps: reverse steps of the
    sampler (default DEFAULT_STEPS, chosen by measurement); grid: their time grid, 'linear' or
    'quadratic' (default DEFAULT_GRID, see memaudit.sampling.time_grid). t_eval: time of the
    entropy evaluation (default: the rule's). t_profile: extra times reported alongside (the
    verdict always uses t_eval). rule: a Rule, a path to a rule file, or None for the default rule
    (memaudit/calibration/rule.json; provisional.json where it is absent). tokenizer,
    trust_remote_code, time_input, schedule: how a path or hub id is loaded (memaudit.load).
    train_data: optional training data ('auto', a file or token ids, as `recover`'s train): the
    samples are matched against it and the entropy gap measured (memaudit.extraction), reported
    beside the verdict in `result.training`; the verdict never reads it.
    prompt / prompts_file: the prompts of a prompt-conditioned family (memaudit.prompted); for one,
    train_data / test_data are prompt→response records (.jsonl) and the evidence is whether the
    model's own sampler reproduces the training responses (memaudit.sft, `result.responses`).
    A family the rule has not validated gets `inconclusive (outside_domain)` (prompted.family_gate).
    stored: the data-free stored-subset search (memaudit.stored) beside the verdict: 'auto' (the
    default search, memaudit.stored.DEFAULT_SCAN), a StoredSettings, or None / 'off' to skip it.
    """
    from .budget import plan_batch
    from .verdict import load_rule, sequential

    started = time.perf_counter()
    rule = load_rule(rule)
    if settings is None:
        settings = ScanSettings(samples=samples, steps=DEFAULT_STEPS if steps is None else steps,
                                grid=DEFAULT_GRID if grid is None else grid, seed=seed, t_eval=t_eval,
                                t_profile=tuple(t_profile), batch_size=batch_size, final=final,
                                posterior_dtype=posterior_dtype, fixed_point_t=fixed_point_t,
                                fixed_point_steps=fixed_point_steps, bootstrap_resamples=bootstrap_resamples,
                                adaptive=adaptive, precision=precision)
    denoiser = as_denoiser(checkpoint_or_denoiser, weights, device, tokenizer=tokenizer,
                           trust_remote_code=trust_remote_code, time_input=time_input, schedule=schedule,
                           max_memory=settings.max_memory)
    from .prompted import family_gate, resolve_prompts

    denoiser = resolve_prompts(denoiser, prompt, prompts_file)
    if getattr(denoiser, "own_sampler", False):   # the family's sampler runs its own number of steps
        settings = replace(settings, steps=denoiser.sampler_steps(settings.steps))
    settings = settings.resolve(rule, denoiser.device)
    settings.validate()
    denoiser = at_precision(denoiser, settings.precision)
    threads.apply(threads.parameters_of(denoiser))   # the CLI's choice (memaudit.threads)
    settings = replace(settings, layout=resolve_layout(settings.layout, denoiser), precision=denoiser.precision)
    t_values = [settings.t_eval, *settings.t_profile]
    p_dtype = torch.float64 if settings.posterior_dtype == "float64" else torch.float32
    batch = plan_batch(denoiser, settings.batch_size, settings.max_memory, work=settings.samples)
    model = model_provenance(denoiser)
    planned = sequential.looks(settings.min_samples, settings.samples) if settings.adaptive else [settings.samples]
    near_fraction = float(rule.evidence["near_copy_fraction"])
    training_docs = sft_records = None
    if getattr(denoiser, "prompt_conditioned", False) and (train_data is not None or test_data is not None):
        from .sft import read_records

        sft_records = read_records(train_data, test_data)   # read (and reject bad data) before any sampling
        train_data = None
    elif test_data is not None:
        raise ScanError("--test applies to prompt-conditioned families (prompt → response records)")
    if train_data is not None:   # read (and reject bad data) before any sampling
        from .extraction import read_training_documents

        training_docs = read_training_documents(train_data, denoiser, settings.seed)

    timings = {"batch_size": batch.batch_size, "batch": batch.describe(), "sampling_s": 0.0, "entropy_s": 0.0,
               "fixed_point_s": 0.0, "basin_s": 0.0, "looks": []}
    per_sample = settings.steps + len(t_values) + settings.fixed_point_steps + 1 + settings.basin_steps
    rounds: list[dict] = []
    with progress_bar("scan", total=settings.samples * per_sample, enabled=show_progress) as task:
        for look in planned:
            first = sum(len(r["tokens"]) for r in rounds)
            rounds.append(probe_round(denoiser, settings, t_values, first, look - first, batch.batch_size,
                                      p_dtype, task, timings))
            measured = join_rounds(rounds, near_fraction)
            if look == planned[-1]:
                break
            _, decision = decide_on(measured, denoiser.vocab_size, settings, t_values, rule,
                                    model.get("n_parameters"), sequential.EARLY_CONFIDENCE,
                                    schedule_eps=schedule_eps_of(model))
            timings["looks"].append({"samples": look, "verdict": decision.verdict})
            if sequential.stops(decision):
                break

    tokens_np, entropy, top1 = measured["tokens"], measured["entropy"], measured["top1"]
    fp_dist, basin, dup_of = measured["fp_dist"], measured["basin"], measured["duplicate_of"]
    near_earlier = measured["near_earlier"]
    n_used = len(tokens_np)
    stats, evidence, decision, stop = judge(measured, denoiser.vocab_size, settings, t_values, rule, planned,
                                            model.get("n_parameters"), schedule_eps=schedule_eps_of(model))
    training = None
    if training_docs is not None:
        from .extraction import training_evidence

        t0 = time.perf_counter()
        training = training_evidence(
            tokens_np, *training_docs, t_eval=settings.t_eval,
            sample_entropy={float(t): entropy[k] for k, t in enumerate(t_values)},
            entropy_fn=lambda x, t, stream: evaluate_entropy(denoiser, torch.as_tensor(x), t, settings.seed,
                                                             stream=stream, batch_size=batch.batch_size)[0].numpy(),
            seed=settings.seed, resamples=settings.bootstrap_resamples, confidence=settings.confidence)
        timings["training_evidence_s"] = time.perf_counter() - t0
        from .documents import training_block_exposure

        t0 = time.perf_counter()
        training.stats["documents"] = training_block_exposure(
            denoiser, training_docs[0], tokens_np, settings.seed, batch.batch_size,
            denoiser.decode if denoiser.tokenizer is not None else None)
        timings["documents_s"] = time.perf_counter() - t0
    stored_result = None
    if stored is not None and stored != "off" and not getattr(denoiser, "own_sampler", False):
        # (a family with its own sampler has no greedy reverse dynamics for the search to run)
        from .stored import stored_settings_for, search_stored

        t0 = time.perf_counter()
        stored_result = search_stored(denoiser, stored_settings_for(stored, settings.seed, n_used), samples=tokens_np,
                                      batch_size=batch.batch_size)
        timings["stored_s"] = time.perf_counter() - t0
    domain = rule.domain_check(evidence)
    decision, domain = family_gate(rule, denoiser, decision, domain)
    responses = None
    if sft_records is not None:
        from .sft import response_evidence

        t0 = time.perf_counter()
        responses = response_evidence(denoiser, sft_records, seed=settings.seed, batch_size=batch.batch_size)
        timings["sft_evidence_s"] = time.perf_counter() - t0
    stop = sequential.stopping(settings.adaptive, planned, n_used, decision.verdict)
    texts = [denoiser.decode(row) for row in tokens_np] if denoiser.tokenizer is not None else [None] * len(tokens_np)
    timings["total_s"] = time.perf_counter() - started
    return ScanResult(verdict=decision.verdict, reason=decision.reason, explanation=decision.explanation,
                      settings=settings, rule=rule, model=model, tokens=tokens_np, t_values=t_values,
                      entropy=entropy, top1_prob=top1, texts=texts, is_duplicate=dup_of >= 0, duplicate_of=dup_of,
                      is_fixed_point=fp_dist == 0, fixed_point_distance=fp_dist, basin_agreement=basin,
                      near_copies_earlier=near_earlier, stats=stats, stopping=stop.describe(),
                      domain=domain, timings=timings,
                      decode=denoiser.decode if denoiser.tokenizer is not None else None, training=training,
                      responses=responses, stored=stored_result)


def decide_on(measured: dict, vocab_size: int, settings: ScanSettings, t_values: list[float], rule,
              n_parameters: int | None, confidence: float | None = None,
              schedule_eps: float | None = None) -> tuple[dict, Any]:
    """(statistics, decision) of the rule on measured per-sample values (`join_rounds`' keys:
    tokens, entropy, top1, fp_dist, basin, duplicate_of, near_earlier), with every interval at
    `confidence` (None: the settings'). The one place a scan and `memaudit verify` judge."""
    from .verdict import Evidence

    at = settings if confidence is None else replace(settings, confidence=confidence)
    near_fraction = float(rule.evidence["near_copy_fraction"])
    stats = summarize(measured["entropy"], measured["top1"], measured["duplicate_of"], measured["fp_dist"],
                      measured["basin"], vocab_size, at, t_values, measured["near_earlier"], near_fraction,
                      measured["tokens"])
    return stats, rule.decide(Evidence.from_stats(stats, steps=settings.steps, n_parameters=n_parameters,
                                                  confidence=at.confidence, schedule_eps=schedule_eps))


def judge(measured: dict, vocab_size: int, settings: ScanSettings, t_values: list[float], rule,
          planned: list[int], n_parameters: int | None,
          schedule_eps: float | None = None) -> tuple[dict, Any, Any, Any]:
    """What a scan reports from all the samples it drew (`measured`, as `decide_on`) after the looks
    `planned`: (statistics at the rule's confidence, their Evidence, the decision — at
    EARLY_CONFIDENCE when the scan stopped before the last look — and the Stopping record)."""
    from .verdict import Evidence, sequential

    n_used = len(measured["tokens"])
    stats, decision = decide_on(measured, vocab_size, settings, t_values, rule, n_parameters,
                                schedule_eps=schedule_eps)
    if settings.n_train is not None:
        stats["n_train"] = settings.n_train
        stats["n_train_comparison"] = training_set_comparison(stats, settings.n_train,
                                                              int(rule.evidence["min_colliding_pairs"]))
    evidence = Evidence.from_stats(stats, steps=settings.steps, n_parameters=n_parameters,
                                   schedule_eps=schedule_eps)
    if n_used < planned[-1]:
        _, decision = decide_on(measured, vocab_size, settings, t_values, rule, n_parameters,
                                sequential.EARLY_CONFIDENCE, schedule_eps=schedule_eps)
    return stats, evidence, decision, sequential.stopping(settings.adaptive, planned, n_used, decision.verdict)


def schedule_eps_of(model: dict) -> float | None:
    """ε of the checkpoint's log-linear or cosine schedule (the rule's domain checks it), else None."""
    schedule = model.get("schedule") if isinstance(model.get("schedule"), dict) else {}
    eps = schedule.get("eps") if schedule.get("name") in ("loglinear", "cosine") else None
    return float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None


def probe_round(denoiser: Denoiser, settings: ScanSettings, t_values: list[float], first: int, n: int,
                batch_size: int, p_dtype: torch.dtype, task, timings: dict) -> dict:
    """Samples first … first + n − 1 and everything the scan measures on them (CPU tensors). A
    prompt-conditioned denoiser with several prompts measures each run of samples under its own
    prompt (memaudit.prompted.prompt_runs)."""
    from .prompted import prompt_runs

    runs = prompt_runs(denoiser, first, n, settings.min_samples)
    if len(runs) > 1:
        parts = [probe_round(run, settings, t_values, start, count, batch_size, p_dtype, task, timings)
                 for run, start, count in runs]
        return {key: torch.cat([part[key] for part in parts], dim=1 if key in ("entropy", "top1") else 0)
                for key in parts[0]}
    denoiser = runs[0][0]
    t0 = time.perf_counter()
    tokens = generate(denoiser, n, steps=settings.steps, grid=settings.grid, seed=settings.seed,
                      batch_size=batch_size, final=settings.final, posterior_dtype=p_dtype, first=first, task=task)
    timings["sampling_s"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluated = [evaluate_entropy(denoiser, tokens, t, settings.seed, stream=k, batch_size=batch_size, task=task,
                                  first=first)
                 for k, t in enumerate(t_values)]
    timings["entropy_s"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    fp_dist = fixed_point_distance(denoiser, tokens, settings.fixed_point_t, settings.fixed_point_steps,
                                   batch_size=batch_size, posterior_dtype=p_dtype, task=task)
    timings["fixed_point_s"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    basin = basin_agreement(denoiser, tokens, settings.basin_t, settings.basin_steps, seed=settings.seed,
                            batch_size=batch_size, posterior_dtype=p_dtype, task=task, first=first)
    timings["basin_s"] += time.perf_counter() - t0
    return {"tokens": tokens, "entropy": torch.stack([e for e, _ in evaluated]),
            "top1": torch.stack([p for _, p in evaluated]), "fp_dist": fp_dist, "basin": basin}


def join_rounds(rounds: list[dict], near_fraction: float) -> dict:
    """All rounds so far as numpy arrays (samples in order), with the exact and near copies among them."""
    entropy = torch.cat([r["entropy"] for r in rounds], dim=1).numpy()
    if not np.isfinite(entropy).all():
        raise FloatingPointError("the model produced non-finite probabilities on its own samples")
    tokens = torch.cat([r["tokens"] for r in rounds]).numpy()
    return {"tokens": tokens, "entropy": entropy, "top1": torch.cat([r["top1"] for r in rounds], dim=1).numpy(),
            "fp_dist": torch.cat([r["fp_dist"] for r in rounds]).numpy(),
            "basin": torch.cat([r["basin"] for r in rounds]).numpy(),
            "duplicate_of": find_duplicates(tokens)[1], "near_earlier": near_copies(tokens, near_fraction)}
