"""Mutation testing of the verdict logic, the statistics, the extraction index, the memory budget
and the noise schedules (issue 25): does the suite notice when the code is wrong?

Two parts, each against the tests that need no trained reference model
(MEMAUDIT_TESTS_NO_MODELS=1 deselects the others, tests/conftest.py):

    python benchmarks/mutation.py --issue-table
        the ten mutations of issue 25 (and a few more of the same kind), applied by hand one at a
        time to a scratch copy, each followed by the fast contract tests; prints KILLED/SURVIVED.

    python benchmarks/mutation.py [--modules stats,budget,...] [--max-children 1]
        mutmut (pip install -e '.[mutation]') on a scratch copy of the repository, one run per
        module with that module's tests (MODULES below); prints killed / survived / timed out /
        other per module and in total, and the surviving mutants by name (`mutmut show NAME` in
        the module's work directory prints the diff). The schedules of memaudit/diffusion.py are
        the only part of that file mutated (mutants named *Schedule*, schedule_from_dict,
        check_eps, check_float). MODULES says which tests run for which module, and what is left out.
        Lines that start with a string literal (the continuation lines of explanations and error
        messages) are not mutated: the tests assert verdicts, reasons, numbers and exit codes, not
        wording. A mutant that no selected test reaches counts as 'no tests', not as killed.

Nothing in the working tree is modified: everything runs under --workdir (default
$TMPDIR/memaudit-mutation), which a later run reuses (mutmut caches results there). It is a
benchmark, not a CI step: on 2 shared CPU cores the whole set takes hours; the figure recorded in
docs/testing.md says which subset was run, when and with which command.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_MODELS = {"MEMAUDIT_TESTS_NO_MODELS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "MEMAUDIT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}

# module → (files to mutate, mutant-name patterns (None: all), tests). The tests are fast, need no
# trained model and run in-process: mutmut 3 records which test reaches which function by running
# them once under its trampolines, and with tests that start `memaudit` subprocesses or build the
# tiny checkpoints of tests/test_adaptive.py it recorded none here (every mutant "no tests"). Slow
# tests that replay every calibration point (test_adaptive, test_sweep) are left out, and so is
# memaudit/verdict/fit.py, which only they exercise.
MODULES = {
    "budget": (["memaudit/budget.py"], None, ["tests/test_contracts.py"]),
    "schedules": (["memaudit/diffusion.py"],
                  ["memaudit.diffusion.x*Schedule*", "memaudit.diffusion.x_schedule_from_dict*",
                   "memaudit.diffusion.x_check_eps*", "memaudit.diffusion.x_check_float*"],
                  ["tests/test_contracts.py", "tests/test_diffusion.py"]),
    "stats": (["memaudit/stats.py"], None,
              ["tests/test_contracts.py", "tests/test_rule_bounds.py",
               "tests/test_stats.py::test_resampling_does_not_depend_on_the_chunk_size",
               "tests/test_stats.py::test_columns_share_their_resampled_indices",
               "tests/test_stats.py::test_the_scan_and_a_stored_point_give_the_same_statistics"]),
    "verdict": (["memaudit/verdict/scan.py", "memaudit/verdict/sequential.py", "memaudit/verdict/recovery.py"], None,
                ["tests/test_rule_bounds.py", "tests/test_stats.py::test_recovery_rule_is_data_and_the_settings_default_to_it",
                 "tests/test_stats.py::test_sweep_rejudges_stored_recovery_with_the_recovery_rule"]),
    "extraction": (["memaudit/extraction.py"], None, ["tests/test_extraction.py"]),
}

# The mutations of issue 25's table (and their kin), as (name, file, original, mutated).
ISSUE_TABLE = [
    ("count duplicate samples instead of identical pairs", "memaudit/stats.py",
     "pairs = int((sizes * (sizes - 1) // 2).sum())", "pairs = int(np.clip(sizes - 1, 0, None).sum())"),
    ("near-zero share: upper instead of lower CI bound", "memaudit/verdict/scan.py",
     "low_by_share = f_lo > th_m", "low_by_share = f_hi > th_m"),
    ("undertrained on the point estimate", "memaudit/verdict/scan.py",
     'if r_lo >= und["entropy_ratio_min"]:', 'if ev.entropy_ratio >= und["entropy_ratio_min"]:'),
    ("undertrained by the CI bound not settled", "memaudit/verdict/scan.py",
     'high entropy is not evidence of generalization", settled=True)',
     'high entropy is not evidence of generalization")'),
    ("Wilson at 90 % (z one-sided)", "memaudit/stats.py",
     "z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)", "z = NormalDist().inv_cdf(1 - (1 - confidence))"),
    ("basin Wilson CI at 90 %", "memaudit/stats.py",
     '"basin_return_rate_ci": list(wilson_interval(returned, int(a.size), confidence))',
     '"basin_return_rate_ci": list(wilson_interval(returned, int(a.size), 0.90))'),
    ("Garwood one-sided", "memaudit/stats.py",
     "    a = (1 - confidence) / 2\n    if k > 1000:", "    a = 1 - confidence\n    if k > 1000:"),
    ("budget ignores the cgroup's current usage", "memaudit/budget.py",
     "return max(0, int(limit) - current)", "return max(0, int(limit))"),
    ("pickle lets bytearray(size) through", "memaudit/adapters/safe_pickle.py",
     "if fn in (bytes, bytearray) and args and not isinstance", "if False and args and not isinstance"),
    ("longest verbatim run off by one", "memaudit/extraction.py",
     "np.maximum.at(best, r_start, c_end - c_start)", "np.maximum.at(best, r_start, c_end - c_start + 1)"),
    ("GIDD alpha_t formula", "memaudit/diffusion.py",
     "big_c = (tg + t1g + (self.vocab_size - 2) * c)", "big_c = (tg + t1g + (self.vocab_size - 1) * c)"),
    ("cosine alpha_t without eps", "memaudit/diffusion.py",
     "return (math.pi / 2) * (1 - (1 - self.eps) * t)", "return (math.pi / 2) * (1 - t)"),
    ("geometric sigma_t reversed", "memaudit/diffusion.py",
     "return self.sigma_min ** (1 - t) * self.sigma_max ** t", "return self.sigma_min ** t * self.sigma_max ** (1 - t)"),
    ("training-set comparison: branch flipped", "memaudit/stats.py",
     "if hi is not None and hi < n_train:", "if hi is not None and hi > n_train:"),
    ("training-set comparison: no-repeat branch flipped", "memaudit/stats.py",
     "    if lo is not None and lo > n_train:\n        return (f\"the model produces",
     "    if lo is not None and lo < n_train:\n        return (f\"the model produces"),
]
ISSUE_TABLE_TESTS = ["tests/test_contracts.py", "tests/test_rule_bounds.py",
                     "tests/test_extraction.py::test_longest_true_run_against_a_loop_and_hand_counts",
                     "tests/test_extraction.py::test_index_spans_meet_the_contract_against_the_oracle"]


def scratch_copy(dest: Path) -> None:
    """memaudit/, tests/ and pyproject.toml of the working tree, into dest (replaced)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in ("memaudit", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def env_for(root: Path) -> dict:
    return {**os.environ, **NO_MODELS, "PYTHONPATH": str(root)}


def issue_table(workdir: Path) -> int:
    root = workdir / "issue-table"
    scratch_copy(root)
    survived = 0
    for name, path, old, new in ISSUE_TABLE:
        f = root / path
        src = f.read_text(encoding="utf-8")
        if src.count(old) != 1:
            print(f"STALE     {name}: the original text is no longer in {path}")
            survived += 1
            continue
        f.write_text(src.replace(old, new), encoding="utf-8")
        try:
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                *ISSUE_TABLE_TESTS], cwd=root, env=env_for(root), capture_output=True, text=True,
                               timeout=900)
        finally:
            f.write_text(src, encoding="utf-8")
        killed = r.returncode != 0
        survived += not killed
        last = (r.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"{'KILLED  ' if killed else 'SURVIVED'}  {name}: {last}", flush=True)
    print(f"issue-25 table: {len(ISSUE_TABLE) - survived} of {len(ISSUE_TABLE)} killed")
    return 1 if survived else 0


def mutmut_config(files: list[str], tests: list[str]) -> str:
    def toml_list(values):
        return "[" + ", ".join(f'"{v}"' for v in values) + "]"
    return ("\n[tool.mutmut]\n"
            'source_paths = ["memaudit"]\n'
            f"only_mutate = {toml_list(files)}\n"
            f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]\n'
            'process_isolation = "fork"\n'
            "use_git_change_detection = false\n"
            # lines that start with a string literal: the continuation lines of explanations and error
            # messages. The tests assert verdicts, reasons, numbers and exit codes, not wording.
            'do_not_mutate_patterns = ["^\\\\s*f?\\"", "^\\\\s*f?\'"]\n')


STATUS = re.compile(r"^\s*(\S+):\s*(killed|survived|timeout|no tests|suspicious|segfault|skipped|not checked|"
                    r"caught by type check|check was interrupted by user)\s*$")


def run_module(name: str, workdir: Path, mutmut: str, max_children: int, fresh: bool) -> dict:
    files, patterns, tests = MODULES[name]
    root = workdir / name
    if fresh or not (root / "pyproject.toml").exists():
        scratch_copy(root)
        with open(root / "pyproject.toml", "a", encoding="utf-8") as f:
            f.write(mutmut_config(files, tests))
    start = time.monotonic()
    cmd = [mutmut, "run", "--max-children", str(max_children), *(patterns or [])]
    # mutmut 3.8.1, here: the run that generates the mutants records no test for any of them ("Stopping
    # early, because we could not find any test case"); a second run, on the generated mutants, does.
    for attempt in (1, 2):
        with open(root / f"mutmut-run-{attempt}.log", "w", encoding="utf-8") as log:   # mutmut's own output
            run = subprocess.run(cmd, cwd=root, env=env_for(root / "mutants"), stdout=log, stderr=subprocess.STDOUT)
        if run.returncode == 0:
            break
    if run.returncode != 0:
        print(f"{name}: mutmut exited {run.returncode}; see {root}/mutmut-run-*.log", file=sys.stderr)
    res = subprocess.run([mutmut, "results", "--all", "true"], cwd=root, env=env_for(root / "mutants"),
                         capture_output=True, text=True)
    counts: dict[str, int] = {}
    survivors = []
    for line in res.stdout.splitlines():
        m = STATUS.match(line)
        if not m:
            continue
        mutant, status = m.groups()
        if patterns and not any(_fnmatch(mutant, p) for p in patterns):
            continue
        counts[status] = counts.get(status, 0) + 1
        if status != "killed":
            survivors.append((mutant, status))
    return {"module": name, "counts": counts, "survivors": survivors, "seconds": time.monotonic() - start}


def _fnmatch(name: str, pattern: str) -> bool:
    import fnmatch
    return fnmatch.fnmatchcase(name.replace("ǁ", ""), pattern.replace("ǁ", ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--issue-table", action="store_true", help="the hand-applied mutations of issue 25 only")
    ap.add_argument("--modules", default=",".join(MODULES), help=f"comma-separated, of {', '.join(MODULES)}")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "memaudit-mutation")
    ap.add_argument("--max-children", type=int, default=1, help="parallel mutant runs (default 1: a shared machine)")
    ap.add_argument("--fresh", action="store_true", help="start from a new copy (drops mutmut's cached results)")
    ap.add_argument("--mutmut", default=shutil.which("mutmut") or str(Path(sys.executable).parent / "mutmut"))
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.issue_table:
        return issue_table(args.workdir)
    total: dict[str, int] = {}
    print(f"mutmut on a copy of {ROOT} under {args.workdir}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for name in args.modules.split(","):
        r = run_module(name.strip(), args.workdir, args.mutmut, args.max_children, args.fresh)
        c = r["counts"]
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
        print(f"{name:11s} killed {c.get('killed', 0):4d}  survived {c.get('survived', 0):4d}  "
              f"timed out {c.get('timeout', 0):3d}  other {sum(v for k, v in c.items() if k not in ('killed', 'survived', 'timeout')):3d}"
              f"  ({r['seconds']:.0f} s)", flush=True)
        for mutant, status in r["survivors"]:
            print(f"    {status:10s} {mutant}")
    n = sum(total.values())
    killed = total.get("killed", 0)
    print(f"{'total':11s} killed {killed} of {n} ({killed / n:.1%})" if n else "no mutants")
    print("by status: " + ", ".join(f"{k} {v}" for k, v in sorted(total.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
