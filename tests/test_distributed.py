"""Many checkpoints in one scan (memaudit.experiments.batch) and the task backends
(memaudit.experiments.backends): a local Ray instance started here (2 CPUs, loopback only) scans
small checkpoints and runs a 2-point mini-sweep with the same bytes as the local run; failures
become table rows with their exit codes; a worker killed mid-task is retried; the overall exit code
is the most severe; resuming skips what is already scanned; --ray without Ray is a usage error."""
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray
from typer.testing import CliRunner

from memaudit.cli import app
from memaudit.cli.errors import with_optional_values
from memaudit.experiments import SweepSettings, point_dir, sweep
from memaudit.experiments.backends import LocalBackend, RayBackend, Task
from memaudit.experiments.batch import (BatchError, CheckpointScan, BatchResult, checkpoint_slugs, expand_checkpoints,
                                        scan_many)
from memaudit.probe import ScanSettings
from test_scan import tiny_checkpoint

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("single_thread")

# Seconds per scan on the tiny checkpoints; the rule calls 16 samples too few (inconclusive, exit 3).
FAST_SCAN = ScanSettings(samples=16, steps=4)
FAST_SCAN_ARGS = ["--samples", "16", "--steps", "4"]
# The smallest sweep of tests/test_sweep.py.
MINI_SWEEP = dict(sizes=(4, 8), steps="3", batch_size=8, warmup=1, recover_n=8, steps_per_unit=8, scan_samples=8,
                  scan_steps=4, t0=(0.5,), t_profile=(), device="cpu")


@pytest.fixture(scope="module")
def ray_cluster(reference_training_done):
    # (after the session's background training: a Ray instance beside it on 2 cores crawls, 176 s
    # instead of 14 s for the first test here, measured)
    # Functions of this module (the killed-worker tasks) travel by value: workers cannot import tests/.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def training_run(tmp_path_factory) -> Path:
    """Three checkpoints of a 'training run' (random weights, seeds 0-2) and a corrupt fourth."""
    root = tmp_path_factory.mktemp("run")
    for i, step in enumerate((100, 200, 300)):
        tiny_checkpoint(root / f"checkpoint-{step}", seed=i)
    shutil.copytree(root / "checkpoint-100", root / "checkpoint-400")
    (root / "checkpoint-400" / "model.safetensors").write_bytes(b"not a safetensors file")
    return root


def tree_bytes(root: Path, skip=()) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


# ----------------------------------------------------------------------------- many checkpoints
def test_ray_scan_of_many_checkpoints_equals_the_local_scan(ray_cluster, training_run, tmp_path):
    checkpoints = [str(training_run / f"checkpoint-{s}") for s in (100, 200, 300, 400)]
    local = scan_many(checkpoints, FAST_SCAN, out=tmp_path / "local", backend=LocalBackend(), show_progress=False)
    assert local.exit_code() == 4                                   # the corrupt checkpoint: could not load
    result = runner.invoke(app, ["scan", *checkpoints, *FAST_SCAN_ARGS, "--out", str(tmp_path / "ray"), "--ray",
                                 "--json", "--junit", str(tmp_path / "junit.xml"), "--summary-md",
                                 str(tmp_path / "summary.md")])
    assert result.exit_code == 4, result.output
    assert tree_bytes(tmp_path / "local") == tree_bytes(tmp_path / "ray")
    assert sorted(os.listdir(tmp_path / "ray")) == ["checkpoint-100", "checkpoint-200", "checkpoint-300",
                                                     "index.html", "scans.parquet"]   # nothing for the corrupt one

    # The single-checkpoint scan writes the same report as the checkpoint's directory holds.
    single = runner.invoke(app, ["scan", checkpoints[1], *FAST_SCAN_ARGS, "--out", str(tmp_path / "single")])
    assert single.exit_code == 3, single.output
    assert tree_bytes(tmp_path / "single") == tree_bytes(tmp_path / "ray" / "checkpoint-200")

    table = pd.read_parquet(tmp_path / "ray" / "scans.parquet")
    assert list(table["step"]) == [100, 200, 300, 400]
    assert list(table["status"]) == ["scanned"] * 3 + ["load_failed"]
    assert list(table["verdict"][:3]) == ["inconclusive"] * 3 and pd.isna(table["verdict"][3])
    assert "safetensors" in table["error"][3]
    schema_doc = (Path(__file__).resolve().parents[1] / "docs" / "report-schema.md").read_text()
    assert [c for c in table.columns if f"`{c}`" not in schema_doc] == []
    assert (table["mean_entropy_lo"][:3] <= table["mean_entropy"][:3]).all()
    assert (table["mean_entropy"][:3] <= table["mean_entropy_hi"][:3]).all()

    doc = json.loads(result.stdout)
    assert doc["exit_code"] == 4 and [c["exit_code"] for c in doc["checkpoints"]] == [3, 3, 3, 4]
    assert doc["checkpoints"][3]["error"] and doc["checkpoints"][0]["verdict"] == "inconclusive"
    junit = (tmp_path / "junit.xml").read_text()
    assert junit.count("<testcase ") == 4 and 'tests="4"' in junit and 'type="load_failed"' in junit
    markdown = (tmp_path / "summary.md").read_text().splitlines()
    assert sum("| ⚠️ |" in line for line in markdown) == 3 and sum("| 🛑 |" in line for line in markdown) == 1
    page = (tmp_path / "ray" / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and 'href="checkpoint-300/report.html"' in page


def die_once(marker: str) -> str:
    """Kills its own worker process the first time it runs (the marker file remembers)."""
    if not os.path.exists(marker):
        Path(marker).write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return "second attempt"


def die_always() -> str:
    os.kill(os.getpid(), signal.SIGKILL)
    return "never"


def test_a_killed_worker_is_retried_then_reported(ray_cluster, tmp_path):
    outcomes = RayBackend(max_retries=1).run([Task("once", die_once, (str(tmp_path / "marker"),)),
                                              Task("always", die_always)])
    assert outcomes["once"].ok and outcomes["once"].value == "second attempt"
    assert (tmp_path / "marker").exists()
    lost = outcomes["always"]
    assert not lost.ok and lost.exit_code == 5 and "worker lost" in lost.error and lost.attempts == 2


def raise_kind(kind: str) -> str:
    """A task that fails with one kind of failure (issue 24/26: one exit-code table everywhere)."""
    from memaudit.adapters import LoadError
    from memaudit.budget import BudgetError
    from memaudit.denoiser import NonFiniteOutput

    raise {"usage": BudgetError("--batch-size 4096 cannot fit"), "load": LoadError("bad weights"),
           "nonfinite": NonFiniteOutput("NaN"), "memory": MemoryError(), "other": ValueError("x")}[kind]


FAILURE_CODES = {"usage": 2, "load": 4, "nonfinite": 5, "memory": 5, "other": 5}


def test_each_failure_kind_has_the_single_scan_code_on_ray(ray_cluster):
    tasks = [Task(kind, raise_kind, (kind,)) for kind in FAILURE_CODES]
    for backend in (LocalBackend(), RayBackend()):
        outcomes = backend.run(tasks)
        assert {k: o.exit_code for k, o in outcomes.items()} == FAILURE_CODES, backend.name


def test_gpu_tasks_on_a_cluster_without_gpus_are_a_usage_error(ray_cluster):
    from memaudit.experiments.backends import BackendError

    with pytest.raises(BackendError, match="has none"):
        RayBackend().run([Task("gpu", die_always, num_gpus=1)])


def test_the_overall_exit_code_is_the_most_severe(tmp_path):
    def entry(verdict=None, failure=0):
        return CheckpointScan("c", "c", None, summary=None if verdict is None else {"verdict": verdict},
                              error=None if verdict else "boom", failure_code=failure)

    def code(*entries, **gate):
        return BatchResult(list(entries), {}, {}).exit_code(**gate)

    gen, mem, inc = entry("generalizing"), entry("memorizing"), entry("inconclusive")
    assert code(gen, gen) == 0 and code(gen, inc) == 3 and code(inc, mem) == 1
    assert code(mem, entry(failure=4)) == 4 and code(entry(failure=4), entry(failure=5), mem) == 5
    assert code(gen, inc, fail_on="inconclusive") == 1
    assert code(mem, inc, exit_zero=True) == 0 and code(mem, entry(failure=4), exit_zero=True) == 4


def test_a_finished_checkpoint_is_not_scanned_again(training_run, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMAUDIT_CACHE", str(tmp_path / "cache"))   # the resume ledger lives there
    checkpoints = [str(training_run / f"checkpoint-{s}") for s in (100, 200)]
    out = tmp_path / "out"
    first = scan_many(checkpoints, FAST_SCAN, out=out, show_progress=False, resume=True)
    assert [s.reused for s in first.scans] == [False, False]
    assert [s.reused for s in scan_many(checkpoints, FAST_SCAN, out=tmp_path / "o2", show_progress=False).scans] \
        == [False, False]                                           # reuse is opt-in
    before = {k: v for k, v in tree_bytes(out).items() if "/" in k}
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    again = scan_many(checkpoints, FAST_SCAN, out=out, show_progress=False, resume=True)
    assert [s.reused for s in again.scans] == [True, True]
    assert {k: v for k, v in tree_bytes(out).items() if "/" in k} == before   # the reports are untouched
    assert list(pd.read_parquet(out / "scans.parquet")["reused"]) == [True, True]
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items() if p.parent != out)

    # Other settings, or other weights in a checkpoint, are scanned again.
    other_seed = scan_many(checkpoints, ScanSettings(samples=16, steps=4, seed=1), out=out, show_progress=False,
                           resume=True)
    assert [s.reused for s in other_seed.scans] == [False, False]
    moved = tmp_path / "moved"
    shutil.copytree(training_run / "checkpoint-200", moved / "checkpoint-200")
    scan_many([str(moved / "checkpoint-200")], FAST_SCAN, out=tmp_path / "m", show_progress=False, resume=True)
    tiny_checkpoint(moved / "checkpoint-200", seed=7)               # retrained in place: new file hashes
    rescanned = scan_many([str(moved / "checkpoint-200")], FAST_SCAN, out=tmp_path / "m", show_progress=False,
                          resume=True)
    assert [s.reused for s in rescanned.scans] == [False]


def test_checkpoint_lists_globs_and_slugs(training_run, tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text(f"# the run\n{training_run / 'checkpoint-300'}\n\norg/model@v1\n")
    found = expand_checkpoints([str(training_run / "checkpoint-*")], listed)
    assert found == [str(training_run / f"checkpoint-{s}") for s in (100, 200, 300, 400)] + ["org/model@v1"]
    assert expand_checkpoints([str(tmp_path / "nothing-*")]) == [str(tmp_path / "nothing-*")]   # then exit 4
    with pytest.raises(BatchError, match="missing argument"):
        expand_checkpoints([], None)
    a, b = tmp_path / "runs" / "a" / "checkpoint-1", tmp_path / "runs" / "b" / "checkpoint-1"
    for p in (a, b):
        p.mkdir(parents=True)
    assert checkpoint_slugs([str(a), str(b), "org/model@v1"]) == {str(a): "a-checkpoint-1", str(b): "b-checkpoint-1",
                                                                  "org/model@v1": "org-model-v1"}
    unmatched = runner.invoke(app, ["scan", str(training_run / "checkpoint-100"), str(tmp_path / "nothing-*"),
                                    *FAST_SCAN_ARGS])
    assert unmatched.exit_code == 4 and "Traceback" not in unmatched.output   # a failed row, not dropped
    one_glob = runner.invoke(app, ["scan", str(training_run / "checkpoint-[12]00"), *FAST_SCAN_ARGS, "--out",
                                   str(tmp_path / "g")])                  # one quoted glob: several checkpoints
    assert one_glob.exit_code == 3, one_glob.output
    assert list(pd.read_parquet(tmp_path / "g" / "scans.parquet")["slug"]) == ["checkpoint-100", "checkpoint-200"]
    missing_list = runner.invoke(app, ["scan", "--from-list", str(tmp_path / "absent.txt")])
    assert missing_list.exit_code == 2 and "cannot read --from-list" in missing_list.output


def test_the_task_view_counts_and_lists_what_matters_now():
    from memaudit.experiments.backends import VIEW_PENDING_ROWS, TaskOutcome, TaskView

    view = TaskView([f"c{i}" for i in range(20)], enabled=False)
    view.running("c0")
    view.running("c1")
    view.finished(TaskOutcome("c1", error="boom", exit_code=5))
    view.running("c2")
    view.finished(TaskOutcome("c2", value={}))
    assert view.counts() == {"pending": 17, "running": 1, "done": 1, "failed": 1}
    rows = view.render().columns[0]._cells
    assert rows[:2] == ["c0", "c1"] and len(rows) == 2 + VIEW_PENDING_ROWS + 1 and "c2" not in rows


def test_a_bare_ray_flag_means_a_local_instance():
    assert with_optional_values(["scan", "a", "b", "--ray"]) == ["scan", "a", "b", "--ray", "local"]
    assert with_optional_values(["scan", "--ray", "a", "b"]) == ["scan", "--ray", "local", "a", "b"]
    assert with_optional_values(["sweep", "--ray", "auto"]) == ["sweep", "--ray", "auto"]
    assert with_optional_values(["scan", "--ray", "ray://head:10001", "a"]) == ["scan", "--ray", "ray://head:10001",
                                                                                "a"]
    assert with_optional_values(["scan", "--ray", "10.0.0.2:6379"]) == ["scan", "--ray", "10.0.0.2:6379"]


def test_without_ray_nothing_imports_it(training_run):
    """A scan of several checkpoints without --ray runs in this process and never imports Ray."""
    import subprocess

    code = ("import sys; from typer.testing import CliRunner; from memaudit.cli import app; "
            f"r = CliRunner().invoke(app, ['scan', {str(training_run / 'checkpoint-100')!r}, "
            f"{str(training_run / 'checkpoint-200')!r}, '--samples', '16', '--steps', '4']); "
            "print(r.exit_code, 'ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MEMAUDIT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"})
    assert proc.stdout.split() == ["3", "False"], proc.stderr[-2000:]


def test_ray_without_the_extra_is_a_usage_error_with_the_install_hint(training_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)                   # `import ray` raises ImportError
    checkpoints = [str(training_run / "checkpoint-100"), str(training_run / "checkpoint-200")]
    for args in (["scan", *checkpoints, "--ray"], ["sweep", "--out", str(tmp_path / "s"), "--ray", "auto"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "pip install 'memaudit-dlm[ray]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s" / "sweep.parquet").exists()


@pytest.mark.parametrize("command", [
    ["sweep", "--sizes", "4,8", "--steps", "3", "--out", "{tmp}/s"],
    ["calibrate", "--sources", "synthetic", "--presets", "nano", "--synthetic-sizes", "4,8", "--work", "{tmp}/s",
     "--out", "{tmp}/c"]])
def test_the_deadline_belongs_to_the_local_pool(command, tmp_path):
    """sweep and calibrate take --ray (their points go to the backend); --deadline stays local."""
    args = [a.format(tmp=tmp_path) for a in command] + ["--device", "cpu", "--ray", "--deadline", "5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--deadline works with the local pool only" in result.output
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


# ---------------------------------------------------------------------------------- mini-sweep
def test_ray_mini_sweep_equals_the_local_sweep(ray_cluster, tmp_path):
    """A sweep on Ray (training and evaluation) gives the local sweep's files byte for byte, at the
    same path (reports record it). Only the run's wall-clock records differ: sweep.json, the
    timings in point.json and each checkpoint's training_timing.json (kept out of config.json,
    whose hash the reports record); and trainer_state.pt, the --resume archive, which no scan or
    report reads (torch's pickle archive of the optimizer state is not byte-stable across processes)."""
    settings = SweepSettings(**MINI_SWEEP)
    local = sweep(settings, tmp_path / "sweep", workers=1, show_progress=False, plots=False)
    shutil.move(str(tmp_path / "sweep"), str(tmp_path / "local"))
    on_ray = sweep(settings, tmp_path / "sweep", show_progress=False, plots=False, backend=RayBackend())
    assert not local.failed and not on_ray.failed and sorted(on_ray.ran) == [4, 8]
    skip = ("point.json", "sweep.json", "training_timing.json", "trainer_state.pt")
    local_files, ray_files = tree_bytes(tmp_path / "local", skip), tree_bytes(tmp_path / "sweep", skip)
    assert local_files.keys() == ray_files.keys()
    assert [k for k in local_files if local_files[k] != ray_files[k]] == []
    for n in (4, 8):
        docs = [json.loads((point_dir(d, n) / "point.json").read_text()) for d in (tmp_path / "local", tmp_path / "sweep")]
        for doc in docs:
            del doc["timings"]
            for key in ("tokens_per_second", "wall_seconds"):
                doc["training"].pop(key)
        assert docs[0] == docs[1]