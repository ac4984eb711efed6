"""Token recovery: the ground truth of the memorizing / generalizing regime when data is available.

Protocol (research/paper.md §4.1), for one split (train or test) and one corruption level t0:

    1. x_t = corrupt(x_0, α_{t0}): every token is kept with probability α_{t0} and otherwise
       redrawn uniformly from all V tokens (one seeded draw, on the CPU).
    2. Run the model's reverse process from t0 down to t = 1e-5: round(steps_per_unit · t0)
       ancestral steps (the reference uses 1000 · t0; see DEFAULT_STEPS_PER_UNIT), then the
       ancestral noise-removal step (a draw from the α_s = 1 posterior), as in the reference.
    3. Per sequence, with corrupted = (x_t ≠ x_0) (a redraw that returned the original token is
       *not* corrupted) and correct = (x_final = x_0):

           recovery_rate = #(corrupted ∧ correct) / #corrupted        NaN when nothing corrupted
           unstable_rate = #(¬corrupted ∧ ¬correct) / #¬corrupted     NaN when all corrupted
           exact_match   = every position correct

       and the mean final-state entropy H(x̂ | x_final) at t = 1e-5 (nats) of the recovered,
       stable (untouched and still correct), unstable and failed tokens (NaN when a category is
       empty).

Summaries per split × t0: NaN-skipping means with seeded percentile-bootstrap confidence
intervals over sequences; the train − test gap of the recovery rate with a bootstrap CI that
resamples both splits independently (memaudit.stats).

Verdict: the recovery rule (memaudit.verdict.recovery; its thresholds are data,
memaudit/verdict/recovery_rule.json, and each is a setting here): memorizing when training
examples are recovered far better than held-out ones, generalizing when held-out text is as
stable as training text, otherwise inconclusive (undertrained, transition, CI too wide). It is
the ground truth used to calibrate the data-free scan (docs/calibration.md).

Everything is a pure function of (checkpoint, data, settings, seed): byte-identical reports.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .errors import UsageError
from . import __version__
from . import diffusion as D
from . import threads
from .adapters import as_denoiser
from .denoiser import PRECISIONS, Denoiser, at_precision
from .io import finite_json, json_text
from .labels import checkpoint_label
from .provenance import SCHEMA_VERSION, model_provenance, software_versions
from .progress import progress_bar
from .sampling import SampleStreams, batches, infill, reverse_process
from .stats import bootstrap_gap_ci, bootstrap_mean_ci, derive_seed, difference_interval, nan_mean, proportion
from .verdict.recovery import RECOVERY_RULE, RecoveryRule

DEFAULT_T0 = (0.05, 0.1, 0.25, 0.5)
DEFAULT_N = 256
# Reverse steps per unit of time: t0 = 0.25 runs 25 steps. The reference runs 1000 per unit;
# on the reference models recovery rates at 100 per unit lie within the bootstrap CI of the
# 1000-per-unit rates (docs/transition.md, "Steps of the reverse process").
DEFAULT_STEPS_PER_UNIT = 100
DEFAULT_BATCH_SIZE = 256
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95

SPLITS = ("train", "test")
# Conditioning patterns (evidence beside the verdict, which always comes from uniform corruption):
# uniform = corruption at t0 (the protocol above); prefix:F / suffix:F keep the first / last
# fraction F of the example clean and regenerate the rest from noise at t = 1 with the kept
# positions clamped; span:F regenerates one random contiguous span of fraction F, the rest clamped.
# infill:F keeps both ends and regenerates the middle round(F·L) positions (edge-conditioned infill).
PATTERN_KINDS = ("uniform", "prefix", "suffix", "span", "infill")
CATEGORIES = ("recovered", "stable", "unstable", "failed")


class RecoveryError(UsageError):
    """Bad recovery settings or data (CLI exit code 2)."""


def parse_pattern(spec: str) -> tuple[str, float | None]:
    """'uniform' → ('uniform', None); 'prefix:0.5' → ('prefix', 0.5); else RecoveryError."""
    text = str(spec).strip()
    kind, _, value = text.partition(":")
    if kind == "uniform" and not value:
        return "uniform", None
    if kind not in PATTERN_KINDS[1:] or not value:
        raise RecoveryError(f"--pattern must be uniform, prefix:F, suffix:F, span:F or infill:F with 0 < F < 1 "
                            f"(got {text!r})")
    try:
        fraction = float(value)
    except ValueError:
        raise RecoveryError(f"--pattern {text!r}: {value!r} is not a number") from None
    if not (0.0 < fraction < 1.0):
        raise RecoveryError(f"--pattern {text!r}: the fraction must lie strictly between 0 and 1")
    return kind, fraction


def pattern_keep_mask(kind: str, fraction: float, n: int, length: int, seed: int) -> np.ndarray:
    """Which positions a pattern keeps clean (True) for n examples of length L. prefix / suffix: the
    first / last round(F·L) positions; span: all but one contiguous span of round(F·L) positions at
    a seeded uniform start per example. At least one position is kept and one regenerated."""
    if length < 2:
        raise RecoveryError("conditioning patterns need sequences of at least 2 tokens")
    size = min(length - 1, max(1, int(round(fraction * length))))
    pos = np.arange(length)
    if kind == "prefix":
        return np.broadcast_to(pos < size, (n, length)).copy()
    if kind == "suffix":
        return np.broadcast_to(pos >= length - size, (n, length)).copy()
    if kind == "infill":
        start = (length - size) // 2
        return np.broadcast_to(~((pos >= start) & (pos < start + size)), (n, length)).copy()
    if kind == "span":
        start = np.random.default_rng(seed).integers(0, length - size + 1, size=n)
        return ~((pos >= start[:, None]) & (pos < start[:, None] + size))
    raise RecoveryError(f"unknown pattern {kind!r}")


def steps_for(t0: float, steps_per_unit: int) -> int:
    """Reverse steps from t0: proportional to t0, at least one."""
    return max(1, int(round(float(t0) * steps_per_unit)))


# ----------------------------------------------------------------------------- per-sequence math
def sequence_metrics(x0, x_t, x_final, entropy=None) -> dict[str, np.ndarray]:
    """Recovery metrics of each sequence. x0, x_t, x_final: [N, L] integer arrays (or tensors);
    entropy: optional [N, L] final-state entropies (nats). → dict of [N] arrays."""
    x0, x_t, x_final = (np.asarray(a.cpu() if isinstance(a, torch.Tensor) else a) for a in (x0, x_t, x_final))
    if not (x0.shape == x_t.shape == x_final.shape) or x0.ndim != 2:
        raise RecoveryError(f"x0, x_t and x_final must share one [N, L] shape, got {x0.shape}, {x_t.shape}, "
                            f"{x_final.shape}")
    corrupted = x_t != x0
    correct = x_final == x0
    masks = {"recovered": corrupted & correct, "failed": corrupted & ~correct,
             "stable": ~corrupted & correct, "unstable": ~corrupted & ~correct}
    n_corrupted = corrupted.sum(1)
    n_untouched = x0.shape[1] - n_corrupted
    n_recovered = masks["recovered"].sum(1)
    n_unstable = masks["unstable"].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "n_corrupted": n_corrupted.astype(np.int32),
            "n_recovered": n_recovered.astype(np.int32),
            "n_untouched": n_untouched.astype(np.int32),
            "n_unstable": n_unstable.astype(np.int32),
            "recovery_rate": np.where(n_corrupted > 0, n_recovered / np.maximum(n_corrupted, 1), np.nan),
            "unstable_rate": np.where(n_untouched > 0, n_unstable / np.maximum(n_untouched, 1), np.nan),
            "exact_match": correct.all(1),
        }
        if entropy is not None:
            h = np.asarray(entropy.cpu() if isinstance(entropy, torch.Tensor) else entropy, dtype=np.float64)
            out["entropy_mean"] = h.mean(1)
            for name, m in masks.items():
                count = m.sum(1)
                out[f"entropy_{name}"] = np.where(count > 0, (h * m).sum(1) / np.maximum(count, 1), np.nan)
                out[f"_entropy_sum_{name}"] = (h * m).sum(1)
                out[f"_count_{name}"] = count
    return out


# ------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class RecoverySettings:
    t0: tuple[float, ...] = DEFAULT_T0
    n: int = DEFAULT_N
    steps_per_unit: int = DEFAULT_STEPS_PER_UNIT
    seed: int = 0
    batch_size: int | None = None      # None: the largest batch that fits the memory budget (memaudit.budget)
    final: str = "ancestral"
    posterior_dtype: str = "float64"
    precision: str = "auto"            # the network's (memaudit.denoiser.resolve_precision)
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES
    confidence: float = CONFIDENCE
    # The verdict's thresholds (memaudit.verdict.recovery); defaults: recovery_rule.json. The
    # verdict only reads t0 levels at which an average sequence has at least min_corrupted_tokens
    # corrupted tokens: below it the per-sequence rate is 0/1, 1/2 … and its mean too noisy to
    # compare (t0 = 0.05 on 32-token sequences corrupts 1.5 tokens on average).
    gap_memorizing: float = RECOVERY_RULE.gap_memorizing
    equivalence_margin: float = RECOVERY_RULE.equivalence_margin
    recovery_floor: float = RECOVERY_RULE.recovery_floor
    min_corrupted_tokens: float = RECOVERY_RULE.min_corrupted_tokens
    device: str = "cpu"
    patterns: tuple[str, ...] = ()   # conditioning patterns beside the verdict ('prefix:0.5', …; see PATTERN_KINDS)
    documents: bool = True           # per-document evidence: the most exposed training blocks (memaudit.documents)

    @property
    def rule(self) -> RecoveryRule:
        """The recovery rule with these settings' thresholds."""
        return replace(RECOVERY_RULE, gap_memorizing=self.gap_memorizing, equivalence_margin=self.equivalence_margin,
                       recovery_floor=self.recovery_floor, min_corrupted_tokens=self.min_corrupted_tokens)

    def validate(self) -> None:
        if not self.t0:
            raise RecoveryError("give at least one corruption level --t0")
        for t in self.t0:
            if not (0.0 < t <= 1.0) or not math.isfinite(t):
                raise RecoveryError(f"--t0 values must lie in (0, 1] (got {t})")
        if len(set(self.t0)) != len(self.t0):
            raise RecoveryError("--t0 values must be distinct")
        if self.n < 1:
            raise RecoveryError(f"--n must be ≥ 1 (got {self.n})")
        if self.steps_per_unit < 1:
            raise RecoveryError(f"--steps-per-unit must be ≥ 1 (got {self.steps_per_unit})")
        if self.batch_size is not None and self.batch_size < 1:
            raise RecoveryError(f"--batch-size must be ≥ 1 (got {self.batch_size})")
        if self.final not in ("ancestral", "greedy"):
            raise RecoveryError(f"final must be 'ancestral' or 'greedy' (got {self.final!r})")
        if self.posterior_dtype not in ("float64", "float32"):
            raise RecoveryError(f"posterior dtype must be float64 or float32 (got {self.posterior_dtype!r})")
        if self.precision not in ("auto", *PRECISIONS):
            raise RecoveryError(f"--precision must be auto, {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.bootstrap_resamples < 10:
            raise RecoveryError("at least 10 bootstrap resamples are needed")
        if not 0.5 < self.confidence < 1.0:
            raise RecoveryError(f"confidence must lie in (0.5, 1) (got {self.confidence})")
        for spec in self.patterns:
            parse_pattern(spec)

    def to_dict(self) -> dict:
        """What reports record; the batch size is left out: each example has its own random stream,
        so it never changes a result."""
        d = asdict(self)
        d.pop("batch_size")
        d["t0"] = list(self.t0)
        d["patterns"] = list(self.patterns)
        d["steps"] = {repr(float(t)): steps_for(t, self.steps_per_unit) for t in self.t0}
        return d


# ---------------------------------------------------------------------------------------- result
@dataclass
class RecoveryResult:
    """What a recovery run measured. `rows` holds one entry per split × t0 × sequence."""

    verdict: str
    reason: str
    explanation: str
    settings: RecoverySettings
    model: dict
    data: dict                               # per split: how the examples were chosen
    rows: dict[str, np.ndarray]              # columns of the per-sequence table
    summaries: list[dict]                    # one per split × t0
    gaps: list[dict]                         # one per t0: train − test recovery
    timings: dict = field(default_factory=dict)   # seconds; never written to report files
    patterns: list[dict] = field(default_factory=list)       # one per pattern × split: exact completion
    pattern_gaps: list[dict] = field(default_factory=list)   # one per pattern: train − test exact completion
    documents: dict | None = None   # per-document evidence (memaudit.documents): the most exposed training blocks

    def summary_for(self, split: str, t0: float) -> dict:
        for s in self.summaries:
            if s["split"] == split and math.isclose(s["t0"], t0):
                return s
        raise KeyError((split, t0))

    def recovery(self, split: str, t0: float) -> float:
        return self.summary_for(split, t0)["recovery_rate"]

    def provenance(self) -> dict:
        return {
            **software_versions(),
            "model": self.model,
            "data": self.data,
            "settings": self.settings.to_dict(),
            "protocol": {"corruption": "uniform redraw from all V tokens, kept with probability alpha_t0",
                         "reverse": "round(steps_per_unit*t0) ancestral steps on a linear grid t0 -> 1e-5, "
                                    f"then a {self.settings.final} noise-removal step",
                         "entropy": "H of x0-prediction on the final state at t=1e-5",
                         "verdict_rule": self.settings.rule.thresholds(),
                         "patterns": "prefix:F / suffix:F keep the first / last round(F*L) tokens, span:F regenerates "
                                     "one seeded random contiguous span of round(F*L) tokens; the rest start from "
                                     "uniform noise at t=1, round(steps_per_unit) ancestral steps with the kept "
                                     "positions clamped, then the noise-removal step; evidence beside the verdict"},
            "seeds": {"seed": self.settings.seed,
                      "corruption_and_reverse": "example i: derive_seed(seed, 'recover', split, t0, i), on the CPU",
                      "bootstrap": "derive_seed(seed, 'bootstrap', split, t0) / ('gap', t0)",
                      "patterns": "derive_seed(seed, 'pattern', pattern, split) for span starts; example i's "
                                  "sampler: derive_seed(seed, 'pattern-reverse', pattern, split, i)"},
            "verdict": self.verdict,
            "reason": self.reason,
            "units": {"entropy": "nats", "rates": "fraction of tokens"},
        }

    def summary(self, include_timings: bool = False) -> dict:
        """The one JSON document of `memaudit recover --json` (non-finite numbers become null)."""
        doc = {"verdict": self.verdict, "reason": self.reason, "explanation": self.explanation,
               "summaries": self.summaries, "gaps": self.gaps, "data": self.data,
               "checkpoint": checkpoint_label(self.model),
               "model": self.model, "settings": self.settings.to_dict(), "memaudit_version": __version__,
               "schema_version": SCHEMA_VERSION}
        if self.patterns:
            doc["patterns"] = self.patterns
            doc["pattern_gaps"] = self.pattern_gaps
        if self.documents is not None:
            doc["documents"] = self.documents
        if include_timings:
            doc["timings"] = self.timings
        return finite_json(doc)

    def to_pandas(self):
        """One row per split × t0 × sequence (the recovery.parquet table)."""
        return self.table().to_pandas()

    def table(self):
        import pyarrow as pa

        from .report import METADATA_KEY

        r = self.rows
        n = len(r["split"])
        length = r["x0"].shape[1] if n else 0

        def lists(a):
            a = np.ascontiguousarray(a, dtype=np.int32)
            offsets = np.arange(0, a.size + 1, max(length, 1), dtype=np.int32)[: n + 1]
            return pa.ListArray.from_arrays(pa.array(offsets), pa.array(a.reshape(-1)))

        f32 = lambda k: pa.array(np.asarray(r[k], dtype=np.float32))  # noqa: E731
        i32 = lambda k: pa.array(np.asarray(r[k], dtype=np.int32))  # noqa: E731
        columns = {
            "split": pa.array(list(r["split"]), type=pa.string()),
            "t0": pa.array(np.asarray(r["t0"], dtype=np.float64)),
            "example_id": i32("example_id"),
            "steps": i32("steps"),
            "n_corrupted": i32("n_corrupted"), "n_recovered": i32("n_recovered"),
            "n_untouched": i32("n_untouched"), "n_unstable": i32("n_unstable"),
            "recovery_rate": f32("recovery_rate"), "unstable_rate": f32("unstable_rate"),
            "exact_match": pa.array(np.asarray(r["exact_match"], dtype=bool)),
            "entropy_mean": f32("entropy_mean"),
            **{f"entropy_{c}": f32(f"entropy_{c}") for c in CATEGORIES},
            "original_ids": lists(r["x0"]), "corrupted_ids": lists(r["x_t"]), "restored_ids": lists(r["x_final"]),
        }
        if r.get("original_text") is not None:
            for k in ("original_text", "corrupted_text", "restored_text"):
                columns[k] = pa.array(list(r[k]), type=pa.string())
        blob = json_text(self.provenance(), compact=True, ensure_ascii=True).encode()
        schema = pa.schema([pa.field(k, v.type) for k, v in columns.items()], metadata={METADATA_KEY: blob})
        return pa.Table.from_arrays(list(columns.values()), schema=schema)



# ------------------------------------------------------------------------------------------ data
def resolve_examples(spec, denoiser: Denoiser, split: str, n: int, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """The examples of one split. spec: 'auto' (native checkpoints: the model's own training subset
    for train, the corpus's disjoint held-out blocks for test), a .txt/.jsonl/.parquet file
    (tokenized with the checkpoint's tokenizer, cut into blocks of the model's length), a .npy
    file of token ids [N, L], or a tensor/array of token ids. → (tokens [≤n, L] int64, description)."""
    if isinstance(spec, (torch.Tensor, np.ndarray)):
        tokens = torch.as_tensor(np.asarray(spec.cpu() if isinstance(spec, torch.Tensor) else spec))
        desc = {"source": "array", "n_available": int(tokens.shape[0]) if tokens.dim() else 0}
        return _check_tokens(tokens, denoiser, split)[:n], desc
    if not isinstance(spec, (str, Path)):
        raise RecoveryError(f"--{split} must be 'auto', a file path or token ids (got {type(spec).__name__})")
    spec = str(spec)
    if spec == "auto":
        return _auto_examples(denoiser, split, n)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".npy":
        arr = read_token_npy(path, split)
        tokens = _check_tokens(torch.as_tensor(arr), denoiser, split)
        return _seeded_subset(tokens, n, seed, split), {"source": "npy", "path": str(path.resolve()),
                                                        "n_available": int(tokens.shape[0])}
    from .data import DataError, read_user_file, resolve_user_file

    if denoiser.tokenizer is None:
        raise RecoveryError(f"--{split} {path}: the checkpoint has no tokenizer, so text cannot be tokenized; "
                            "pass token ids as a .npy array [N, L] instead")
    try:
        resolved = resolve_user_file(str(path))
        documents = read_user_file(resolved)
    except DataError as e:
        raise RecoveryError(f"--{split}: {e}") from None
    from .data import EOS_TOKEN

    eos = denoiser.tokenizer.token_to_id(EOS_TOKEN)
    ids: list[int] = []
    from .adapters.tokenizer_json import contained

    with contained("the checkpoint's tokenizer"):   # a panic of the native library: one line, exit 4
        encodings = denoiser.tokenizer.encode_batch(documents, add_special_tokens=False)
    for enc in encodings:
        ids.extend(enc.ids)
        if eos is not None:
            ids.append(eos)
    length = denoiser.seq_len
    n_blocks = len(ids) // length
    if n_blocks < 1:
        raise RecoveryError(f"--{split} {path}: {len(ids)} tokens, fewer than one block of {length}")
    tokens = torch.tensor(ids[: n_blocks * length], dtype=torch.int64).view(n_blocks, length)
    tokens = _check_tokens(tokens, denoiser, split)
    return _seeded_subset(tokens, n, seed, split), {"source": "file", "path": str(resolved),
                                                    "n_available": int(n_blocks), "separator": EOS_TOKEN}


def read_token_npy(path: Path, split: str) -> np.ndarray:
    """A .npy file of token ids, its header checked before anything is allocated: an integer dtype
    (not datetime, strings or objects), a shape whose bytes the file really holds, not sparse.
    RecoveryError (exit 2, one line) otherwise."""
    from .data import DataError
    from .data.readers import check_not_sparse

    if not path.exists():
        raise RecoveryError(f"--{split}: file not found: {path}")
    if not path.is_file():
        raise RecoveryError(f"--{split}: {path} is not a regular file")
    try:
        check_not_sparse(path)
        size = path.stat().st_size
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except DataError as e:
        raise RecoveryError(f"--{split}: {e}") from None
    except (ValueError, OSError, EOFError) as e:
        raise RecoveryError(f"--{split}: {path} is not a readable .npy array "
                            f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if dtype.kind not in "iu" or dtype.hasobject:
        raise RecoveryError(f"--{split}: {path} holds {dtype} values, not integer token ids")
    numel = 1
    for n in shape:
        numel *= int(n)
    if numel * dtype.itemsize > size - offset:
        raise RecoveryError(f"--{split}: {path}: its header claims an array of shape {tuple(shape)} "
                            f"({numel * dtype.itemsize:,} bytes) but the file holds {size - offset:,} bytes")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise RecoveryError(f"--{split}: {path} is not a readable .npy array ({e})") from None


def _seeded_subset(tokens: torch.Tensor, n: int, seed: int, split: str) -> torch.Tensor:
    if tokens.shape[0] <= n:
        return tokens
    g = torch.Generator().manual_seed(derive_seed(seed, "examples", split))
    idx = torch.randperm(tokens.shape[0], generator=g)[:n]
    return tokens[idx.sort().values]


def _auto_examples(denoiser: Denoiser, split: str, n: int) -> tuple[torch.Tensor, dict]:
    from .data import DataError, corpus_from_spec

    spec, training = denoiser.training_data, denoiser.training or {}
    if not isinstance(spec, dict) or "n_train" not in training:
        raise RecoveryError(f"--{split} auto needs a memaudit-trained checkpoint (its config.json records the "
                            "corpus and training-set size); pass a data file instead")
    try:
        corpus = corpus_from_spec(spec, tokenizer=denoiser.tokenizer)
        n_train = int(training["n_train"])
        if split == "train":
            tokens = corpus.train_blocks(min(n, n_train))
        else:
            available = corpus.max_test if corpus.max_test is not None else n
            tokens = corpus.test_blocks(min(n, available))
    except DataError as e:
        raise RecoveryError(f"--{split} auto: {e}") from None
    desc = {"source": "auto", "corpus": spec, "n_train": n_train,
            "selection": "first blocks of the model's training subset (nested prefix)" if split == "train"
            else "first held-out blocks of the model's corpus (disjoint from training blocks)"}
    return _check_tokens(tokens, denoiser, split), desc


def _check_tokens(tokens: torch.Tensor, denoiser: Denoiser, split: str) -> torch.Tensor:
    if tokens.dim() != 2:
        raise RecoveryError(f"--{split}: token ids must have shape [N, L], got {tuple(tokens.shape)}")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise RecoveryError(f"--{split}: token ids must be integers, got {tokens.dtype}")
    if tokens.shape[0] == 0:
        raise RecoveryError(f"--{split}: no examples")
    if tokens.shape[1] != denoiser.seq_len:
        raise RecoveryError(f"--{split}: sequences have length {tokens.shape[1]}, the model expects "
                            f"{denoiser.seq_len}")
    tokens = tokens.long()
    if int(tokens.min()) < 0 or int(tokens.max()) >= denoiser.vocab_size:
        raise RecoveryError(f"--{split}: token ids outside [0, {denoiser.vocab_size}) (vocabulary mismatch)")
    return tokens.contiguous()


# ----------------------------------------------------------------------------------- measurement
@torch.no_grad()
def recover_tokens(denoiser: Denoiser, x0: torch.Tensor, t0: float, steps: int, seed: int, split: str = "x",
                   batch_size: int = DEFAULT_BATCH_SIZE, final: str = "ancestral",
                   posterior_dtype: torch.dtype = torch.float64, task=None) -> dict[str, torch.Tensor]:
    """Corrupt x0 [N, L] at t0, run the reverse process, evaluate the final-state entropy.

    → {"x_t", "x_final": [N, L] int64, "entropy": [N, L] float32} on the CPU."""
    xs_t, xs_final, entropies = [], [], []
    key = repr(float(t0))
    for start, stop in batches(x0.shape[0], batch_size):
        batch = x0[start:stop]
        # example i's corruption and reverse draws: its own stream (seed, 'recover', split, t0, i)
        streams = SampleStreams(seed, ("recover", split, key), range(start, stop))
        alpha = denoiser.schedule.alpha(torch.full((batch.shape[0],), float(t0), dtype=torch.float64))
        x_t = streams.corrupt(batch, alpha, denoiser.vocab_size)
        on_step = (lambda: task.advance(1)) if task is not None else None
        x_final = reverse_process(denoiser, x_t, float(t0), steps, streams=streams, final=final,
                                  posterior_dtype=posterior_dtype, on_step=on_step)
        log_probs = denoiser(x_final, torch.full((batch.shape[0],), D.T_MIN))
        entropies.append(D.entropy(log_probs).float().cpu())
        xs_t.append(x_t.cpu())
        xs_final.append(x_final.cpu())
        if task is not None:
            task.advance(2)
    return {"x_t": torch.cat(xs_t), "x_final": torch.cat(xs_final), "entropy": torch.cat(entropies)}


def recover(checkpoint_or_denoiser, train="auto", test="auto", t0=DEFAULT_T0, n: int = DEFAULT_N,
            steps_per_unit: int = DEFAULT_STEPS_PER_UNIT, seed: int = 0, batch_size: int | None = None,
            weights: str | None = None, device: str | None = None, show_progress: bool | None = None,
            final: str = "ancestral", posterior_dtype: str = "float64",
            bootstrap_resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE,
            gap_memorizing: float = RECOVERY_RULE.gap_memorizing,
            equivalence_margin: float = RECOVERY_RULE.equivalence_margin,
            recovery_floor: float = RECOVERY_RULE.recovery_floor,
            min_corrupted_tokens: float = RECOVERY_RULE.min_corrupted_tokens,
            settings: RecoverySettings | None = None, pattern=(), tokenizer: str | None = None,
            trust_remote_code: bool = False, time_input: str | None = None,
            schedule: str | None = None, precision: str = "auto", prompt: str | None = None) -> RecoveryResult:
    """Token recovery of training vs held-out examples (the regime's ground truth).

    checkpoint_or_denoiser: path, hub id or Denoiser. train/test: 'auto', a file, or token ids
    (see `resolve_examples`). settings: a RecoverySettings with everything the test does (the
    other keyword arguments are a shorthand for its fields, ignored when settings is given; its
    device is where the model is). t0: corruption levels. n: examples per split (at most).
    pattern: conditioning patterns measured beside the verdict, e.g. 'prefix:0.5' or
    ['prefix:0.5', 'span:0.25'] (exact completion of train vs test, `result.patterns`); 'uniform'
    is the corruption protocol the verdict always uses. Added to settings.patterns.
    tokenizer, trust_remote_code, time_input, schedule: how a path or hub id is loaded (memaudit.load).
    precision: the network's (auto: bfloat16 on a CUDA GPU, float32 elsewhere).
    prompt: the prompt of a prompt-conditioned family (memaudit.prompted; default its chat template's
    empty user turn, else BOS); the examples are canvases recovered under it.
    """
    import time

    started = time.perf_counter()
    if settings is None:
        t0 = tuple(float(t) for t in ((t0,) if isinstance(t0, (int, float)) else t0))
        settings = RecoverySettings(t0=t0, n=int(n), steps_per_unit=int(steps_per_unit), seed=int(seed),
                                    batch_size=None if batch_size is None else int(batch_size), final=final, posterior_dtype=posterior_dtype,
                                    bootstrap_resamples=int(bootstrap_resamples), confidence=float(confidence),
                                    gap_memorizing=float(gap_memorizing),
                                    equivalence_margin=float(equivalence_margin), recovery_floor=float(recovery_floor),
                                    min_corrupted_tokens=float(min_corrupted_tokens), precision=precision)
    extra = (pattern,) if isinstance(pattern, str) else tuple(pattern)
    specs = [str(p).strip() for p in (*settings.patterns, *extra)]
    for spec in specs:
        parse_pattern(spec)
    settings = replace(settings, patterns=tuple(dict.fromkeys(p for p in specs if p != "uniform")))
    denoiser = as_denoiser(checkpoint_or_denoiser, weights, device, tokenizer=tokenizer,
                           trust_remote_code=trust_remote_code, time_input=time_input, schedule=schedule)
    from .prompted import resolve_prompts

    denoiser = resolve_prompts(denoiser, prompt)
    threads.apply(threads.parameters_of(denoiser))   # the CLI's choice (memaudit.threads)
    settings = replace(settings, device=str(denoiser.device))
    settings.validate()
    denoiser = at_precision(denoiser, settings.precision)
    settings = replace(settings, precision=denoiser.precision)
    from .budget import plan_batch

    settings = replace(settings, batch_size=plan_batch(denoiser, settings.batch_size, None,
                                                       work=settings.n).batch_size)
    batch_size = settings.batch_size
    p_dtype = torch.float64 if posterior_dtype == "float64" else torch.float32

    examples, data = {}, {}
    for split, spec in (("train", train), ("test", test)):
        examples[split], data[split] = resolve_examples(spec, denoiser, split, settings.n, settings.seed)
        data[split]["n_used"] = int(examples[split].shape[0])

    cols: dict[str, list] = {}
    total = sum(((examples[s].shape[0] + batch_size - 1) // batch_size) * (steps_for(t, steps_per_unit) + 2)
                for s in SPLITS for t in t0)
    with progress_bar("recovery", total=total, enabled=show_progress) as task:
        for split in SPLITS:
            x0 = examples[split]
            for t in t0:
                steps = steps_for(t, settings.steps_per_unit)
                out = recover_tokens(denoiser, x0, t, steps, settings.seed, split=split, batch_size=batch_size,
                                     final=final, posterior_dtype=p_dtype, task=task)
                m = sequence_metrics(x0, out["x_t"], out["x_final"], out["entropy"])
                k = x0.shape[0]
                part = {"split": [split] * k, "t0": np.full(k, t), "example_id": np.arange(k),
                        "steps": np.full(k, steps), "x0": x0.numpy(), "x_t": out["x_t"].numpy(),
                        "x_final": out["x_final"].numpy(), **m}
                for key, value in part.items():
                    cols.setdefault(key, []).append(value)
    rows = {k: (sum(v, []) if isinstance(v[0], list) else np.concatenate(v)) for k, v in cols.items()}
    if not np.isfinite(rows["entropy_mean"]).all():
        raise FloatingPointError("the model produced non-finite probabilities on recovered sequences")
    if denoiser.tokenizer is not None:
        for src, dst in (("x0", "original_text"), ("x_t", "corrupted_text"), ("x_final", "restored_text")):
            rows[dst] = [denoiser.decode(r) for r in rows[src]]

    summaries = summarize(rows, settings)
    gaps = gap_table(rows, settings)
    decision = settings.rule.decide(summaries, gaps)   # uniform corruption only: patterns never decide
    completions: dict = {}
    patterns, pattern_gaps = pattern_completion(denoiser, examples, settings, p_dtype, show_progress, completions)
    documents = None
    if settings.documents:
        from .documents import per_document_evidence

        corpus = None
        if train is not None and not isinstance(train, (torch.Tensor, np.ndarray)):
            corpus = resolve_examples(train, denoiser, "train", 10 ** 9, settings.seed)[0].numpy()
        elif train is not None:
            corpus = np.asarray(train)
        t_doc = max((t for t in settings.t0 if t <= 0.5), default=max(settings.t0))
        documents = finite_json(per_document_evidence(
            rows, t_doc, completions, corpus, denoiser.decode if denoiser.tokenizer is not None else None,
            settings.confidence))
    return RecoveryResult(verdict=decision.verdict, reason=decision.reason, explanation=decision.explanation,
                          settings=settings, model=model_provenance(denoiser), data=finite_json(data, default=str), rows=rows,
                          summaries=summaries, gaps=gaps, timings={"total_s": time.perf_counter() - started},
                          patterns=finite_json(patterns), pattern_gaps=finite_json(pattern_gaps),
                          documents=documents)


def complete_with_pattern(denoiser: Denoiser, x0: torch.Tensor, spec: str, settings: RecoverySettings, split: str,
                          posterior_dtype: torch.dtype = torch.float64, show_progress: bool | None = None):
    """Regenerate the positions pattern `spec` frees (from noise at t = 1, the kept ones clamped;
    memaudit.sampling.infill). → (keep [N, L] bool, x_final [N, L] int64) as numpy arrays."""
    kind, fraction = parse_pattern(spec)
    keep = pattern_keep_mask(kind, fraction, x0.shape[0], x0.shape[1], derive_seed(settings.seed, "pattern", spec, split))
    x_final = infill(denoiser, x0, torch.from_numpy(keep), steps=steps_for(1.0, settings.steps_per_unit),
                     seed=settings.seed, purpose=("pattern-reverse", spec, split),
                     batch_size=settings.batch_size, final=settings.final, posterior_dtype=posterior_dtype,
                     show_progress=show_progress)
    return keep, x_final.numpy()


def pattern_completion(denoiser: Denoiser, examples: dict, settings: RecoverySettings,
                       posterior_dtype: torch.dtype, show_progress: bool | None = None,
                       per_example: dict | None = None) -> tuple[list, list]:
    """Exact completion of training vs held-out examples under each conditioning pattern: the share
    of examples whose regenerated positions all come back (Wilson CI), the share of regenerated
    tokens that come back (bootstrap CI over examples), and train − test of the exact rate."""
    rows, gaps = [], []
    for spec in settings.patterns:
        kind, fraction = parse_pattern(spec)
        exact = {}
        for split in SPLITS:
            x0 = examples[split].numpy()
            keep, x_final = complete_with_pattern(denoiser, examples[split], spec, settings, split, posterior_dtype,
                                                  show_progress)
            correct = (x_final == x0) | keep
            free = (~keep).sum(axis=1)
            exact[split] = correct.all(axis=1)
            accuracy = ((x_final == x0) & ~keep).sum(axis=1) / np.maximum(free, 1)
            if per_example is not None:
                per_example[(spec, split)] = accuracy
            rate, ci, _ = proportion(exact[split], settings.confidence)
            rows.append({"pattern": spec, "kind": kind, "fraction": fraction, "split": split, "n": int(x0.shape[0]),
                         "steps": steps_for(1.0, settings.steps_per_unit),
                         "regenerated_tokens": float(free.mean()),
                         "exact_completion": rate, "exact_completion_ci": ci,
                         "token_accuracy": float(accuracy.mean()),
                         "token_accuracy_ci": list(bootstrap_mean_ci(accuracy, settings.bootstrap_resamples,
                                                                     settings.confidence,
                                                                     derive_seed(settings.seed, "pattern-ci", spec, split)))})
        tr, te = exact["train"].astype(np.float64), exact["test"].astype(np.float64)
        gaps.append({"pattern": spec, "train": float(tr.mean()), "test": float(te.mean()),
                     "gap": float(tr.mean() - te.mean()),
                     "gap_ci": list(difference_interval(int(exact["train"].sum()), int(tr.size),
                                                        int(exact["test"].sum()), int(te.size), settings.confidence))})
    return rows, gaps


def summarize(rows: dict, settings: RecoverySettings) -> list[dict]:
    """Per split × t0: means (NaN-skipping) with bootstrap CIs, token-pooled category entropies."""
    out = []
    split_arr = np.asarray(rows["split"])
    for split in SPLITS:
        for t in settings.t0:
            sel = (split_arr == split) & np.isclose(rows["t0"], t)
            if not sel.any():
                continue
            key = repr(float(t))
            rec = rows["recovery_rate"][sel]
            s = {"split": split, "t0": float(t), "steps": int(steps_for(t, settings.steps_per_unit)),
                 "n": int(sel.sum()), "n_with_corruption": int((~np.isnan(rec)).sum()),
                 "mean_corrupted_tokens": float(rows["n_corrupted"][sel].mean()),
                 "mean_corrupted_fraction": float(rows["n_corrupted"][sel].mean() / rows["x0"].shape[1])}
            for name in ("recovery_rate", "unstable_rate", "exact_match"):
                values = np.asarray(rows[name][sel], dtype=np.float64)
                s[name] = nan_mean(values)
                s[f"{name}_ci"] = list(bootstrap_mean_ci(values, settings.bootstrap_resamples, settings.confidence,
                                                         derive_seed(settings.seed, "bootstrap", split, key, name)))
                s[f"{name}_std"] = float(np.nanstd(values)) if (~np.isnan(values)).any() else math.nan
            s["entropy_mean"] = float(np.mean(rows["entropy_mean"][sel]))
            for c in CATEGORIES:
                count = int(rows[f"_count_{c}"][sel].sum())
                s[f"entropy_{c}"] = float(rows[f"_entropy_sum_{c}"][sel].sum() / count) if count else math.nan
                s[f"n_tokens_{c}"] = count
            out.append(s)
    return out


def gap_table(rows: dict, settings: RecoverySettings) -> list[dict]:
    """Per t0: train − test mean recovery rate and its bootstrap CI."""
    split_arr = np.asarray(rows["split"])
    out = []
    for t in settings.t0:
        at = np.isclose(rows["t0"], t)
        tr = rows["recovery_rate"][at & (split_arr == "train")]
        te = rows["recovery_rate"][at & (split_arr == "test")]
        gap = nan_mean(tr) - nan_mean(te)
        lo, hi = bootstrap_gap_ci(tr, te, settings.bootstrap_resamples, settings.confidence,
                                  derive_seed(settings.seed, "gap", repr(float(t))))
        out.append({"t0": float(t), "train": nan_mean(tr), "test": nan_mean(te), "gap": gap, "gap_ci": [lo, hi]})
    return out
