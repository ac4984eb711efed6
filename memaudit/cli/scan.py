"""`memaudit scan`: the data-free probe and release gate."""
from __future__ import annotations

import math

from pathlib import Path
from typing import Optional

import typer

from ..probe import ScanSettings
from ..progress import console
from .errors import UsageError, cli_errors
from .options import Threads
from .options import TRAIN_SOURCES, BatchSize, Checkpoints, Device, ExitZero, JsonOutput, MaxMemory, Precision, \
    N_TRAIN_MAX, SAMPLES_MAX, STEPS_MAX, RayAddress, Samples, ScheduleSpec, Seed, TimeInput, TokenizerName, \
    TrustRemoteCode, Weights, check_output_targets, load_options, print_json, require_stdout, resolve_device, write_report_set

HELP = """Probe a checkpoint without training data: sample from it, measure the conditional entropy of its predictions, give a verdict (memorizing / generalizing / inconclusive) and exit with a gate code.

\b
Gate (exit code of a completed scan):
  generalizing   0
  memorizing     1
  inconclusive   3; 1 with --fail-on inconclusive
  stored subset  1 with --fail-on stored-subset (a stored-subset finding beside any verdict; memorizing fails too)
  --exit-zero    0 for any verdict (overrides --fail-on)
Could not check, never 0: 2 usage, 4 load failure/unsupported, 5 runtime.

--json prints exactly one JSON document on stdout (the summary; nothing on failure); the table, logs and progress go to stderr. --out DIR writes samples.parquet, tokens.parquet, summary.json and report.html, byte-identical for the same checkpoint, settings and seed.

Several checkpoints (or a glob, --from-list, --ray): one report each in --out DIR/<checkpoint>/, DIR/scans.parquet (one row per checkpoint) and DIR/index.html; with --resume, a checkpoint already scanned with the same settings, rule and files is not scanned again. Exit code: the most severe over all checkpoints, 5 > 4 > 2 > 1 > 3 > 0; --json prints one document with the list, --junit one test case per checkpoint."""


S = ScanSettings   # the CLI's defaults are the settings' defaults


@cli_errors
def scan(
    checkpoints: Checkpoints = None,
    samples: Samples = S.samples,
    steps: int = typer.Option(S.steps, "--steps", min=1, max=STEPS_MAX, help="Reverse steps of the sampler (chosen by "
                              "measurement on the default grid, docs/performance.md)."),
    grid: str = typer.Option(S.grid, "--grid", help="Time grid of the sampler: linear | quadratic."),
    seed: Seed = S.seed,
    t_eval: Optional[float] = typer.Option(None, "--t-eval", help="Time of the entropy evaluation (default: the "
                                           "rule's: 0.05 for the calibrated rule; another value gives 'inconclusive: "
                                           "rule_mismatch')."),
    t_profile: str = typer.Option("", "--t-profile", help="Extra evaluation times reported alongside, e.g. "
                                  "0.05,0.1 (tokens.parquet gains a t_eval column)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the report files into this directory."),
    json_output: JsonOutput = False,
    fail_on: str = typer.Option("memorizing", "--fail-on", help="memorizing | inconclusive: the least severe "
                                "verdict that fails the gate with exit 1 (see exit codes above) | stored-subset: "
                                "memorizing or a stored-subset finding fails it."),
    stored_search: str = typer.Option("auto", "--stored-search", help="Data-free search for stored sequences "
                                      "beside the verdict (docs/method.md): auto (bounded cost) | deep (more starts "
                                      "of every kind) | off."),
    exit_zero: ExitZero = False,
    weights: Weights = None,
    tokenizer: TokenizerName = None,
    trust_remote_code: TrustRemoteCode = False,
    time_input: TimeInput = None,
    schedule: ScheduleSpec = None,
    device: Device = "auto",
    threads: Threads = None,
    batch_size: BatchSize = "auto",
    max_memory: MaxMemory = None,
    adaptive: bool = typer.Option(S.adaptive, "--adaptive/--no-adaptive", help="Sample in rounds (looks at "
                                  "32, 64, 128 … --samples) and stop at the first look whose verdict is definite "
                                  "at 99.9 % (docs/method.md); --no-adaptive draws all --samples."),
    min_samples: Optional[int] = typer.Option(None, "--min-samples", min=1, max=SAMPLES_MAX, help="The first look of adaptive "
                                              "sampling (default: the rule's minimum, 32)."),
    rule: Optional[Path] = typer.Option(None, "--rule", help="Decision rule file (default: the "
                                        "calibrated memaudit/calibration/rule.json; provisional.json "
                                        "where it is absent)."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Also write a JUnit XML file (test case "
                                         "'memorization gate')."),
    summary_md: Optional[Path] = typer.Option(None, "--summary-md", help="Also write a Markdown summary "
                                              "(for $GITHUB_STEP_SUMMARY)."),
    n_train: Optional[int] = typer.Option(None, "--n-train", min=1, max=N_TRAIN_MAX, help="Training-set size in sequences, from the "
                                          "model card: the report compares it with the capture–recapture count "
                                          "of distinct samples (it does not change the verdict)."),
    precision: Precision = "auto",
    layout: str = typer.Option("auto", "--layout", help="How the model's training sequences were cut: stream "
                               "(blocks from one token stream: memaudit's trainer, Duo/UDLM 'wrap') | aligned "
                               "(each starts at a document start, e.g. padded sentences) | auto (stream for "
                               "memaudit checkpoints, else unknown). Decides whether position-locked samples "
                               "count as evidence of stored blocks (docs/method.md)."),
    train_data: Optional[str] = typer.Option(None, "--train", help="Training data to match the samples against: "
                                             + TRAIN_SOURCES + ". Reports training copies, the longest verbatim "
                                             "training spans and the entropy gap beside the verdict (never changes "
                                             "it or the exit code)."),
    from_list: Optional[Path] = typer.Option(None, "--from-list", help="Also scan the checkpoints listed in this "
                                             "file, one per line (# comments)."),
    ray: RayAddress = None,
    resume: bool = typer.Option(False, "--resume", help="Several checkpoints: reuse a checkpoint's report in --out "
                                "when this user's record of it (outside --out) shows the checkpoint, settings, rule "
                                "and every report file unchanged; marked reused in every output "
                                "(docs/formats.md, Safety model)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Prompt of a prompt-conditioned family "
                                         "(DiffusionGemma); 'ids:2,17' gives token ids. Default: the chat "
                                         "template's empty user turn, else BOS."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="File of prompts (one per line, or .jsonl "
                                           "with prompt / messages) for a prompt-conditioned family."),
    test_data: Optional[Path] = typer.Option(None, "--test", help="Prompt-conditioned families: held-out "
                                             "prompt → response records (.jsonl), compared with --train."),
):
    from .. import threads as torch_threads

    torch_threads.enable(threads)
    from ..probe import scan as run_scan
    from ..report import REPORT_FILES, render_report
    from ..verdict import FAIL_ON, gate_exit_code, load_rule

    if json_output:
        require_stdout()
    if any(not str(c).strip() for c in checkpoints or []):
        raise UsageError("CHECKPOINT is empty (give a path, glob or hub id; '.' for the current directory)")
    if fail_on not in FAIL_ON:
        raise UsageError(f"--fail-on must be memorizing, inconclusive or stored-subset (got {fail_on!r})")
    if stored_search not in ("auto", "deep", "off"):
        raise UsageError(f"--stored-search must be auto, deep or off (got {stored_search!r})")
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    try:
        profile = tuple(float(v) for v in t_profile.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--t-profile must be comma-separated numbers (got {t_profile!r})") from None
    from ..budget import parse_batch_size, parse_size

    settings = ScanSettings(samples=samples, steps=steps, grid=grid, seed=seed, t_eval=t_eval, t_profile=profile,
                            batch_size=parse_batch_size(batch_size), max_memory=parse_size(max_memory),
                            adaptive=adaptive, min_samples=min_samples, n_train=n_train, layout=layout,
                            precision=precision)
    single = len(checkpoints or []) == 1 and from_list is None and ray is None
    if single and set("*?[") & set(checkpoints[0]):   # perhaps a glob: only then load the batch module
        from ..experiments.batch import is_glob

        # a glob, even one with a wildcard matching nothing (then a failed row, as docs/distributed.md
        # says); brackets alone matching nothing spell a path (a missing one: exit 4, one line)
        arg = checkpoints[0]
        single = Path(arg).exists() or (not is_glob(arg) and not set("*?") & set(arg))
    if not single:
        from .scan_batch import scan_checkpoints

        one_model_only = [flag for flag, value in (("--train", train_data), ("--tokenizer", tokenizer),
                                                   ("--trust-remote-code", trust_remote_code),
                                                   ("--time-input", time_input), ("--schedule", schedule)) if value]
        if one_model_only:
            raise UsageError(f"{', '.join(one_model_only)}: describes one model's data or loading; scan one "
                             "checkpoint at a time with it")
        # exits with the most severe code over the checkpoints
        scan_checkpoints(checkpoints or [], from_list, ray, settings, out=out, json_output=json_output,
                         fail_on=fail_on, exit_zero=exit_zero, weights=weights, device=device, rule=rule,
                         junit=junit, summary_md=summary_md, resume=resume)
    checkpoint = checkpoints[0]
    targets = ([out / name for name in REPORT_FILES] if out is not None else []) + [p for p in (junit, summary_md) if p]
    check_output_targets(targets)
    result = run_scan(checkpoint, settings=settings, weights=weights, device=resolve_device(device),
                      rule=load_rule(rule), train_data=train_data, stored=stored_search, prompt=prompt,
                      prompts_file=None if prompts is None else str(prompts),
                      test_data=None if test_data is None else str(test_data),
                      **load_options(tokenizer, trust_remote_code, time_input, schedule))
    summary = result.summary(include_timings=True)
    files = {out / name: data for name, data in render_report(result).items()} if out is not None else {}
    if junit is not None:
        from ..report import junit_xml

        files[junit] = junit_xml(summary, inconclusive="failure" if fail_on == "inconclusive" else "error")
    if summary_md is not None:
        from ..report import summary_markdown

        artifacts = sorted(REPORT_FILES) if out is not None else None
        files[summary_md] = summary_markdown(summary, artifacts).encode("utf-8")
    write_report_set(files)
    print_scan_summary(result, out)
    if result.training is not None:
        print_training_evidence(result.training)
    if result.responses is not None:
        from ..sft import print_response_evidence

        print_response_evidence(result.responses)
    if result.stored is not None:
        from .stored import print_stored

        print_stored(result)
    if json_output:
        print_json(summary)
    raise typer.Exit(gate_exit_code(result.verdict, fail_on=fail_on, exit_zero=exit_zero,
                                    stored_found=result.stored_found))


def print_scan_summary(result, out: Optional[Path] = None) -> None:
    """The Rich summary of a scan, on stderr."""
    from rich.markup import escape
    from rich.table import Table

    from ..report import fmt_ci
    from ..report.ci import domain_line

    colour = {"memorizing": "red", "generalizing": "green"}.get(result.verdict, "yellow")
    s = result.settings
    from ..probe import checkpoint_label

    table = Table(title=f"memaudit scan · {escape(str(checkpoint_label(result.model) or ''))}",
                  title_justify="left")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    table.add_column(f"{s.confidence:.0%} CI", justify="right")
    table.add_row("mean conditional entropy (nats)", f"{result.mean_entropy:.4f}", fmt_ci(result.mean_entropy_ci, "{:.4f}"))
    table.add_row("… relative to ln V", f"{result.entropy_ratio:.1%}", fmt_ci(result.entropy_ratio_ci, "{:.1%}"))
    table.add_row(f"tokens with H < τ={s.tau:g}", f"{result.low_entropy_fraction:.1%}",
                  fmt_ci(result.low_entropy_fraction_ci, "{:.1%}"))
    table.add_row("samples with mean H < τ", f"{result.near_zero_sample_fraction:.1%}",
                  fmt_ci(result.near_zero_sample_fraction_ci, "{:.1%}"))
    table.add_row("duplicate samples", f"{result.duplicate_rate:.1%}", "")
    table.add_row(f"fixed points (greedy, t={s.fixed_point_t:g}, {s.fixed_point_steps} steps)",
                  f"{result.fixed_point_fraction:.1%}", "")
    table.add_row("… tokens the greedy dynamics changes (mean)", f"{result.mean_fixed_point_distance:.1%}", "")
    lo_n, hi_n = result.distinct_sequences_ci
    table.add_row("identical sample pairs", f"{result.colliding_pairs}", "")
    table.add_row(f"… pairs within {result.near_copy_fraction:.0%} of their tokens (near copies)",
                  f"{result.near_pairs}", "")
    table.add_row("… distinct sequences (capture–recapture)",
                  "—" if result.distinct_sequences_estimate is None else f"{result.distinct_sequences_estimate:,.0f}",
                  f"[{'—' if lo_n is None else f'{lo_n:,.0f}'}, {'∞' if hi_n is None else f'{hi_n:,.0f}'}]")
    table.add_row(f"samples returning whole (re-noised at t={s.basin_t:g}, {s.basin_steps} steps)",
                  f"{result.basin_return_rate:.1%}", fmt_ci(result.basin_return_rate_ci, "{:.1%}"))
    pos, pos_p = result.stats.get("position_information"), result.stats.get("position_information_p")
    if pos is not None and math.isfinite(pos):
        table.add_row(f"position information (nats; layout: {result.stats.get('layout')})", f"{pos:.3f}",
                      f"p = {pos_p:.2g}")
    for p in result.stats.get("profile", [])[1:]:
        table.add_row(f"mean entropy at t={p['t']:g}", f"{p['mean_entropy']:.4f}", "")
    console.print(table)
    rule = result.rule
    console.print(f"[bold {colour}]{result.verdict}[/] ({result.reason}): {escape(result.explanation)}",
                  highlight=False, soft_wrap=True)
    console.print(f"rule: {rule.name} v{rule.version} ({rule.status}) · {escape(rule.source[:160])}"
                  f"{'…' if len(rule.source) > 160 else ''}", highlight=False, soft_wrap=True)
    console.print(f"domain: {escape(domain_line({'domain': result.domain}))}", highlight=False, soft_wrap=True)
    if "n_train_comparison" in result.stats:
        console.print(f"training set: {escape(result.stats['n_train_comparison'])}", highlight=False, soft_wrap=True)
    t = result.timings
    console.print(f"samples: {escape(result.stopping.get('reason', ''))}", highlight=False, soft_wrap=True)
    console.print(f"{result.n_samples} samples × {result.tokens.shape[1]} tokens, {s.steps} sampler steps, seed "
                  f"{s.seed}, {s.device}, {escape(str(t.get('batch', '')))}: {t.get('total_s', 0):.1f} s "
                  f"(sampling {t.get('sampling_s', 0):.1f} s)"
                  + (f" · report → {escape(str(out))}" if out is not None else ""), highlight=False, soft_wrap=True)


def print_training_evidence(training) -> None:
    """The data evidence of `scan --train`, on stderr, labelled as beside the verdict."""
    from rich.markup import escape

    from ..report import fmt_ci

    s, idx = training.summary(), training.index
    console.print(f"[bold]evidence with training data[/] ({escape(str(s['data'].get('source')))}, "
                  f"{idx['n_documents']:,} examples, {idx['n_tokens']:,} tokens; does not change the verdict or the "
                  f"exit code)", highlight=False, soft_wrap=True)
    console.print(f"  training copies: {s['n_training_copies']} ({s['extraction_rate']:.1%} "
                  f"{fmt_ci(s['extraction_rate_ci'], '{:.1%}')}) · near copies (≤ {idx['near_copy_max_distance']} "
                  f"tokens differ): {s['n_near_copies']} ({s['near_copy_rate']:.1%}) · longest verbatim training span: "
                  f"median {s['longest_span_quantiles']['p50']:g}, max {s['longest_span_quantiles']['max']} tokens",
                  highlight=False, soft_wrap=True)
    for g in s["entropy_gap"]:
        console.print(f"  entropy at t={g['t']:g}: training {g['train_mean_entropy']:.4f} "
                      f"{fmt_ci(g['train_mean_entropy_ci'], '{:.4f}')}, samples {g['sample_mean_entropy']:.4f} "
                      f"{fmt_ci(g['sample_mean_entropy_ci'], '{:.4f}')}, gap {g['entropy_gap']:+.4f} "
                      f"{fmt_ci(g['entropy_gap_ci'], '{:+.4f}')} nats", highlight=False, soft_wrap=True)
