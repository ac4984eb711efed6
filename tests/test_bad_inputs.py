"""The exit-code contract on bad input (issue 10): every case ends in exactly one stderr line
`memaudit: …`, the documented exit code, no traceback, nothing on stdout under --json, no report
file under a final name (or the previous report untouched), and no payload marker file.

The corpus is a table: each case builds its own bad input under tmp_path and names the command
line, the exit code and a piece of the message. Checkpoint-format cases (sizes, malformed config
values, pickles, non-regular files) live in tests/test_load_limits.py; interruption and stdout
cases that need a real process run `python -m memaudit` in a subprocess.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from memaudit.cli import app
from memaudit.io import JOURNAL_RE, TMP_RE, recover_file_sets
from memaudit.report import REPORT_FILES
from test_scan import tiny_checkpoint

runner = CliRunner()
REPORT = sorted(REPORT_FILES)
SCAN_FAST = ["--samples", "32", "--steps", "2", "--batch-size", "32"]


# ------------------------------------------------------------------------------------ builders
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("bad-inputs") / "tiny")


def overflowing_checkpoint(directory: Path, what: str) -> Path:
    """Finite weights whose forward pass overflows: the logits become ±inf, x̂ NaN."""
    from safetensors.torch import load_file, save_file

    tiny_checkpoint(directory)
    state = load_file(str(directory / "model.safetensors"))
    if what == "bias":   # a hidden bias of 3e38: the next layer's sums overflow to inf, x̂ turns NaN
        state["blocks.0.mlp.0.bias"].fill_(3e38)
    else:
        state["output_layer.linear.weight"].fill_(3e38)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def renamed_tensor_checkpoint(directory: Path, name: str) -> Path:
    """A native checkpoint with one extra tensor whose name is checkpoint-controlled text."""
    from safetensors.torch import load_file, save_file

    tiny_checkpoint(directory)
    state = load_file(str(directory / "model.safetensors"))
    state[name] = torch.zeros(1)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def bad_config(directory: Path, edit) -> Path:
    tiny_checkpoint(directory)
    config = json.loads((directory / "config.json").read_text())
    edit(config)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def _set(path: str, value):
    def edit(config):
        node = config
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


def old_report(out: Path, ckpt: Path) -> dict[str, bytes]:
    """A complete previous report in `out` (seed 7), returned as name → bytes."""
    result = runner.invoke(app, ["scan", str(ckpt), *SCAN_FAST, "--seed", "7", "--out", str(out)])
    assert result.exit_code in (0, 1, 3), result.output
    return {name: (out / name).read_bytes() for name in REPORT}


# --------------------------------------------------------------------------------------- corpus
# (id, build(tmp, ckpt) -> argv, exit code, needle in the message)
def _case_scan(path_of):
    return lambda tmp, ck: ["scan", str(path_of(tmp, ck)), *SCAN_FAST]


CASES = [
    # paths given as the checkpoint (markup, newlines, missing, empty, wrong kinds)
    ("missing-path", _case_scan(lambda t, c: t / "nope"), 4, "nope"),
    ("markup-close-tag", _case_scan(lambda t, c: t / "nope[/]"), 4, "nope[/]"),
    ("markup-style-tag", _case_scan(lambda t, c: t / "[red]x[/red]"), 4, "[red]x[/red]"),
    ("markup-bold-in-dir", _case_scan(lambda t, c: t / "[bold]" / "m"), 4, "[bold]"),
    ("newline-in-path", _case_scan(lambda t, c: t / "a\nb"), 4, "a b"),
    ("empty-directory", _case_scan(lambda t, c: (t / "empty").mkdir() or t / "empty"), 4, "not a recognised"),
    ("empty-ckpt-file", _case_scan(lambda t, c: (t / "x.ckpt").write_bytes(b"") or t / "x.ckpt"), 4, "x.ckpt"),
    ("text-file", _case_scan(lambda t, c: _write(t / "w.safetensors", "hello")),
     4, "w.safetensors"),
    ("config-not-json", _case_scan(lambda t, c: (tiny_checkpoint(t / "m"), (t / "m" / "config.json").write_text(
        '{"format": "memaudit", ')) and t / "m"), 4, "config.json"),
    ("config-is-a-list", _case_scan(lambda t, c: (tiny_checkpoint(t / "m"), (t / "m" / "config.json").write_text(
        "[1, 2]")) and t / "m"), 4, "config.json"),
    ("weights-truncated", _case_scan(lambda t, c: (tiny_checkpoint(t / "m"), (t / "m" / "model.safetensors")
                                                   .write_bytes((t / "m" / "model.safetensors").read_bytes()[:100]))
                                     and t / "m"), 4, "model.safetensors"),
    ("weights-missing", _case_scan(lambda t, c: (tiny_checkpoint(t / "m"), (t / "m" / "model.safetensors").unlink())
                                   and t / "m"), 4, "model.safetensors"),
    ("tokenizer-missing", _case_scan(lambda t, c: bad_config(t / "m", _set("tokenizer", {"file": "tok.json"}))),
     4, "tok.json"),
    # checkpoint-controlled text in messages: tensor names with markup and line breaks
    ("tensor-name-markup", _case_scan(lambda t, c: renamed_tensor_checkpoint(t / "m", "x[/]y")), 4, "x[/]y"),
    ("tensor-name-style", _case_scan(lambda t, c: renamed_tensor_checkpoint(t / "m", "[red]evil")), 4, "[red]evil"),
    ("tensor-name-newline", _case_scan(lambda t, c: renamed_tensor_checkpoint(t / "m", "evil\nmemaudit: fake")),
     4, "evil memaudit: fake"),
    ("tensor-name-carriage", _case_scan(lambda t, c: renamed_tensor_checkpoint(t / "m", "a\rb")), 4, "a b"),
    # finite weights that overflow: no verdict, runtime failure
    ("overflow-bias", _case_scan(lambda t, c: overflowing_checkpoint(t / "m", "bias")), 5, "NaN or infinite"),
    ("overflow-weight", _case_scan(lambda t, c: overflowing_checkpoint(t / "m", "weight")), 5, "NaN or infinite"),
    ("overflow-sample", lambda t, c: ["sample", str(overflowing_checkpoint(t / "m", "bias")), "--n", "2"],
     5, "NaN or infinite"),
    ("overflow-recover", lambda t, c: ["recover", str(overflowing_checkpoint(t / "m", "bias")), "--train",
                                       _npy(t, c), "--test", _npy(t, c), "--n", "4", "--t0", "0.5"],
     5, "NaN or infinite"),
    # command-line options
    ("unknown-option", lambda t, c: ["scan", str(c), "--frobnicate"], 2, "no such option"),
    ("unknown-command", lambda t, c: ["frobnicate"], 2, "frobnicate"),
    ("no-command", lambda t, c: [], 2, "missing command"),
    ("missing-argument", lambda t, c: ["scan"], 2, "missing argument"),
    ("samples-zero", lambda t, c: ["scan", str(c), "--samples", "0"], 2, "--samples"),
    ("samples-negative", lambda t, c: ["scan", str(c), "--samples", "-3"], 2, "--samples"),
    ("samples-not-int", lambda t, c: ["scan", str(c), "--samples", "abc"], 2, "--samples"),
    ("seed-huge", lambda t, c: ["scan", str(c), "--seed", str(2**70)], 2, "--seed"),
    ("seed-negative", lambda t, c: ["scan", str(c), "--seed", "-1"], 2, "--seed"),
    ("sample-n-zero", lambda t, c: ["sample", str(c), "--n", "0"], 2, "--n"),
    ("sample-seed-huge", lambda t, c: ["sample", str(c), "--seed", str(2**70)], 2, "--seed"),
    ("sample-steps-zero", lambda t, c: ["sample", str(c), "--steps", "0"], 2, "--steps"),
    ("batch-size-zero", lambda t, c: ["scan", str(c), "--batch-size", "0"], 2, "--batch-size"),
    ("steps-zero", lambda t, c: ["scan", str(c), "--steps", "0"], 2, "--steps"),
    ("fail-on-bad", lambda t, c: ["scan", str(c), "--fail-on", "never"], 2, "--fail-on"),
    ("weights-bad", lambda t, c: ["scan", str(c), "--weights", "best"], 2, "--weights"),
    ("device-bad", lambda t, c: ["scan", str(c), "--device", "tpu"], 2, "--device"),
    ("t-eval-out-of-range", lambda t, c: ["scan", str(c), *SCAN_FAST, "--t-eval", "2"], 2, "(0, 1]"),
    ("t-profile-garbage", lambda t, c: ["scan", str(c), "--t-profile", "a,b"], 2, "--t-profile"),
    ("grid-bad", lambda t, c: ["scan", str(c), *SCAN_FAST, "--grid", "cubic"], 2, "--grid"),
    ("rule-missing", lambda t, c: ["scan", str(c), "--rule", str(t / "rule[/].json")], 2, "rule[/].json"),
    ("rule-not-json", lambda t, c: ["scan", str(c), "--rule", _write(t / "r.json", "{oops")], 2, "r.json"),
    ("recover-t0-garbage", lambda t, c: ["recover", str(c), "--t0", "abc"], 2, "--t0"),
    ("recover-train-missing", lambda t, c: ["recover", str(c), "--train", str(t / "none.txt")], 2, "none.txt"),
    ("recover-n-zero", lambda t, c: ["recover", str(c), "--n", "0"], 2, "--n"),
    ("train-preset-bad", lambda t, c: ["train", "--preset", "giant", "--out", str(t / "o")], 2, "giant"),
    ("train-steps-zero", lambda t, c: ["train", "--steps", "0", "--out", str(t / "o")], 2, "--steps"),
    ("inspect-weights-bad", lambda t, c: ["inspect", str(c), "--weights", "best"], 2, "--weights"),
    ("sweep-sizes-garbage", lambda t, c: ["sweep", "--sizes", "x,y", "--out", str(t / "o")], 2, "sizes"),
    # output locations
    ("out-is-a-file", lambda t, c: ["scan", str(c), *SCAN_FAST, "--out", _write(t / "f", "x")], 2, "f"),
    ("out-parent-is-a-file", lambda t, c: ["scan", str(c), *SCAN_FAST, "--out", str(Path(_write(t / "f", "x")) / "o")],
     2, "not a directory"),
    ("out-html-is-a-dir", lambda t, c: ["scan", str(c), *SCAN_FAST, "--out", Path(_mkdir(t / "o" / "report.html")).parent],
     2, "report.html"),
    ("junit-is-a-dir", lambda t, c: ["scan", str(c), *SCAN_FAST, "--junit", _mkdir(t / "j.xml")], 2, "j.xml"),
    ("summary-md-is-a-dir", lambda t, c: ["scan", str(c), *SCAN_FAST, "--summary-md", _mkdir(t / "s.md")], 2, "s.md"),
    ("junit-symlink", lambda t, c: ["scan", str(c), *SCAN_FAST, "--junit", _symlink(t / "j.xml", t / "elsewhere")],
     2, "j.xml"),
]


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _mkdir(path: Path) -> str:
    path.mkdir(parents=True)
    return str(path)


def _symlink(path: Path, target: Path) -> str:
    path.symlink_to(target)
    return str(path)


def _npy(tmp: Path, ckpt: Path) -> str:
    import numpy as np

    path = tmp / "ids.npy"
    if not path.exists():
        np.save(path, np.random.default_rng(0).integers(0, 16, size=(4, 12)))
    return str(path)


def assert_contract(result, code: int, needle: str, json_mode: bool = False) -> str:
    output = result.output + (result.stderr or "")
    assert "Traceback" not in output, output
    assert result.exit_code == code, (result.exit_code, output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("memaudit: "), lines
    assert needle in lines[0], (needle, lines[0])
    if json_mode:
        assert result.stdout == "", result.stdout
    return lines[0]


def test_corpus_has_at_least_60_cases_with_test_load_limits():
    from test_load_limits import CASES as LOAD_CASES

    assert len(CASES) + len(LOAD_CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, ckpt, tmp_path):
    name, build, code, needle = case
    argv = [str(a) for a in build(tmp_path, ckpt)]
    out = tmp_path / "report-out"
    if argv and argv[0] == "scan" and code != 2:
        argv += ["--out", str(out), "--json", "--junit", str(tmp_path / "junit.xml")]
    result = runner.invoke(app, argv)
    assert_contract(result, code, needle, json_mode="--json" in argv)
    for name_ in REPORT:
        assert not (out / name_).exists(), f"{name_} left under its final name"
    assert not (tmp_path / "junit.xml").exists()
    leftovers = [p.name for p in tmp_path.rglob(".*") if TMP_RE.match(p.name) or JOURNAL_RE.match(p.name)]
    assert leftovers == []


# ------------------------------------------------------------------ the report set, all or nothing
def test_failed_rename_restores_the_previous_report(ckpt, tmp_path, monkeypatch):
    """One file cannot be replaced: the scan exits 5 and every report file is the previous one."""
    out = tmp_path / "out"
    before = old_report(out, ckpt)
    (tmp_path / "summary.md").write_text("old summary\n")
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if str(dst).endswith("report.html"):
            raise PermissionError(13, "Permission denied", str(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    result = runner.invoke(app, ["scan", str(ckpt), *SCAN_FAST, "--seed", "1", "--out", str(out),
                                 "--summary-md", str(tmp_path / "summary.md"), "--json"])
    monkeypatch.setattr(os, "replace", real_replace)
    assert_contract(result, 5, "previous report files are unchanged", json_mode=True)
    assert {name: (out / name).read_bytes() for name in REPORT} == before
    assert (tmp_path / "summary.md").read_text() == "old summary\n"
    assert sorted(p.name for p in out.iterdir()) == REPORT     # no staged or backup files left


def test_unrelated_files_are_never_deleted(ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mine = [".notes.tmp", ".summary.json.tmp", ".summary.json.memaudit-x.tmp", "keep.txt"]
    for name in mine:
        (out / name).write_text("user file")
    result = runner.invoke(app, ["scan", str(ckpt), *SCAN_FAST, "--out", str(out)])
    assert result.exit_code in (0, 1, 3), result.output
    for name in mine:
        assert (out / name).read_text() == "user file"


# ------------------------------------------------------------------ real processes: kill, Ctrl-C
def _env(**extra) -> dict:
    env = {**os.environ, "MEMAUDIT_NO_PROGRESS": "1", "COLUMNS": "200"}
    env.update(extra)
    return env


def _memaudit(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memaudit", *map(str, args)], capture_output=True, text=True,
                          env=env or _env(), timeout=300, **kw)


def _digest(out: Path) -> dict[str, str | None]:
    return {n: hashlib.sha256((out / n).read_bytes()).hexdigest() if (out / n).exists() else None for n in REPORT}


@pytest.fixture(scope="module")
def report_sets(ckpt, tmp_path_factory):
    """The old (seed 7) and new (seed 1) report sets of the tiny checkpoint, as digests."""
    root = tmp_path_factory.mktemp("sets")
    sets = {}
    for label, seed in (("old", 7), ("new", 1)):
        out = root / label
        proc = _memaudit("scan", ckpt, *SCAN_FAST, "--seed", seed, "--out", out)
        assert proc.returncode in (0, 1, 3), proc.stderr
        sets[label] = _digest(out)
    assert sets["old"] != sets["new"]
    return root, sets


@pytest.mark.parametrize("signame", ["KILL", "INT"])
@pytest.mark.parametrize("after", range(len(REPORT_FILES) + 1))
def test_interrupted_write_never_leaves_a_mixed_report(ckpt, report_sets, tmp_path, after, signame):
    """Stop the process after the commit point and after each renamed file in turn."""
    import shutil

    root, sets = report_sets
    out = tmp_path / "out"
    shutil.copytree(root / "old", out)
    proc = _memaudit("scan", ckpt, *SCAN_FAST, "--seed", 1, "--out", out,
                     env=_env(MEMAUDIT_TEST_KILL_AFTER=f"{after}:{signame}"))
    if signame == "KILL":
        assert proc.returncode == -signal.SIGKILL
        journal = [p for p in out.iterdir() if JOURNAL_RE.match(p.name)]
        if not journal:   # without a journal the set on disk must already be one whole run
            assert _digest(out) in (sets["old"], sets["new"])
        recover_file_sets(out)   # what the next run into this directory does first
        assert _digest(out) == sets["new"]   # the commit point was passed: rolled forward
    else:
        # SIGINT is held until the set is complete: the new report, one line, exit 130.
        assert proc.returncode == 130, proc.stderr
        assert proc.stderr.strip().splitlines() == ["memaudit: interrupted"]
        assert _digest(out) == sets["new"]
    recover_file_sets(out)   # the next run starts with this (test_kill_before_… runs it for real)
    assert _digest(out) == sets["new"]
    assert sorted(p.name for p in out.iterdir()) == REPORT


def test_kill_before_the_commit_point_keeps_the_old_report(ckpt, report_sets, tmp_path, monkeypatch):
    """A kill while the new files are being staged: the old set stays, the next run cleans up."""
    import shutil

    root, sets = report_sets
    out = tmp_path / "out"
    shutil.copytree(root / "old", out)
    script = textwrap.dedent(f"""
        import os, signal, sys
        import memaudit.io as io
        real = io._write_new
        calls = []
        def write_new(path, data):
            calls.append(path)
            real(path, data)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        io._write_new = write_new
        sys.argv = ["memaudit", "scan", {str(ckpt)!r}, *{SCAN_FAST!r}, "--seed", "1", "--out", {str(out)!r}]
        from memaudit.entrypoint import main
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _digest(out) == sets["old"]
    assert any(TMP_RE.match(p.name) for p in out.iterdir())
    rerun = _memaudit("scan", ckpt, *SCAN_FAST, "--seed", 1, "--out", out)
    assert rerun.returncode in (0, 1, 3)
    assert sorted(p.name for p in out.iterdir()) == REPORT and _digest(out) == sets["new"]


SIGINT_AT_IMPORT = textwrap.dedent("""
    import importlib.abc, os, signal, sys
    target = sys.argv[1]
    class Interrupt(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target_=None):
            if name == target:
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C lands while this module loads
            return None
    sys.argv = ["memaudit", *sys.argv[2:]]
    from memaudit.entrypoint import main
    sys.meta_path.insert(0, Interrupt())
    main()
""")


@pytest.mark.parametrize("module", ["typer", "rich.console", "torch", "torch.nn", "memaudit.probe",
                                    "memaudit.adapters.native"])
def test_ctrl_c_during_imports(ckpt, tmp_path, module):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", SIGINT_AT_IMPORT, module, "scan", str(ckpt), *SCAN_FAST,
                           "--out", str(out), "--json"], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 130, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.strip().splitlines() == ["memaudit: interrupted"]
    assert proc.stdout == "" and not out.exists()


def test_ctrl_c_during_sampling(ckpt, tmp_path):
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal, sys
        import memaudit.denoiser as d
        real = d.Denoiser.__call__
        def call(self, *a, **k):
            os.kill(os.getpid(), signal.SIGINT)
            return real(self, *a, **k)
        d.Denoiser.__call__ = call
        sys.argv = ["memaudit", "scan", {str(ckpt)!r}, *{SCAN_FAST!r}, "--out", {str(out)!r}, "--json"]
        from memaudit.entrypoint import main
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == ["memaudit: interrupted"]
    assert proc.stdout == "", proc.stdout[-2000:]                     # no half-written JSON on stdout
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())   # nothing half-written


# ---------------------------------------------------------------------------- a closed stdout
@pytest.mark.parametrize("argv", [["inspect", "{ckpt}", "--json"], ["sample", "{ckpt}", "--n", "2", "--steps", "2"],
                                  ["scan", "{ckpt}", *SCAN_FAST, "--json"]], ids=["inspect", "sample", "scan"])
def test_closed_stdout_is_a_failure(ckpt, argv):
    args = [a.format(ckpt=ckpt) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "memaudit", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=_env(), timeout=300,
                          preexec_fn=lambda: os.close(1))
    assert proc.returncode == 5, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write to stdout" in lines[0], lines


def test_usage_error_in_a_real_process_is_one_line(ckpt):
    proc = _memaudit("scan", ckpt, "--quux")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "memaudit: usage: no such option: --quux (see memaudit scan --help)"]


def test_non_finite_outputs_never_reach_json(tmp_path):
    """The API raises; nothing memaudit writes as JSON may hold NaN/Infinity tokens."""
    from memaudit.denoiser import NonFiniteOutput
    from memaudit.io import json_text
    from memaudit.probe import scan

    with pytest.raises(NonFiniteOutput):
        scan(overflowing_checkpoint(tmp_path / "m", "bias"), samples=32, steps=2, show_progress=False)
    text = json_text({"a": float("nan"), "b": [float("inf"), -float("inf")], "c": 1.5})
    assert json.loads(text) == {"a": None, "b": [None, None], "c": 1.5}
    assert "NaN" not in text and "Infinity" not in text
