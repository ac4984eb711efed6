"""Nothing in a report folder is trusted (issue 24): planted journals, reused reports, colliding
outputs, SIGTERM, an unwritable stderr, control characters in messages, absurd numbers, and one
exit-code table for single, batch and Ray runs.

Each CLI case asserts its exit code, one `memaudit:` line on stderr (a journal that is ignored adds
exactly one warning line, which the case names), no traceback, and that nothing outside --out was
written, moved or deleted (a snapshot of a victim folder beside it)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from memaudit.cli import app
from memaudit.io import JOURNAL_RE, TMP_RE, recover_file_sets, write_file_set
from memaudit.report import REPORT_FILES
from test_scan import tiny_checkpoint

runner = CliRunner()
FAST = ["--samples", "32", "--steps", "2", "--batch-size", "32"]
DEAD_PID = 4_000_000   # above any pid_max: never alive


# ---------------------------------------------------------------------------------- helpers
def snapshot(root: Path) -> dict[str, str]:
    """Every path under root (links as links) → its content hash, 'dir' or the link's target."""
    found = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            found[key] = "link:" + os.readlink(p)
        elif p.is_dir():
            found[key] = "dir"
        else:
            found[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


@pytest.fixture
def victim(tmp_path) -> Path:
    v = tmp_path / "victim"
    v.mkdir()
    (v / "run.sh").write_text("#!/bin/sh\necho original\n")
    (v / "keep.txt").write_text("keep me\n")
    (v / ".keep.txt.memaudit-4000000-deadbeef.old").write_text("a user file named like a backup\n")
    return v


def one_line(result, code: int, needle: str = "", warnings: int = 0) -> str:
    """The contract: code, no traceback, `warnings` warning lines and then exactly one memaudit: line."""
    stderr = result.stderr if hasattr(result, "stderr") and result.stderr is not None else result.output
    assert "Traceback" not in stderr + (result.stdout or ""), stderr
    code_seen = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert code_seen == code, (code_seen, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 + warnings, lines
    assert all(line.startswith("memaudit: warning: ") for line in lines[:warnings]), lines
    assert lines[-1].startswith("memaudit: ") and needle in lines[-1], (needle, lines)
    return lines[-1]


def journal(directory: Path, files: list[dict], pid: int = DEAD_PID, tag: str = "deadbeef") -> Path:
    path = directory / f".memaudit-commit-{pid}-{tag}.json"
    path.write_text(json.dumps({"memaudit_file_set": 1, "files": files}))
    return path


def _env(**extra) -> dict:
    return {**os.environ, "MEMAUDIT_NO_PROGRESS": "1", "COLUMNS": "200", **extra}


def memaudit(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memaudit", *map(str, args)], capture_output=True, text=True,
                          env=env or _env(), timeout=300, **kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder-safety") / "runs"
    tiny_checkpoint(root / "m1")
    tiny_checkpoint(root / "m2", seed=1)
    return root


# ------------------------------------------------------------------------ 1. planted journals
def test_a_planted_journal_outside_the_folder_is_never_followed(tmp_path, victim):
    """The attack of issue 24: a journal in --out naming files in another folder."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "evil.sh").write_text("rm -rf ~\n")
    planted = journal(out, [{"staged": str(out / "evil.sh"), "target": str(victim / "run.sh"),
                             "backup": str(victim / "keep.txt")}])
    before = snapshot(victim)
    result = runner.invoke(app, ["scan", str(tmp_path / "no-such-checkpoint"), "--out", str(out)])
    one_line(result, 4, "no such file", warnings=1)
    assert "ignored" in result.stderr.splitlines()[0] and planted.name in result.stderr.splitlines()[0]
    assert snapshot(victim) == before
    assert planted.exists() and (out / "evil.sh").exists()          # left for the user to look at


@pytest.mark.parametrize("variant", ["dotdot", "symlinked-journal", "symlinked-folder", "foreign-names",
                                     "not-json", "other-folders-tmp"])
def test_journal_variants_change_nothing(tmp_path, victim, variant):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("the user's report\n")
    tmp_name = ".run.sh.memaudit-4000000-deadbeef.tmp"
    if variant == "dotdot":            # a path that climbs out of the folder
        (victim / tmp_name).write_text("evil\n")
        journal(out, [{"staged": f"{out}/../victim/{tmp_name}", "target": f"{out}/../victim/run.sh", "backup": None}])
    elif variant == "symlinked-journal":   # a link to a well-formed journal elsewhere
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (out / ".report.html.memaudit-4000000-deadbeef.tmp").write_text("evil\n")
        real = journal(elsewhere, [{"staged": str(out / ".report.html.memaudit-4000000-deadbeef.tmp"),
                                    "target": str(out / "report.html"), "backup": None}])
        (out / real.name).symlink_to(real)
    elif variant == "symlinked-folder":    # a link inside --out leading to the victim
        (out / "link").symlink_to(victim)
        (victim / tmp_name).write_text("evil\n")
        journal(out, [{"staged": str(out / "link" / tmp_name), "target": str(out / "link" / "run.sh"),
                       "backup": None}])
    elif variant == "foreign-names":       # inside the folder, but not memaudit's temporary names
        (out / "evil.html").write_text("evil\n")
        journal(out, [{"staged": str(out / "evil.html"), "target": str(out / "report.html"), "backup": None}])
    elif variant == "not-json":
        (out / ".memaudit-commit-4000000-deadbeef.json").write_text("{not json")
    else:   # another folder's temporary file of the right name: still outside this folder
        (victim / tmp_name).write_text("evil\n")
        journal(out, [{"staged": str(victim / tmp_name), "target": str(victim / "run.sh"), "backup": None}])
    before_victim = snapshot(victim)
    result = runner.invoke(app, ["scan", str(tmp_path / "no-such-checkpoint"), "--out", str(out)])
    one_line(result, 4, "no such file", warnings=1)
    assert snapshot(victim) == before_victim
    assert (out / "report.html").read_text() == "the user's report\n"


def test_user_files_named_like_temporary_files_are_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    names = [".summary.json.memaudit-4000000-deadbeef.tmp", ".report.html.memaudit-4000000-cafebabe.old",
             ".memaudit-commit-4000000-0badf00d.json.tmp"]
    for name in names:
        (out / name).write_text("user data\n")
    recover_file_sets(out)
    for name in names[:2]:   # no valid journal names them
        assert (out / name).read_text() == "user data\n"


def test_a_valid_journal_of_a_killed_run_is_rolled_forward(tmp_path, victim):
    """What memaudit itself leaves after a SIGKILL past the commit point is still repaired."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("old\n")
    staged = out / ".summary.json.memaudit-4000000-deadbeef.tmp"
    backup = out / ".summary.json.memaudit-4000000-deadbeef.old"
    staged.write_text("new\n")
    backup.write_text("old\n")
    journal(out, [{"staged": str(staged), "target": str(out / "summary.json"), "backup": str(backup)}])
    before = snapshot(victim)
    result = runner.invoke(app, ["scan", str(tmp_path / "no-such-checkpoint"), "--out", str(out)])
    one_line(result, 4, "no such file")
    assert (out / "summary.json").read_text() == "new\n"
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert snapshot(victim) == before


def test_a_file_set_across_folders_writes_one_journal_per_folder(tmp_path, monkeypatch):
    """Each folder's journal names only its own files (so each can be checked on its own)."""
    import memaudit.io as io

    seen = []
    real = io.os.replace

    def replace(src, dst):
        if JOURNAL_RE.match(Path(dst).name):
            seen.append(json.loads(Path(src).read_text()))
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", replace)
    write_file_set({tmp_path / "a" / "x.txt": b"x", tmp_path / "b" / "y.txt": b"y"})
    assert [[Path(f["target"]).name for f in plan["files"]] for plan in seen] == [["x.txt"], ["y.txt"]]
    assert (tmp_path / "a" / "x.txt").read_bytes() == b"x" and (tmp_path / "b" / "y.txt").read_bytes() == b"y"
    leftovers = [p for p in tmp_path.rglob(".*") if TMP_RE.match(p.name) or JOURNAL_RE.match(p.name)]
    assert leftovers == []


# ------------------------------------------------------------------------ 2. reused reports
@pytest.fixture
def audited(runs, tmp_path, monkeypatch):
    """runs/ scanned once with --resume into audit/, with the ledger in a private cache."""
    monkeypatch.setenv("MEMAUDIT_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "runs"
    shutil.copytree(runs, work)
    out = tmp_path / "audit"
    first = runner.invoke(app, ["scan", str(work / "*"), *FAST, "--out", str(out), "--resume", "--json"])
    assert first.exit_code in (0, 1, 3), first.output
    doc = json.loads(first.stdout)
    assert [c["reused"] for c in doc["checkpoints"]] == [False, False]
    return work, out, doc


def rerun(work: Path, out: Path, *extra):
    result = runner.invoke(app, ["scan", str(work / "*"), *FAST, "--out", str(out), "--json", *extra])
    doc = json.loads(result.stdout) if result.stdout.strip() else None
    return result, doc


def test_an_unchanged_report_is_reused_only_with_resume_and_marked_everywhere(audited, tmp_path):
    work, out, first = audited
    md = tmp_path / "summary.md"
    result, doc = rerun(work, out, "--resume", "--summary-md", str(md), "--junit", str(tmp_path / "j.xml"))
    assert result.exit_code == first["exit_code"]
    assert [c["reused"] for c in doc["checkpoints"]] == [True, True]
    assert list(pd.read_parquet(out / "scans.parquet")["reused"]) == [True, True]
    assert md.read_text().count("(reused report)") == 2
    assert (tmp_path / "j.xml").read_text().count("reused report of an earlier run") >= 2
    assert "reused report" in (out / "index.html").read_text()
    assert "reused" in result.stderr                     # the table's time column
    plain, doc = rerun(work, out)                         # without --resume: scanned again
    assert [c["reused"] for c in doc["checkpoints"]] == [False, False]


@pytest.mark.parametrize("attack", ["edited-verdict", "forged-hashes", "listed-files-subset", "replaced-parquet"])
def test_an_edited_report_never_changes_the_exit_code(audited, attack):
    """Issue 24's gate bypass and its variants: whatever is edited in --out, the checkpoint is
    scanned again, so the exit code is the one a fresh scan gives."""
    work, out, first = audited
    summary_path = out / "m1" / "summary.json"
    summary = json.loads(summary_path.read_text())
    if attack == "edited-verdict":
        summary["verdict"] = "generalizing"
    elif attack == "forged-hashes":   # corrupt the weights, then record their new hash in the summary
        weights = work / "m1" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)
        summary["model"]["files"]["model.safetensors"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        summary["verdict"] = "generalizing"
    elif attack == "listed-files-subset":   # the case: only config.json listed, weights corrupted
        (work / "m1" / "model.safetensors").write_bytes(b"not a safetensors file")
        summary["model"]["files"] = {"config.json": summary["model"]["files"]["config.json"]}
        summary["verdict"] = "generalizing"
    else:   # a Parquet file from another checkpoint's report
        shutil.copy(out / "m2" / "samples.parquet", out / "m1" / "samples.parquet")
    if attack != "replaced-parquet":
        summary_path.write_text(json.dumps(summary))
    result, doc = rerun(work, out, "--resume")
    assert doc["checkpoints"][0]["reused"] is False and doc["checkpoints"][1]["reused"] is True
    fresh, fresh_doc = rerun(work, out)   # no reuse at all: the exit code a scan of these files gives
    assert result.exit_code == fresh.exit_code == doc["exit_code"] == fresh_doc["exit_code"]
    if attack in ("forged-hashes", "listed-files-subset"):
        assert doc["checkpoints"][0]["exit_code"] != 0     # corrupted weights never pass the gate
    else:
        assert doc["checkpoints"][0]["verdict"] == first["checkpoints"][0]["verdict"]


def test_a_ledger_written_by_someone_else_is_not_trusted(audited):
    work, out, _ = audited
    from memaudit.experiments.resume import ledger_path

    path = ledger_path(out / "m1")
    path.chmod(0o666)   # writable by anyone: not this user's record
    result, doc = rerun(work, out, "--resume")
    assert [c["reused"] for c in doc["checkpoints"]] == [False, True]


# ------------------------------------------------------------------------ 3. SIGTERM
def test_sigterm_during_the_commit_is_held_until_the_set_is_complete(runs, tmp_path):
    out, new_dir = tmp_path / "out", tmp_path / "new"
    for seed, where in ((7, out), (1, new_dir)):   # the old report in out, the one this run writes
        assert runner.invoke(app, ["scan", str(runs / "m1"), *FAST, "--seed", str(seed), "--out", str(where)]
                             ).exit_code in (0, 1, 3)
    assert (out / "samples.parquet").read_bytes() != (new_dir / "samples.parquet").read_bytes()
    proc = memaudit("scan", runs / "m1", *FAST, "--seed", 1, "--out", out, env=_env(MEMAUDIT_TEST_KILL_AFTER="1:TERM"))
    one_line(proc, 130, "interrupted")
    assert {n: (out / n).read_bytes() for n in REPORT_FILES} == {n: (new_dir / n).read_bytes() for n in REPORT_FILES}
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)


SIGNAL_AT_IMPORT = textwrap.dedent("""
    import importlib.abc, os, signal, sys
    target, signame = sys.argv[1], sys.argv[2]
    class Interrupt(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target_=None):
            if name == target:
                sys.meta_path.remove(self)
                os.kill(os.getpid(), getattr(signal, signame))
            return None
    sys.argv = ["memaudit", *sys.argv[3:]]
    from memaudit.entrypoint import main
    sys.meta_path.insert(0, Interrupt())
    main()
""")


def test_sigterm_while_starting_is_one_line_and_130(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SIGNAL_AT_IMPORT, "rich.console", "SIGTERM", "scan",
                           str(tmp_path / "none")], capture_output=True, text=True, env=_env(), timeout=120)
    one_line(proc, 130, "interrupted")


# ------------------------------------------------------------------------ 4. colliding outputs
@pytest.mark.parametrize("case", ["junit-is-summary", "junit-is-summary-md", "glob-matches-out", "out-in-checkpoint"])
def test_colliding_outputs_are_refused_up_front(runs, tmp_path, victim, case):
    out = tmp_path / "out"
    work = tmp_path / "runs"
    shutil.copytree(runs, work)
    argv = {"junit-is-summary": ["scan", str(work / "m1"), "--out", str(out), "--junit", str(out / "summary.json")],
            "junit-is-summary-md": ["scan", str(work / "m1"), "--junit", str(out / "x"), "--summary-md", str(out / "x")],
            "glob-matches-out": ["scan", str(work / "*"), "--out", str(work)],
            "out-in-checkpoint": ["scan", str(work / "m1"), str(work / "m2"), "--out", str(work / "m1" / "audit")],
            }[case]
    before, before_runs = snapshot(victim), snapshot(work)
    result = runner.invoke(app, [*argv, *FAST])
    one_line(result, 2, "same file" if case.startswith("junit") else "overlap")
    assert not out.exists() and snapshot(work) == before_runs and snapshot(victim) == before


def test_a_checkpoint_named_index_html_gets_its_own_folder(runs, tmp_path):
    from memaudit.experiments.batch import checkpoint_slugs

    work = tmp_path / "runs"
    shutil.copytree(runs / "m1", work / "index.html")
    shutil.copytree(runs / "m2", work / "scans.parquet")
    slugs = checkpoint_slugs([str(work / "index.html"), str(work / "scans.parquet")])
    assert slugs == {str(work / "index.html"): "index.html-2", str(work / "scans.parquet"): "scans.parquet-2"}
    result = runner.invoke(app, ["scan", str(work / "*"), *FAST, "--out", str(tmp_path / "audit")])
    assert result.exit_code in (0, 1, 3), result.output
    audit = tmp_path / "audit"
    assert (audit / "index.html").is_file() and (audit / "index.html-2" / "report.html").is_file()


# ------------------------------------------------------------------------ 5. stderr unwritable
def test_an_unwritable_stderr_never_changes_the_exit_code(runs, tmp_path):
    def run(*args):
        with open("/dev/full", "w") as full:
            return subprocess.run([sys.executable, "-m", "memaudit", *map(str, args)], stdout=subprocess.PIPE,
                                  stderr=full, text=True, env=_env(), timeout=300)

    missing = run("scan", tmp_path / "no-such-checkpoint", "--json")
    assert missing.returncode == 4 and missing.stdout == ""
    reference = runner.invoke(app, ["scan", str(runs / "m1"), *FAST, "--json"])
    assert reference.exit_code in (1, 3)                  # the tiny checkpoint's gate code (not 0)
    scanned = run("scan", runs / "m1", *FAST, "--json")
    assert scanned.returncode == reference.exit_code
    assert json.loads(scanned.stdout)["verdict"] == json.loads(reference.stdout)["verdict"]
    assert run("scan", runs / "m1", *FAST, "--exit-zero").returncode == 0


# ------------------------------------------------------------------------ 6. one line, always
@pytest.mark.parametrize("name", ["esc\x1b[2J\x1b[1;1Hcleared", "title\x1b]0;pwned\x07", "sep\u2028line",
                                  "nel\x85line", "para\u2029x", "c1\x9b31mred", "bell\x07\x08tab\tx"])
def test_control_characters_never_reach_stderr(tmp_path, name):
    result = runner.invoke(app, ["scan", str(tmp_path / name)])
    line = one_line(result, 4, "no such file")
    assert not any(c in line for c in "\x1b\x07\x08\x85\x9b\u2028\u2029\t")


@pytest.mark.parametrize("argv, needle", [
    (["scan", ""], "CHECKPOINT is empty"),
    (["scan", "x", "--samples", str(2**63)], "--samples"),
    (["scan", "x", "--n-train", str(10**30)], "--n-train"),
    (["scan", "x", "--max-memory", "9" * 400], "--max-memory"),
    (["scan", "x", "--batch-size", str(2**40)], "--batch-size"),
    (["scan", "x", "--steps", str(10**9)], "--steps"),
    (["sample", "x", "--n", str(10**12)], "--n"),
])
def test_absurd_values_are_usage_errors_up_front(tmp_path, argv, needle):
    result = runner.invoke(app, argv)
    one_line(result, 2, needle)
    assert not (Path.cwd() / "samples.parquet").exists()


def test_over_long_paths_are_one_line_and_not_a_runtime_failure(runs, tmp_path):
    long = tmp_path / ("a" * 300)
    one_line(runner.invoke(app, ["scan", str(long)]), 2, "too long")
    one_line(runner.invoke(app, ["scan", str(runs / "m1"), *FAST, "--out", str(long)]), 2, "too long")


def test_a_write_error_names_the_file(runs, tmp_path, monkeypatch):
    import errno

    import memaudit.io as io

    real = io._write_new

    def write_new(path, data):
        if "samples.parquet" in path.name:
            raise OSError(errno.EFBIG, "File too large")
        return real(path, data)

    monkeypatch.setattr(io, "_write_new", write_new)
    line = one_line(runner.invoke(app, ["scan", str(runs / "m1"), *FAST, "--out", str(tmp_path / "o")]), 5,
                    "File too large")
    assert str(tmp_path / "o" / "samples.parquet") in line


def test_a_failing_multi_checkpoint_run_prints_one_line(tmp_path):
    result = runner.invoke(app, ["scan", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "o")])
    one_line(result, 4, "2 of 2 checkpoints could not be scanned")


# ------------------------------------------------------------------------ 7. one exit-code table
def test_the_exit_code_of_each_failure_kind_is_the_same_on_every_backend():
    from memaudit.adapters import LoadError
    from memaudit.budget import BudgetError
    from memaudit.cli.errors import OutputError
    from memaudit.denoiser import NonFiniteOutput
    from memaudit.exit_codes import code_of, most_severe
    from memaudit.experiments.backends import execute, failure_of

    kinds = {BudgetError("--batch-size 4096 cannot fit"): 2, LoadError("bad weights"): 4,
             NonFiniteOutput("NaN"): 5, OutputError("disk full"): 5, MemoryError(): 5, ValueError("x"): 5,
             RecursionError(): 5}
    for error, code in kinds.items():
        assert code_of(error)[1] == code and failure_of(error)[1] == code, error

        def boom(e=error):
            raise e

        kind, message, got = execute(boom, (), None)
        assert (kind, got) == ("failed", code) and "\n" not in message
    assert code_of(KeyboardInterrupt())[1] == 130
    assert most_severe([0, 3, 1, 2]) == 2 and most_severe([2, 4]) == 4 and most_severe([4, 5, 130]) == 130


def test_a_batch_size_that_cannot_fit_is_2_in_single_and_batch_runs(runs):
    args = ["--samples", "32", "--steps", "2", "--batch-size", "4096", "--max-memory", "1MB"]
    single = runner.invoke(app, ["scan", str(runs / "m1"), *args])
    one_line(single, 2, "batch")
    batch = runner.invoke(app, ["scan", str(runs / "m1"), str(runs / "m2"), *args])
    one_line(batch, 2, "could not be scanned")
