"""The documentation stays true to the code: CLI reference, exit codes, report schema, links,
and the examples run."""
import json
import re
import runpy
import sys
from pathlib import Path

import pytest

from memaudit import docgen
from memaudit.report import write_report

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"


def test_cli_reference_is_up_to_date():
    expected = docgen.generate()
    current = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert current == expected, "docs/cli.md is out of date: run `python -m memaudit.docgen`"


def test_cli_reference_is_stable_across_terminals(monkeypatch):
    first = docgen.generate()
    monkeypatch.setenv("COLUMNS", "37")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert docgen.generate() == first
    assert "\x1b[" not in first


def test_cli_reference_lists_every_command():
    from typer.main import get_command

    from memaudit.cli import app

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name in get_command(app).commands:
        assert f"## `memaudit {name}`\n" in text


def test_exit_code_table_matches_the_cli():
    import memaudit.cli as cli

    table = dict(re.findall(r"^\| (\d+) \| `(EXIT_[A-Z]+)` \|", (DOCS / "exit-codes.md").read_text(), flags=re.M))
    constants = {name: getattr(cli, name) for name in dir(cli) if re.fullmatch(r"EXIT_[A-Z]+", name)}
    assert {name: int(code) for code, name in table.items()} == constants


# ------------------------------------------------------------------------------- report schema
def _schema_doc() -> str:
    return (DOCS / "report-schema.md").read_text(encoding="utf-8")


def _documented(name: str, doc: str) -> bool:
    return f"`{name}`" in doc


def test_scan_report_schema_is_documented(tmp_path):
    import pyarrow.parquet as pq

    from report_fixtures import fake_scan_result

    doc = _schema_doc()
    result = fake_scan_result()
    write_report(result, tmp_path)
    missing = []
    for name in ("samples.parquet", "tokens.parquet"):
        missing += [f"{name}:{c}" for c in pq.read_schema(tmp_path / name).names if not _documented(c, doc)]
    summary = json.loads((tmp_path / "summary.json").read_text())
    missing += [f"summary.json:{k}" for k in summary if not _documented(k, doc)]
    missing += [f"provenance:{k}" for k in summary["provenance"] if k not in doc]
    missing += [f"settings:{k}" for k in summary["settings"] if not _documented(k, doc)]
    assert missing == []


def test_profile_column_is_documented():
    from memaudit.report import tokens_table
    from report_fixtures import fake_scan_result

    result = fake_scan_result()
    result.entropy = result.entropy.repeat(2, axis=0)
    result.top1_prob = result.top1_prob.repeat(2, axis=0)
    result.t_values = [result.t_values[0], 0.1]
    names = tokens_table(result).schema.names
    assert "t_eval" in names
    assert all(_documented(c, _schema_doc()) for c in names)


def test_recovery_report_schema_is_documented(tmp_path):
    import pyarrow.parquet as pq

    from report_fixtures import fake_recovery_dir

    doc = _schema_doc()
    out = fake_recovery_dir(tmp_path / "rec")
    missing = [c for c in pq.read_schema(out / "recovery.parquet").names if not _documented(c, doc)]
    summary = json.loads((out / "summary.json").read_text())
    missing += [k for k in summary if not _documented(k, doc)]
    missing += [k for k in summary["summaries"][0] if k not in doc and k.rsplit("_", 1)[0] not in doc]
    missing += [k for k in summary["gaps"][0] if not _documented(k, doc)]
    assert missing == []


# ---------------------------------------------------------------------------------------- links
def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", md.read_text(encoding="utf-8"), flags=re.M)}


def _markdown_files():
    return sorted(DOCS.glob("*.md"))


@pytest.mark.parametrize("md", _markdown_files(), ids=lambda p: p.name)
def test_relative_links_resolve(md):
    text = md.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert broken == [], f"{md.name}: broken links {broken}"


def test_screenshot_is_small_png():
    shot = DOCS / "report-screenshot.png"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(data) < 300_000


PERF_COMMAND = re.compile(r"```|`[^`\n]*(memaudit |\.py\b|python |\.ci/run)[^`\n]*`")


def unsourced_sections(text: str) -> list[str]:
    """Sections (split at headings) that hold a table row with a figure but name no command (a
    fenced block, or inline code running memaudit, python, a .py script or .ci/run), and table rows
    still marked TODO."""
    problems = []
    for section in re.split(r"(?m)^(?=#{1,4} )", text):
        title = section.splitlines()[0] if section.strip() else "(top)"
        rows = [line for line in section.splitlines() if line.startswith("|")
                and not re.fullmatch(r"\|[-:| ]+\|", line.strip())]
        problems += [f"{title}: unmeasured row {row!r}" for row in rows if "TODO" in row]
        if any(re.search(r"\d", row) for row in rows) and not PERF_COMMAND.search(section):
            problems.append(f"{title}: figures without the command that produced them")
    return problems


def test_performance_page_has_no_unsourced_figures():
    """Each section with a table of figures names the command that produced them; no row is TODO."""
    assert unsourced_sections((DOCS / "performance.md").read_text(encoding="utf-8")) == []


def test_unsourced_figures_are_found():
    assert unsourced_sections("# P\n\nrows marked TODO are unmeasured\n\n## A\n\n| a | 3 s |\n") == [
        "## A: figures without the command that produced them"]
    assert unsourced_sections("## A\n\n`memaudit scan x`\n\n| a | TODO |\n") == ["## A: unmeasured row '| a | TODO |'"]
    assert unsourced_sections("## A\n\n`python benchmarks/bench_scan.py`\n\n| a | 3 s |\n") == []


# ------------------------------------------------------------------------------------- examples
def test_analysis_example_runs_on_a_report(tmp_path, capsys):
    from report_fixtures import fake_scan_dir

    out = fake_scan_dir(tmp_path / "scan", memorizing_share=0.5)
    module = runpy.run_path(str(EXAMPLES / "analyze_tokens.py"))
    assert module["main"]([str(out), "--top", "3"]) == 0
    printed = capsys.readouterr().out
    assert "share of tokens with H < tau" in printed and "most like stored sequences" in printed
    assert module["main"]([str(tmp_path)]) == 2


def test_api_example_runs(tmp_path, capsys):
    from report_fixtures import tiny_denoiser

    module = runpy.run_path(str(EXAMPLES / "scan_api.py"))
    result = module["audit"](tiny_denoiser(), samples=8, seed=0, out=tmp_path / "r", steps=2)
    assert result.verdict in ("memorizing", "generalizing", "inconclusive")
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"report.html", "summary.json", "samples.parquet", "tokens.parquet", "junit.xml", "summary.md"} <= names
    assert "verdict:" in capsys.readouterr().out


def test_workflow_example_uses_real_options():
    yaml = pytest.importorskip("yaml")
    from typer.main import get_command

    from memaudit.cli import app

    text = (EXAMPLES / "github-actions" / "memaudit-gate.yml").read_text(encoding="utf-8")
    workflow = yaml.safe_load(text)
    assert set(workflow["jobs"]) == {"memaudit-gate", "release"}
    assert workflow["jobs"]["release"]["needs"] == "memaudit-gate"
    commands = get_command(app).commands
    assert "scan" in commands, "the `memaudit scan` command is not registered"
    scan_opts = {o for p in commands["scan"].params for o in (*p.opts, *p.secondary_opts)}
    block = text[text.index('memaudit scan "$CHECKPOINT"'):text.index("code=$?")]
    used = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", block))
    assert used and used <= scan_opts, f"options not accepted by memaudit scan: {sorted(used - scan_opts)}"


def test_examples_compile():
    for path in EXAMPLES.rglob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
    assert sys.version_info >= (3, 10)


def test_ci_runs_the_readme_commands():
    """.ci/run must run exactly the README's system and test commands, nothing hidden."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text().splitlines()
    ci_lines = [line for line in (root / ".ci" / "run").read_text().splitlines()
                if line and not line.startswith("#")]

    def command_after(marker: str) -> str:
        index = readme.index(f"<!-- ci:{marker} -->")
        assert readme[index + 1] == "```bash"
        return readme[index + 2]

    assert command_after("system") in ci_lines
    assert command_after("test") in ci_lines
    assert ci_lines[-1] == command_after("test")
