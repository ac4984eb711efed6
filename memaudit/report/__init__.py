"""Everything memaudit writes about a result, and nothing that measures it.

    tables.py          samples.parquet / tokens.parquet / summary.json bytes, provenance metadata
    files.py           REPORT_FILES, render_report, write_report, write_files (one set, all or nothing)
    html.py            the HTML kit: page shell, CSS, tables, figures, verdict palette, tokens
    batch_page.py      index.html of a scan over several checkpoints
    scan_page.py       report.html of a scan
    recovery_page.py   report.html of `memaudit recover`
    sweep_page.py      a sweep's figures and index.html (also the calibration's index.html), with its
                       own page shell and pyplot figures (only the palette and PNG writer are the kit's)
    ci.py              JUnit XML and the Markdown job summary

Data flows one way: result objects (memaudit.probe.ScanResult, memaudit.recovery.RecoveryResult)
hold results; the writers here read them and never the other way round.
"""
from .ci import batch_markdown, fmt_ci, junit_xml, junit_xml_many, load_summary, summary_markdown, write_junit, write_summary_md
from .files import (REPORT_FILES, html_bytes, recovery_files, render_report, write_files, write_recovery_report,
                    write_report)
from .recovery_page import render_recovery_html, write_recovery_html
from .scan_page import render_scan_html, write_scan_html
from .tables import (METADATA_KEY, json_bytes, parquet_bytes, provenance_metadata,
                     read_metadata, samples_table, summary_document, tokens_table)

__all__ = ["METADATA_KEY", "REPORT_FILES", "batch_markdown", "fmt_ci", "html_bytes", "json_bytes", "junit_xml", "junit_xml_many", "load_summary",
           "parquet_bytes", "provenance_metadata", "read_metadata", "render_recovery_html", "render_report",
           "render_scan_html", "samples_table", "summary_document", "summary_markdown", "tokens_table",
           "write_files", "write_junit", "write_recovery_report", "recovery_files", "write_recovery_html", "write_report", "write_scan_html",
           "write_summary_md"]
