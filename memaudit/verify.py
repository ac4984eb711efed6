"""`memaudit verify REPORT_DIR`: check a scan report from its own files alone, without the model.

    verify_report(DIR, rule_file=None) -> Verification   ok, the first mismatch, what was checked

In order, stopping at the first mismatch (each check names the file and the field):

1. the files are there and summary.json names a schema version this memaudit reads;
2. each Parquet file's SHA-256 and size equal summary.json's `report_files`;
3. the `memaudit` metadata blob of samples.parquet and tokens.parquet equals summary.json's
   `provenance`, and summary.json's verdict, reason, rule, settings and stopping equal the blob's;
4. the recorded rule is a valid rule; when its sha256 is that of a rule file shipped with memaudit
   (or of `--rule FILE`), its thresholds are that file's;
5. the per-sample rows agree with each other: the sample count is the one the scan says it used,
   tokens.parquet holds every sample × position, each sample's mean entropy and low-entropy share
   are those of its tokens, duplicates and near copies are those of the token ids;
6. the statistics, recomputed from the rows with the same code a scan uses
   (`memaudit.probe.decide_on` / `judge`, seeded bootstrap), equal summary.json's;
7. the verdict, reason, explanation, the adaptive stop (replayed look by look) and the domain
   check reproduce under the recorded rule.

The checks make a report self-consistent and its verdict reproducible; they do not authenticate
it: someone who recomputes every file and hash consistently produces a report that verifies.
Evidence with training data (`training_data`, beside the verdict) is checked for its hash only.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .provenance import SCHEMA_VERSION

SCAN_FILES = ("summary.json", "samples.parquet", "tokens.parquet")
READABLE_SCHEMAS = (SCHEMA_VERSION,)


class Mismatch(Exception):
    """The first check that failed, in one line."""


@dataclass
class Verification:
    ok: bool
    message: str                           # "verified: …" or the first mismatch
    checks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "message": self.message, "checks": self.checks}


def _same(a, b, rel: float = 1e-9) -> bool:
    """Equal as JSON values, floats to rel (NaN and null are the same: reports write NaN as null)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y, rel) for x, y in zip(a, b))
    na = a is None or (isinstance(a, float) and math.isnan(a))
    nb = b is None or (isinstance(b, float) and math.isnan(b))
    if na or nb:
        return na and nb
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-12)
    return a == b


def _first_difference(a, b, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{path}.{k}".lstrip(".")
            if not _same(a[k], b[k]):
                return _first_difference(a[k], b[k], f"{path}.{k}")
    return path.lstrip(".") or "(document)"


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Mismatch(f"{path.name}: not readable JSON ({e})") from None
    if not isinstance(doc, dict):
        raise Mismatch(f"{path.name}: not a JSON object")
    return doc


def _read_table(path: Path):
    import pyarrow.parquet as pq

    from .report.tables import METADATA_KEY

    try:
        table = pq.read_table(path)
    except Exception as e:   # noqa: BLE001  (any unreadable Parquet file is a mismatch)
        raise Mismatch(f"{path.name}: not a readable Parquet file ({type(e).__name__})") from None
    meta = table.schema.metadata or {}
    if METADATA_KEY not in meta:
        raise Mismatch(f"{path.name}: no memaudit metadata blob")
    try:
        blob = json.loads(meta[METADATA_KEY])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Mismatch(f"{path.name}: the memaudit metadata blob is not JSON") from None
    return table, blob


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise Mismatch(message)


def verify_report(report_dir: str | Path, rule_file: str | Path | None = None) -> Verification:
    """Check a scan report folder (see the module's docstring). Never raises on a bad report."""
    checks: list[str] = []
    try:
        _verify(Path(report_dir), rule_file, checks)
    except Mismatch as e:
        return Verification(False, str(e), checks)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:   # a field of the wrong kind
        where = checks[-1] if checks else "the start"
        return Verification(False, f"malformed report (after {where}): {type(e).__name__}: {e}", checks)
    return Verification(True, f"verified: {', '.join(checks)}", checks)


def _verify(d: Path, rule_file, checks: list[str]) -> None:
    if d.is_dir() and (d / "scans.parquet").is_file() and not (d / "summary.json").is_file():
        _verify_many(d, rule_file, checks)
        return
    if d.is_dir() and (d / "recovery.parquet").is_file():
        _verify_recovery(d, checks)
        return
    _verify_one(d, rule_file, checks)


def _verify_recovery(d: Path, checks: list[str]) -> None:
    """A recovery report: schema, hash, metadata, then the per-example rows → the summaries' rates,
    the train − test gaps and the verdict under the recorded thresholds. The rates are stored as
    float32, so the recomputed means are compared to 1e-5 (the entropies are not recomputed)."""
    from .recovery import RecoverySettings, gap_table

    _check((d / "summary.json").is_file(), "summary.json: missing")
    summary = _read_json(d / "summary.json")
    version = summary.get("schema_version")
    _check(version in READABLE_SCHEMAS, f"summary.json: schema_version {version!r} is not one this memaudit reads")
    checks.append(f"schema {version}")
    entry = (summary.get("report_files") or {}).get("recovery.parquet")
    _check(isinstance(entry, dict), "summary.json: report_files has no entry for recovery.parquet")
    data = (d / "recovery.parquet").read_bytes()
    _check(entry.get("bytes") == len(data) and entry.get("sha256") == hashlib.sha256(data).hexdigest(),
           "recovery.parquet: SHA-256 or size differs from summary.json report_files")
    checks.append("file hash")
    table, blob = _read_table(d / "recovery.parquet")
    provenance = summary.get("provenance") or {}
    _check(_same(blob, provenance), f"recovery.parquet: memaudit metadata differs from summary.json provenance at "
                                    f"{_first_difference(blob, provenance)}")
    for key in ("verdict", "reason", "settings", "model", "schema_version"):
        _check(_same(summary.get(key), provenance.get(key)),
               f"summary.json: {key} differs from recovery.parquet's memaudit metadata")
    checks.append("metadata")
    names = {f.name for f in fields(RecoverySettings)}
    recorded = {k: v for k, v in (summary.get("settings") or {}).items() if k in names}   # less the derived ones
    recorded["t0"] = tuple(recorded.get("t0", ()))
    recorded["patterns"] = tuple(recorded.get("patterns", ()))
    try:
        settings = RecoverySettings(**recorded)
    except (TypeError, ValueError) as e:
        raise Mismatch(f"summary.json: settings unreadable ({e})") from None
    cols = table.to_pydict()
    rows = {"split": np.asarray(cols["split"]), "t0": np.asarray(cols["t0"], dtype=np.float64),
            "recovery_rate": np.asarray(cols["recovery_rate"], dtype=np.float64),
            "n_corrupted": np.asarray(cols["n_corrupted"], dtype=np.float64)}
    corrupted = np.asarray([sum(a != b for a, b in zip(x, y)) for x, y in zip(cols["original_ids"],
                                                                           cols["corrupted_ids"])])
    _check(np.array_equal(corrupted, rows["n_corrupted"]), "recovery.parquet: n_corrupted differs from the token ids")
    recovered = np.asarray([sum(a != b and a == c for a, b, c in zip(x, y, z)) for x, y, z in
                            zip(cols["original_ids"], cols["corrupted_ids"], cols["restored_ids"])])
    _check(np.array_equal(recovered, np.asarray(cols["n_recovered"])),
           "recovery.parquet: n_recovered differs from the token ids")
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(corrupted > 0, recovered / np.maximum(corrupted, 1), np.nan).astype(np.float32)
    _check(np.array_equal(rate, np.asarray(cols["recovery_rate"], dtype=np.float32), equal_nan=True),
           "recovery.parquet: recovery_rate differs from the token ids")
    checks.append(f"{table.num_rows} rows")
    for s in summary.get("summaries") or []:
        sel = (rows["split"] == s["split"]) & np.isclose(rows["t0"], s["t0"])
        _check(int(sel.sum()) == s.get("n"), f"summary.json: {s['split']} t0={s['t0']:g} n is {s.get('n')}, "
                                             f"recovery.parquet has {int(sel.sum())} rows")
        values = rows["recovery_rate"][sel]
        mean = float(np.nanmean(values)) if (~np.isnan(values)).any() else math.nan
        _check(_same(mean, s.get("recovery_rate"), rel=1e-5),
               f"summary.json: {s['split']} t0={s['t0']:g} recovery_rate is {s.get('recovery_rate')!r}, "
               f"recomputed {mean!r}")
    gaps = gap_table(rows, settings)
    _check(_same(gaps, summary.get("gaps"), rel=1e-5), "summary.json: gaps differ from the recomputed gaps")
    decision = settings.rule.decide(summary.get("summaries") or [], gaps)
    for key, value in (("verdict", decision.verdict), ("reason", decision.reason)):
        _check(summary.get(key) == value, f"summary.json: {key} is {summary.get(key)!r}, recomputed {value!r}")
    checks.append(f"gaps and verdict ({decision.verdict})")


def _verify_many(d: Path, rule_file, checks: list[str]) -> None:
    """A multi-checkpoint folder: scans.parquet's schema version, then every scanned checkpoint's
    report (as one report), and its row (verdict, reason, mean entropy) against that report."""
    table, blob = _read_table(d / "scans.parquet")
    version = blob.get("schema_version")
    _check(version in READABLE_SCHEMAS, f"scans.parquet: schema_version {version!r} is not one this memaudit reads")
    rows = table.to_pylist()
    scanned = 0
    for row in rows:
        if row.get("status") != "scanned":
            continue
        slug = str(row.get("slug") or "")
        _check(slug and "/" not in slug and slug not in (".", ".."), f"scans.parquet: bad slug {slug!r}")
        inner: list[str] = []
        try:
            _verify_one(d / slug, rule_file, inner)
        except Mismatch as e:
            raise Mismatch(f"{slug}: {e}") from None
        summary = _read_json(d / slug / "summary.json")
        for key in ("verdict", "reason", "mean_entropy"):
            _check(_same(row.get(key), summary.get(key)),
                   f"scans.parquet: {slug} {key} is {row.get(key)!r}, its report says {summary.get(key)!r}")
        scanned += 1
    checks.append(f"scans.parquet schema {version}, {scanned} of {len(rows)} checkpoints' reports verified")


def _verify_one(d: Path, rule_file, checks: list[str]) -> None:
    from .verdict.scan import Rule, RuleError, list_rules

    if not d.is_dir():
        raise Mismatch(f"{d}: not a report folder")
    for name in SCAN_FILES:
        _check((d / name).is_file(), f"{name}: missing")
    summary = _read_json(d / "summary.json")
    version = summary.get("schema_version")
    _check(version is not None, "summary.json: no schema_version (a report written before schema version 2)")
    _check(version in READABLE_SCHEMAS, f"summary.json: schema_version {version!r} is not one this memaudit "
                                        f"reads ({', '.join(map(str, READABLE_SCHEMAS))})")
    checks.append(f"schema {version}")

    # -- 2. hashes
    manifest = summary.get("report_files")
    _check(isinstance(manifest, dict), "summary.json: no report_files")
    for name in ("samples.parquet", "tokens.parquet"):
        entry = manifest.get(name)
        _check(isinstance(entry, dict), f"summary.json: report_files has no entry for {name}")
        data = (d / name).read_bytes()
        _check(entry.get("bytes") == len(data), f"{name}: {len(data)} bytes, summary.json records {entry.get('bytes')}")
        _check(entry.get("sha256") == hashlib.sha256(data).hexdigest(),
               f"{name}: SHA-256 differs from summary.json report_files")
    checks.append("file hashes")

    # -- 3. the blobs and the summary agree
    samples, blob = _read_table(d / "samples.parquet")
    tokens_t, tokens_blob = _read_table(d / "tokens.parquet")
    provenance = summary.get("provenance")
    _check(isinstance(provenance, dict), "summary.json: no provenance")
    for name, b in (("samples.parquet", blob), ("tokens.parquet", tokens_blob)):
        _check(_same(b, provenance), f"{name}: memaudit metadata differs from summary.json provenance at "
                                     f"{_first_difference(b, provenance)}")
    for key in ("verdict", "reason", "rule", "settings", "stopping", "domain", "schema_version", "model"):
        _check(_same(summary.get(key), provenance.get(key)),
               f"summary.json: {key} differs from the Parquet files' memaudit metadata")
    checks.append("metadata")

    # -- 4. the rule
    recorded = summary["rule"]
    try:
        rule = Rule.from_dict(recorded, sha256=str(recorded.get("sha256", "")), origin="summary.json rule")
    except RuleError as e:
        raise Mismatch(str(e)) from None
    _check(_same(rule.describe(), recorded), "summary.json: rule has fields a rule does not have")
    files = [Path(rule_file)] if rule_file is not None else list_rules()
    known = {}
    for path in files:
        try:
            r = Rule.load(path)
        except RuleError:
            if rule_file is not None:
                raise
            continue
        known[r.sha256] = r
    if rule_file is not None:
        only = next(iter(known.values()))
        _check(only.sha256 == rule.sha256, f"summary.json: rule sha256 is not that of {rule_file}")
    if rule.sha256 in known:
        _check(_same(known[rule.sha256].describe(), recorded),
               f"summary.json: rule differs from the rule file with its sha256 at "
               f"{_first_difference(known[rule.sha256].describe(), recorded)}")
        checks.append(f"rule {rule.name} v{rule.version} (matches its rule file)")
    else:
        checks.append(f"rule {rule.name} v{rule.version} (as recorded; no rule file with its sha256 here)")

    # -- 5. rows
    measured, t_values = _measured(summary, samples, tokens_t, rule)
    checks.append(f"{len(measured['tokens'])} samples")

    # -- 6./7. statistics and verdict
    _reproduce(summary, measured, t_values, rule)
    checks.append(f"statistics and verdict ({summary['verdict']})")


def _measured(summary: dict, samples, tokens_t, rule) -> tuple[dict, list[float]]:
    from .probe import find_duplicates, near_copies

    stop = summary.get("stopping") or {}
    n = samples.num_rows
    _check(n == summary.get("n_samples"), f"samples.parquet: {n} rows, summary.json n_samples is "
                                         f"{summary.get('n_samples')}")
    _check(stop.get("samples_used") in (None, n), f"samples.parquet: {n} rows, the scan used "
                                                  f"{stop.get('samples_used')}")
    _check(n > 0, "samples.parquet: no rows")
    cols = samples.to_pydict()
    _check(cols["sample_id"] == list(range(n)), "samples.parquet: sample_id is not 0 … N−1 in order")
    lengths = {len(row) for row in cols["token_ids"]}
    _check(len(lengths) == 1, "samples.parquet: token_ids of different lengths")
    tokens = np.asarray(cols["token_ids"], dtype=np.int64)
    length = tokens.shape[1]
    _check(length == summary.get("seq_len"), f"samples.parquet: sequences of {length} tokens, summary.json seq_len "
                                             f"is {summary.get('seq_len')}")
    settings = summary.get("settings") or {}
    t_values = [float(settings.get("t_eval")), *[float(t) for t in settings.get("t_profile", [])]]
    tc = tokens_t.to_pydict()
    _check(tokens_t.num_rows == len(t_values) * n * length,
           f"tokens.parquet: {tokens_t.num_rows} rows, expected {len(t_values)} × {n} × {length}")
    shape = (len(t_values), n, length)
    if len(t_values) > 1:
        _check("t_eval" in tc and np.allclose(np.asarray(tc["t_eval"]).reshape(shape)[:, 0, 0], t_values),
               "tokens.parquet: t_eval rows differ from the settings' evaluation times")
    _check(np.array_equal(np.asarray(tc["sample_id"]).reshape(shape)[0], np.repeat(np.arange(n), length).reshape(n, length))
           and np.array_equal(np.asarray(tc["position"]).reshape(shape)[0], np.tile(np.arange(length), (n, 1))),
           "tokens.parquet: rows are not in (t_eval,) sample_id, position order")
    _check(all(np.array_equal(np.asarray(tc["token_id"]).reshape(shape)[k], tokens) for k in range(len(t_values))),
           "tokens.parquet: token_id differs from samples.parquet token_ids")
    entropy = np.asarray(tc["entropy"], dtype=np.float32).reshape(shape)
    top1 = np.asarray(tc["top1_prob"], dtype=np.float32).reshape(shape)
    mean = entropy[0].mean(axis=1, dtype=np.float64).astype(np.float32)
    _check(np.array_equal(mean, np.asarray(cols["mean_entropy"], dtype=np.float32)),
           "samples.parquet: mean_entropy differs from the mean of tokens.parquet entropy")
    low = (entropy[0] < float(settings.get("tau"))).mean(axis=1, dtype=np.float64).astype(np.float32)
    _check(np.array_equal(low, np.asarray(cols["low_entropy_fraction"], dtype=np.float32)),
           "samples.parquet: low_entropy_fraction differs from tokens.parquet entropy below tau")
    _check(np.array_equal(top1[0].mean(axis=1, dtype=np.float64).astype(np.float32),
                          np.asarray(cols["mean_top1_prob"], dtype=np.float32)),
           "samples.parquet: mean_top1_prob differs from tokens.parquet top1_prob")
    is_dup, dup_of = find_duplicates(tokens)
    recorded_dup = np.asarray([-1 if v is None else v for v in cols["duplicate_of"]], dtype=np.int64)
    _check(np.array_equal(dup_of, recorded_dup) and np.array_equal(is_dup, np.asarray(cols["is_duplicate"])),
           "samples.parquet: is_duplicate / duplicate_of differ from the token ids")
    near = near_copies(tokens, float(rule.evidence["near_copy_fraction"]))
    _check(np.array_equal(near, np.asarray(cols["near_copies_earlier"], dtype=np.int64)),
           "samples.parquet: near_copies_earlier differs from the token ids")
    fp = np.asarray(cols["fixed_point_distance"], dtype=np.float32)
    _check(np.array_equal(fp == 0, np.asarray(cols["is_fixed_point"], dtype=bool)),
           "samples.parquet: is_fixed_point differs from fixed_point_distance")
    return {"tokens": tokens, "entropy": entropy, "top1": top1, "fp_dist": fp,
            "basin": np.asarray(cols["basin_agreement"], dtype=np.float32), "duplicate_of": dup_of,
            "near_earlier": near}, t_values


def _prefix(measured: dict, k: int) -> dict:
    """The first k samples (duplicates and near copies count earlier samples only: exact on a prefix)."""
    return {key: (v[:, :k] if key in ("entropy", "top1") else v[:k]) for key, v in measured.items()}


def _reproduce(summary: dict, measured: dict, t_values: list[float], rule) -> None:
    from .probe import ScanSettings, schedule_eps_of, decide_on, judge
    from .verdict import sequential

    recorded = dict(summary["settings"])
    names = {f.name for f in fields(ScanSettings)}
    unknown = sorted(set(recorded) - names)
    _check(not unknown, f"summary.json: settings has unknown field {unknown[0] if unknown else ''}")
    recorded["t_profile"] = tuple(recorded.get("t_profile", ()))
    try:
        settings = ScanSettings(**recorded)
    except TypeError as e:
        raise Mismatch(f"summary.json: settings unreadable ({e})") from None
    _check(settings.tau == rule.tau and settings.confidence == rule.confidence,
           "summary.json: settings tau / confidence differ from the rule's")
    stop = summary.get("stopping") or {}
    planned = [int(x) for x in stop.get("looks") or [len(measured["tokens"])]]
    expected = (sequential.looks(settings.min_samples, settings.samples) if settings.adaptive
                else [settings.samples])
    _check(planned == expected, f"summary.json: stopping.looks {planned} are not the looks of the settings {expected}")
    n_parameters = (summary.get("model") or {}).get("n_parameters")
    schedule_eps = schedule_eps_of(summary.get("model") or {})
    vocab_size = int(summary["vocab_size"])
    n = len(measured["tokens"])
    if settings.adaptive:   # the scan stops at the first early look whose decision is settled
        for look in planned[:-1]:
            if look >= n:
                break
            _, early = decide_on(_prefix(measured, look), vocab_size, settings, t_values, rule, n_parameters,
                                 sequential.EARLY_CONFIDENCE, schedule_eps=schedule_eps)
            _check(not sequential.stops(early), f"verdict: the scan would have stopped at the look at {look} "
                                                f"samples ({early.verdict}), the report used {n}")
    _check(n in planned, f"samples.parquet: {n} samples is not one of the planned looks {planned}")
    stats, evidence, decision, stopping = judge(measured, vocab_size, settings, t_values, rule, planned, n_parameters,
                                                schedule_eps=schedule_eps)
    # a family the rule has not validated is gated as the scan gates it (memaudit.prompted.family_gate),
    # by the family its report records
    from types import SimpleNamespace

    from .prompted import family_gate

    family = (summary.get("model") or {}).get("calibration_family")
    decision, domain = family_gate(rule, SimpleNamespace(calibration_family=family), decision,
                                   rule.domain_check(evidence))
    stopping = sequential.stopping(settings.adaptive, planned, n, decision.verdict)
    for key, value in stats.items():
        _check(key in summary, f"summary.json: no {key}")
        _check(_same(summary[key], value), f"summary.json: {key} is {summary[key]!r}, recomputed {value!r}")
    for key, value in (("verdict", decision.verdict), ("reason", decision.reason),
                       ("explanation", decision.explanation)):
        _check(summary.get(key) == value, f"summary.json: {key} is {summary.get(key)!r}, recomputed {value!r} "
                                          f"under rule {rule.name}")
    _check(_same(summary.get("stopping"), stopping.describe()), "summary.json: stopping differs from the replayed stop")
    _check(_same(summary.get("domain"), domain), "summary.json: domain differs from the rule's check")
