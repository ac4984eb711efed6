"""JUnit XML and Markdown summaries of a scan (memaudit.report.ci)."""
import json
import os
import xml.etree.ElementTree as ET

import pytest

from memaudit.report.ci import (GATE_NAME, junit_xml, load_summary, summary_markdown, write_junit,
                                write_summary_md)
from report_fixtures import fake_scan_dir, fake_scan_result


@pytest.fixture(scope="module")
def summaries():
    """The summary document of each verdict, as a scan's --json prints it (with timings) and as
    summary.json stores it."""
    out = {}
    for verdict, share in (("generalizing", 0.0), ("inconclusive", 0.3), ("memorizing", 0.9)):
        result = fake_scan_result(memorizing_share=share)
        assert result.verdict == verdict
        out[verdict] = json.loads(json.dumps(result.summary(include_timings=False)))
    return out


def _case(xml_bytes: bytes):
    suite = ET.fromstring(xml_bytes)
    assert suite.tag == "testsuite"
    cases = suite.findall("testcase")
    assert len(cases) == 1 and cases[0].get("name") == GATE_NAME
    return suite, cases[0]


def test_junit_generalizing_passes(summaries, tmp_path):
    path = write_junit(summaries["generalizing"], tmp_path / "junit.xml")
    suite, case = _case(path.read_bytes())
    assert list(case.iter("failure")) == [] and list(case.iter("error")) == [] and list(case.iter("skipped")) == []
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("1", "0", "0", "0")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["verdict"] == "generalizing" and props["rule.status"] == "provisional"
    assert props["mean_entropy_ci"].startswith("[")
    assert props["rule.domain"].startswith(("inside the rule's", "OUTSIDE the rule's", "the rule records no"))


def test_junit_memorizing_fails(summaries):
    suite, case = _case(junit_xml(summaries["memorizing"]))
    failure = case.find("failure")
    assert failure is not None and failure.get("type") == "memorizing"
    assert "mean entropy" in failure.get("message") or "samples" in failure.get("message")
    assert suite.get("failures") == "1"


@pytest.mark.parametrize("mode,tag,counter", [("error", "error", "errors"), ("skipped", "skipped", "skipped"),
                                              ("failure", "failure", "failures")])
def test_junit_inconclusive_mapping(summaries, mode, tag, counter):
    suite, case = _case(junit_xml(summaries["inconclusive"], inconclusive=mode))
    assert case.find(tag) is not None
    assert suite.get(counter) == "1"


def test_junit_default_for_inconclusive_is_error(summaries):
    _, case = _case(junit_xml(summaries["inconclusive"]))
    assert case.find("error").get("type") == "inconclusive"


def test_junit_rejects_unknown_mode(summaries):
    with pytest.raises(ValueError):
        junit_xml(summaries["inconclusive"], inconclusive="maybe")


def test_junit_escapes_and_is_deterministic(summaries):
    doc = dict(summaries["memorizing"], explanation='a <b>"quoted"</b> & \x07bell', checkpoint="runs/<x>&y")
    data = junit_xml(doc)
    ET.fromstring(data)                      # well-formed despite markup and a control character
    assert data == junit_xml(doc)
    assert b"time=" not in data              # no timings in summary.json: nothing time-dependent


def test_junit_time_from_json_timings(summaries):
    doc = dict(summaries["generalizing"], timings={"total_s": 1.5})
    suite, _ = _case(junit_xml(doc))
    assert suite.get("time") == "1.500"


def test_summary_markdown_content(summaries):
    md = summary_markdown(summaries["memorizing"], artifacts=["report.html", "summary.json"])
    assert md.startswith("## ❌ memaudit scan: **memorizing** (gate failed)")
    assert "| mean conditional entropy H̄ |" in md and "95% CI" in md
    assert "provisional" in md and "`report.html`" in md
    assert "nats" in md
    md_gen = summary_markdown(summaries["generalizing"])
    assert md_gen.startswith("## ✅") and "gate passed" in md_gen
    assert summary_markdown(summaries["inconclusive"]).startswith("## ⚠️")


def test_summary_markdown_escapes_table_cells(summaries):
    doc = dict(summaries["memorizing"], explanation="x | y <script>")
    md = summary_markdown(doc)
    assert "<script>" not in md and "x \\| y" in md


def test_writers_are_atomic_and_replace(summaries, tmp_path):
    target = tmp_path / "sub" / "summary.md"
    write_summary_md(summaries["generalizing"], target)
    first = target.read_text()
    write_summary_md(summaries["memorizing"], target)
    assert target.read_text() != first
    assert sorted(os.listdir(target.parent)) == ["summary.md"]    # no temporaries left behind


def test_from_a_report_directory(tmp_path):
    out = fake_scan_dir(tmp_path / "scan", memorizing_share=0.9)
    summary = load_summary(out)
    assert summary == load_summary(out / "summary.json")
    _, case = _case(junit_xml(summary))
    assert case.find("failure") is not None
