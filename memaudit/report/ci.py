"""CI outputs of a scan: JUnit XML (one test case per gate) and a Markdown job summary.

Both writers take the scan's summary document (the `--json` document, or `summary.json` of an
`--out` directory, or `ScanResult.summary()`), so they work from a finished report as well as from
a live scan, and both write atomically (temporary file in the target's directory, then rename).

JUnit mapping of the memorization gate (the test case "memorization gate"):

    generalizing  → passed
    memorizing    → <failure type="memorizing">        (the model failed the gate)
    inconclusive  → <error type="inconclusive">        (default: the check could not decide, which
                                                        CI reporters show as red, like exit code 3)
                    or <skipped> with inconclusive="skipped" (for pipelines run with a gate that
                                                        tolerates inconclusive results)

A scan over several checkpoints (memaudit.experiments.batch) gets one suite with one test case per
checkpoint (`junit_xml_many`; a checkpoint that failed is an <error type="load_failed"> or
"runtime_failure", "usage_error") and one Markdown table (`batch_markdown`).

No timestamps or durations are written unless the summary carries `timings` (the `--json`
document does, summary.json does not), so the same summary gives the same bytes.
"""
from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable

from ..labels import IN_MEMORY, checkpoint_label

GATE_NAME = "memorization gate"
SUITE_NAME = "memaudit scan"
VERDICT_ICONS = {"generalizing": "✅", "memorizing": "❌", "inconclusive": "⚠️"}
INCONCLUSIVE_AS = ("error", "skipped", "failure")

# Statistics shown in summaries: (key, label, unit, format). A key absent from the summary is skipped.
KEY_STATISTICS: tuple[tuple[str, str, str, str], ...] = (
    ("mean_entropy", "mean conditional entropy H̄", "nats", "{:.4g}"),
    ("entropy_ratio", "H̄ / ln V", "", "{:.1%}"),
    ("low_entropy_fraction", "tokens with H < τ", "", "{:.1%}"),
    ("near_zero_sample_fraction", "samples with mean H < τ", "", "{:.1%}"),
    ("duplicate_rate", "duplicate samples", "", "{:.1%}"),
    ("fixed_point_fraction", "samples that are fixed points", "", "{:.1%}"),
    ("mean_fixed_point_distance", "tokens the greedy dynamics changes", "", "{:.1%}"),
    ("colliding_pairs", "identical sample pairs", "", "{:d}"),
    ("near_pairs", "near-identical sample pairs (≤ 25 % of tokens differ)", "", "{:d}"),
    ("distinct_sequences_estimate", "distinct sequences (capture–recapture)", "", "{:,.0f}"),
    ("basin_return_rate", "samples returning whole after re-noising", "", "{:.1%}"),
    ("position_information", "information a token carries about its position", "nats", "{:.3g}"),
    ("mean_top1_prob", "mean top-1 probability", "", "{:.3g}"),
    ("max_entropy", "ln V (entropy of a uniform guess)", "nats", "{:.4g}"),
)


# ------------------------------------------------------------------------------------ writing
from ..io import atomic_write_bytes  # noqa: E402
from ..exit_codes import EXIT_LOAD, EXIT_USAGE  # noqa: E402


def load_summary(path_or_dir: str | Path) -> dict:
    """The summary document of a report directory (its summary.json) or of a JSON file."""
    p = Path(path_or_dir)
    if p.is_dir():
        p = p / "summary.json"
    return json.loads(p.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------ helpers
def ci_level(summary: dict) -> str:
    conf = (summary.get("rule") or {}).get("confidence") or (summary.get("settings") or {}).get("confidence")
    return f"{float(conf):.0%} CI" if conf else "CI"


def fmt_value(value, pattern: str = "{:.4g}") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return pattern.format(value)
    return str(value)


def fmt_ci(ci, pattern: str = "{:.4g}", missing: str | None = None) -> str:
    """"[lo, hi]", each bound through fmt_value: the one confidence-interval formatter of the
    terminal tables, the HTML pages and the CI outputs. missing: what to show instead when the
    interval is absent or has an undefined bound (default: "" for an absent interval, and the
    bounds as they are otherwise)."""
    if not ci or len(ci) != 2:
        return "" if missing is None else missing
    if missing is not None and any(v is None or (isinstance(v, float) and math.isnan(v)) for v in ci):
        return missing
    return f"[{fmt_value(ci[0], pattern)}, {fmt_value(ci[1], pattern)}]"


def key_statistics(summary: dict) -> list[dict]:
    """The statistics a reviewer reads first, as rows {key, label, value, ci, unit}."""
    rows = []
    for key, label, unit, pattern in KEY_STATISTICS:
        if key not in summary:
            continue
        rows.append({"key": key, "label": label, "unit": unit, "value": fmt_value(summary[key], pattern),
                     "ci": fmt_ci(summary.get(f"{key}_ci"), pattern)})
    return rows


def checkpoint_name(summary: dict) -> str:
    """The checkpoint's label as its scan or recovery recorded it (labels.checkpoint_label; a scan
    over several checkpoints records the argument as given), else derived the same way from the
    model provenance."""
    return str(summary.get("checkpoint") or checkpoint_label(summary.get("model")) or IN_MEMORY)


def domain_line(summary: dict) -> str:
    """Whether the checkpoint lies inside the rule's validated domain, in words."""
    domain = summary.get("domain") or {}
    validated = domain.get("validated") or {}
    if not validated:
        return "the rule records no validated domain"
    axes = {"vocab_size": "vocabulary", "seq_len": "sequence length", "n_parameters": "parameters"}
    ranges = ", ".join(f"{axes.get(k, k)} {lo:,}–{hi:,}" for k, (lo, hi) in validated.items())
    if domain.get("inside"):
        return f"inside the rule's validated domain ({ranges})"
    return "OUTSIDE the rule's validated domain: " + "; ".join(domain.get("outside") or [])


def rule_line(summary: dict, max_source: int | None = 160) -> str:
    """"name vN (status), source: …" — the source cut to `max_source` characters (None: in full)."""
    rule = summary.get("rule") or {}
    if not rule:
        return "(no rule recorded)"
    text = f"{rule.get('name', '?')} v{rule.get('version', '?')} ({rule.get('status', '?')})"
    source = str(rule.get("source") or "").strip()
    if source:
        if max_source is not None and len(source) > max_source:
            source = source[:max_source].rstrip() + "…"
        text += f", source: {source}"
    return text.rstrip(".")


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(value) -> str:
    return _XML_BAD.sub("\ufffd", str(value))


# -------------------------------------------------------------------------------------- JUnit
def gate_outcome(summary: dict, inconclusive: str = "error") -> str:
    """passed | failure | error | skipped: the JUnit outcome of one scan's gate."""
    if inconclusive not in INCONCLUSIVE_AS:
        raise ValueError(f"inconclusive must be one of {', '.join(INCONCLUSIVE_AS)} (got {inconclusive!r})")
    verdict = str(summary.get("verdict", "inconclusive"))
    if verdict == "memorizing":
        return "failure"
    return "passed" if verdict == "generalizing" else inconclusive


def summary_properties(summary: dict) -> list[tuple[str, str]]:
    """(name, value) pairs of a scan summary for JUnit <property> elements."""
    prop_values = [("checkpoint", checkpoint_name(summary)), ("verdict", str(summary.get("verdict", "inconclusive"))),
                   ("reason", str(summary.get("reason", "")))]
    for key, _, _, pattern in KEY_STATISTICS:
        if key in summary:
            prop_values.append((key, fmt_value(summary[key], "{:.6g}")))
            if f"{key}_ci" in summary:
                prop_values.append((f"{key}_ci", fmt_ci(summary[f"{key}_ci"], "{:.6g}")))
    for key in ("n_samples", "t_eval", "tau", "units", "memaudit_version"):
        if key in summary:
            prop_values.append((key, fmt_value(summary[key], "{:.6g}")))
    rule = summary.get("rule") or {}
    for key in ("name", "version", "status", "source", "sha256"):
        if key in rule:
            prop_values.append((f"rule.{key}", str(rule[key])))
    if summary.get("domain"):
        prop_values.append(("rule.domain", domain_line(summary)))
    return prop_values


def add_properties(parent, prop_values, first: bool = False) -> None:
    """A <properties> element; first: as the parent's first child (a testcase's must precede its outcome)."""
    props = ET.Element("properties")
    parent.insert(0, props) if first else parent.append(props)
    for name, value in prop_values:
        ET.SubElement(props, "property", {"name": name, "value": _xml_text(value)})


def add_gate_case(suite, summary: dict, outcome: str, name: str = GATE_NAME):
    """The testcase element of one scan's gate, with its outcome."""
    verdict = str(summary.get("verdict", "inconclusive"))
    explanation = str(summary.get("explanation", ""))
    case = ET.SubElement(suite, "testcase", {"classname": f"memaudit.scan.{_classname(checkpoint_name(summary))}",
                                             "name": name})
    message = _xml_text(f"{verdict}: {explanation}" if explanation else verdict)
    if outcome in ("failure", "error"):
        el = ET.SubElement(case, outcome, {"type": verdict, "message": message})
        el.text = _xml_text(_plain_summary(summary))
    elif outcome == "skipped":
        ET.SubElement(case, "skipped", {"message": message})
    out = ET.SubElement(case, "system-out")
    out.text = _xml_text(_plain_summary(summary))
    return case


def junit_bytes(suite) -> bytes:
    ET.indent(suite, space="  ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="utf-8") + b"\n"


def junit_xml(summary: dict, inconclusive: str = "error") -> bytes:
    """The JUnit XML document of one scan (see the module docstring for the mapping)."""
    outcome = gate_outcome(summary, inconclusive)
    suite = ET.Element("testsuite", {
        "name": SUITE_NAME, "tests": "1",
        "failures": "1" if outcome == "failure" else "0",
        "errors": "1" if outcome == "error" else "0",
        "skipped": "1" if outcome == "skipped" else "0",
    })
    timings = summary.get("timings") or {}
    if "total_s" in timings:
        suite.set("time", f"{float(timings['total_s']):.3f}")
    add_properties(suite, summary_properties(summary))
    add_gate_case(suite, summary, outcome)
    return junit_bytes(suite)


def junit_xml_many(entries: list[dict], inconclusive: str = "error") -> bytes:
    """The JUnit XML document of a scan over several checkpoints: one test case per checkpoint,
    named by it. entries: the checkpoints' summary documents, or {"checkpoint", "error",
    "exit_code"} for one that failed (an <error> of type load_failed, usage_error or runtime_failure)."""
    suite = ET.Element("testsuite", {"name": SUITE_NAME, "tests": str(len(entries))})
    tally = {"failure": 0, "error": 0, "skipped": 0}
    for entry in entries:
        if entry.get("error") is not None:
            kind = {EXIT_LOAD: "load_failed", EXIT_USAGE: "usage_error"}.get(entry.get("exit_code"), "runtime_failure")
            case = ET.SubElement(suite, "testcase", {"classname": f"memaudit.scan.{_classname(entry['checkpoint'])}",
                                                     "name": str(entry["checkpoint"])})
            ET.SubElement(case, "error", {"type": kind, "message": _xml_text(entry["error"])})
            tally["error"] += 1
            continue
        outcome = gate_outcome(entry, inconclusive)
        if entry.get("reused"):
            entry = {**entry, "explanation": f"(reused report of an earlier run) {entry.get('explanation', '')}"}
        case = add_gate_case(suite, entry, outcome, name=checkpoint_name(entry))
        add_properties(case, summary_properties(entry), first=True)
        tally[outcome] = tally.get(outcome, 0) + 1
    suite.set("failures", str(tally["failure"]))
    suite.set("errors", str(tally["error"]))
    suite.set("skipped", str(tally["skipped"]))
    return junit_bytes(suite)


def write_junit(summary: dict, path: str | Path, inconclusive: str = "error") -> Path:
    """Write the JUnit XML of a scan summary to `path` atomically."""
    return atomic_write_bytes(path, junit_xml(summary, inconclusive=inconclusive))


def _classname(checkpoint: str) -> str:
    name = Path(checkpoint.rstrip("/")).name or checkpoint
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def _plain_summary(summary: dict) -> str:
    lines = [f"checkpoint: {checkpoint_name(summary)}",
             f"verdict: {summary.get('verdict', '?')} ({summary.get('reason', '')})"]
    if summary.get("explanation"):
        lines.append(f"why: {summary['explanation']}")
    level = ci_level(summary)
    for row in key_statistics(summary):
        ci = f"  {level} {row['ci']}" if row["ci"] else ""
        unit = f" {row['unit']}" if row["unit"] else ""
        lines.append(f"{row['label']}: {row['value']}{unit}{ci}")
    if "n_samples" in summary:
        lines.append(f"samples: {summary['n_samples']}")
    lines.append(f"rule: {rule_line(summary)}")
    lines.append(f"domain: {domain_line(summary)}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- Markdown
def _md(text) -> str:
    """Escape text for a Markdown table cell or line (pipes, HTML, emphasis characters)."""
    s = str(text).replace("\\", "\\\\")
    for ch in "|*_`[]<>#":
        s = s.replace(ch, "\\" + ch)
    return s.replace("\r", " ").replace("\n", " ")


def summary_markdown(summary: dict, artifacts: Iterable[str] | None = None) -> str:
    """A Markdown summary of one scan, fit for $GITHUB_STEP_SUMMARY."""
    verdict = str(summary.get("verdict", "inconclusive"))
    icon = VERDICT_ICONS.get(verdict, "⚠️")
    gate = {"generalizing": "gate passed", "memorizing": "gate failed"}.get(verdict, "could not decide")
    lines = [f"## {icon} memaudit scan: **{_md(verdict)}** ({gate})", ""]
    lines.append(f"Checkpoint: `{checkpoint_name(summary).replace('`', '')}`")
    lines.append("")
    if summary.get("explanation"):
        lines += [f"> {_md(summary['explanation'])} (reason: `{str(summary.get('reason', '')).replace('`', '')}`)", ""]
    rule = summary.get("rule") or {}
    if rule.get("status") == "provisional":
        lines += ["> [!WARNING]",
                  "> The decision rule is **provisional**: its thresholds are not yet calibrated on reference "
                  "models of known regime.", ""]
    level = ci_level(summary)
    lines += [f"| statistic | value | {level} |", "| --- | ---: | --- |"]
    for row in key_statistics(summary):
        unit = f" {row['unit']}" if row["unit"] else ""
        lines.append(f"| {_md(row['label'])} | {_md(row['value'] + unit)} | {_md(row['ci'])} |")
    for key, label in (("n_samples", "samples"), ("seq_len", "sequence length"), ("vocab_size", "vocabulary V"),
                       ("t_eval", "t_eval"), ("tau", "τ (nats)")):
        if key in summary:
            lines.append(f"| {label} | {_md(fmt_value(summary[key], '{:.4g}'))} | |")
    lines.append("")
    lines.append(f"Rule: {_md(rule_line(summary))}  ")
    lines.append(f"Domain: {_md(domain_line(summary))}  ")
    lines.append("Entropies are in nats.  ")
    settings = summary.get("settings") or {}
    if settings:
        keep = ("samples", "steps", "seed", "final", "t_eval", "device")
        lines.append("Settings: " + ", ".join(f"{k}={_md(settings[k])}" for k in keep if k in settings))
    names = [str(a) for a in (artifacts or [])]
    if names:
        lines += ["", "Artifacts: " + ", ".join(f"`{n.replace('`', '')}`" for n in names)]
    return "\n".join(lines) + "\n"


def write_summary_md(summary: dict, path: str | Path, artifacts: Iterable[str] | None = None) -> Path:
    """Write the Markdown summary to `path` atomically (it replaces the file: to add to a file that
    other steps also write, write elsewhere and append it, e.g. `cat s.md >> $GITHUB_STEP_SUMMARY`)."""
    return atomic_write_bytes(path, summary_markdown(summary, artifacts).encode("utf-8"))


def batch_markdown(entries: list[dict]) -> str:
    """A Markdown summary of a scan over several checkpoints: one table row per checkpoint
    (entries as for junit_xml_many)."""
    lines = [f"## memaudit scan: {len(entries)} checkpoints", "",
             "| | checkpoint | step | verdict | reason / error | mean H (nats) |", "| --- | --- | ---: | --- | --- | ---: |"]
    for e in entries:
        name = f"`{str(e['checkpoint']).replace('`', '')}`"
        step = "" if e.get("step") is None else str(e["step"])
        if e.get("error") is not None:
            lines.append(f"| 🛑 | {name} | {step} | failed | {_md(e['error'])} | |")
            continue
        verdict = str(e.get("verdict", "inconclusive"))
        reused = " (reused report)" if e.get("reused") else ""
        lines.append(f"| {VERDICT_ICONS.get(verdict, '⚠️')} | {name} | {step} | {_md(verdict)} | "
                     f"{_md(e.get('reason', ''))}{reused} | {fmt_value(e.get('mean_entropy'))} |")
    return "\n".join(lines) + "\n"
