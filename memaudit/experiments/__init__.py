"""Experiments on reference models: the sweep (train → recover → scan per training-set size) and
the calibration of the scan's rule on sweeps. One concept per module:

    settings.py      SweepSettings, step schedules, the keys of a stored point, the CLI's list parsers
    points.py        one point's lifecycle: train / resume, recover, scan, point.json, load_points
    pool.py          the local process pool (scheduling, deadlines on an injectable clock), SweepView
    tables.py        the sweep's tidy table and its bytes; re-judging stored points under the rules
    sweep.py         sweep(): run (or resume) a sweep and write its outputs
    calibration.py   `memaudit calibrate`: the plan, the calibration table, the run and its outputs
    backends.py      where tasks run: LocalBackend (this process) and RayBackend (a Ray cluster)
    batch.py         scan_many(): many checkpoints as tasks, scans.parquet, index.html
    resume.py        --resume: this user's ledger outside --out, the only thing that lets a report be reused

The figures and index.html pages are memaudit.report.sweep_page; the rule fitting is
memaudit.verdict.fit.
"""
from .backends import LocalBackend, RayBackend, Task, TaskBackend, TaskOutcome
from .batch import BatchResult, scan_many
from .calibration import (CalibrationPlan, plan_from_options, read_table, regenerate, run_calibration,
                          table_rows, write_table)
from .points import load_points, point_dir, run_point
from .settings import (SweepError, SweepSettings, auto_steps, parse_float_list, parse_int_list,
                       settings_from_dict, steps_schedule)
from .sweep import SweepResult, sweep
from .tables import build_table, current_recovery_decision, current_scan_decision, point_record

__all__ = ["BatchResult", "LocalBackend", "RayBackend", "Task", "TaskBackend", "TaskOutcome", "scan_many",
           "CalibrationPlan", "SweepError", "SweepResult", "SweepSettings", "auto_steps", "build_table",
           "current_recovery_decision", "current_scan_decision", "load_points", "parse_float_list",
           "parse_int_list", "plan_from_options", "point_dir", "point_record", "read_table", "regenerate",
           "run_calibration", "run_point", "settings_from_dict", "steps_schedule", "sweep", "table_rows",
           "write_table"]
