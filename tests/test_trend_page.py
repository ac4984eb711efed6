"""The trend page of a checkpoint series: colour-blind-safe, distinct marker per verdict, the first
memorizing step marked (issue 29)."""
from __future__ import annotations

import pandas as pd

from memaudit.report.batch_page import across_figure, batch_index_html, first_memorizing_step
from memaudit.report.html import VERDICT_PLOT_STYLE


def frame():
    verdicts = ["inconclusive", "generalizing", "generalizing", "memorizing", "memorizing"]
    return pd.DataFrame({
        "checkpoint": [f"run/checkpoint-{s}" for s in (100, 200, 300, 400, 500)],
        "slug": [f"checkpoint-{s}" for s in (100, 200, 300, 400, 500)],
        "step": [100, 200, 300, 400, 500], "status": ["scanned"] * 5, "verdict": verdicts,
        "reason": ["undertrained", "finite_entropy", "finite_entropy", "low_entropy_language", "repeated_samples"],
        "error": [None] * 5, "mean_entropy": [3.0, 2.0, 1.5, 0.2, 0.05], "mean_entropy_lo": [2.9, 1.9, 1.4, 0.1, 0.0],
        "mean_entropy_hi": [3.1, 2.1, 1.6, 0.3, 0.1], "entropy_ratio": [0.9, 0.6, 0.4, 0.05, 0.01],
        "basin_return_rate": [0.0, 0.1, 0.2, 0.8, 0.9], "duplicate_rate": [0.0, 0.0, 0.0, 0.3, 0.6]})


def test_palette_and_markers_differ_per_verdict():
    colours = [s["color"] for s in VERDICT_PLOT_STYLE.values()]
    markers = [s["marker"] for s in VERDICT_PLOT_STYLE.values()]
    assert len(set(colours)) == len(colours) == 3 and len(set(markers)) == 3
    # Okabe–Ito colours only (a palette designed to stay apart under colour-vision deficiencies)
    assert set(c.upper() for c in colours) <= {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00",
                                              "#CC79A7", "#000000"}


def test_first_memorizing_step_is_marked_on_the_plot():
    f = frame()
    assert first_memorizing_step(f) == 400.0
    fig = across_figure(f)
    top = fig.axes[0]
    vertical = [line for line in top.get_lines() if list(line.get_xdata()) == [400.0, 400.0]]
    assert vertical, "no vertical line at the first memorizing step"
    assert any("first memorizing: step 400" in t.get_text() for t in top.texts)
    drawn = {line.get_marker() for line in top.get_lines() if len(line.get_xdata()) == 1}
    assert {"X", "o", "^"} <= drawn
    assert "First memorizing checkpoint by training step" in batch_index_html(f, {}, {})


def test_no_memorizing_no_mark():
    f = frame()
    f["verdict"] = "generalizing"
    assert first_memorizing_step(f) is None
    assert not any("first memorizing" in t.get_text() for t in across_figure(f).axes[0].texts)
