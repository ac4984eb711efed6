"""report.html: content, escaping, determinism, self-containment, and a real render in headless
Chromium (Debian package `chromium`). Without a browser the render test fails when $CI is set and
is skipped otherwise; set MEMAUDIT_CHROMIUM to use another binary."""
import base64
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from memaudit.report import write_recovery_html, write_scan_html
from memaudit.report.html import REPORT_NAME, token_pieces
from report_fixtures import HOSTILE_TEXT, fake_scan_dir, tiny_scan_dir, toy_decode
from memaudit.report import write_recovery_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars"]


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(text):
    p = _Collect()
    p.feed(text)
    return p.tags


@pytest.fixture(scope="module")
def memorizing_dir(tmp_path_factory):
    return fake_scan_dir(tmp_path_factory.mktemp("mem"), memorizing_share=0.9)


@pytest.fixture(scope="module")
def memorizing_html(memorizing_dir):
    return write_scan_html(memorizing_dir).read_text(encoding="utf-8")


def test_report_has_every_part(memorizing_dir, memorizing_html):
    html = memorizing_html
    assert (memorizing_dir / REPORT_NAME).is_file()
    assert 'id="verdict"' in html and ">memorizing<" in html and "attractor_samples" in html and "domain:" in html
    assert "Provisional rule" in html and "test-rule v1 (provisional)" in html
    assert "95% CI" in html and "mean conditional entropy H̄" in html and "nats" in html
    assert "tokens the greedy dynamics changes" in html and "samples that are fixed points" in html
    assert "lowest-entropy distinct samples" in html and "generated 2 times" in html and 'class="tok id low"' in html
    assert "Provenance" in html and "model.files.model.safetensors" in html and "torch_version" in html
    imgs = [a for t, a in _tags(html) if t == "img"]
    assert len(imgs) == 2                                        # histogram + heat map
    for a in imgs:
        assert a["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(a["src"].split(",", 1)[1])[:8] == PNG_MAGIC


def test_report_escapes_text(memorizing_html):
    assert HOSTILE_TEXT not in memorizing_html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in memorizing_html
    assert "runs/&lt;fake&gt; &amp; model" in memorizing_html
    assert "&lt;b&gt;bold&lt;/b&gt;" in memorizing_html
    assert [t for t, _ in _tags(memorizing_html) if t in ("script", "iframe", "object", "embed", "link")] == []


def test_report_is_self_contained(memorizing_html):
    for tag, attrs in _tags(memorizing_html):
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value.startswith("data:") or value.startswith("#"), (tag, attrs)
    without_images = re.sub(r'src="data:image/png;base64,[A-Za-z0-9+/=]*"', "", memorizing_html)
    assert not re.search(r"(?i)https?://|url\(|@import", without_images)
    assert "default-src 'none'" in memorizing_html


def test_report_is_deterministic(memorizing_dir, memorizing_html):
    again = write_scan_html(memorizing_dir).read_text(encoding="utf-8")
    assert again == memorizing_html
    assert sorted(p.name for p in memorizing_dir.iterdir()) == [
        REPORT_NAME, "samples.parquet", "summary.json", "tokens.parquet"]     # no temporaries left


def test_tokens_shown_as_text_with_a_decoder(tmp_path):
    out = fake_scan_dir(tmp_path / "scan", memorizing_share=0.9)
    html = write_scan_html(out, decode=toy_decode).read_text(encoding="utf-8")
    assert 'class="tok low"' in html
    assert "&lt;script&gt;</span>" in html or "&lt;script&gt;" in html
    assert "<script>" not in html


def test_token_pieces_concatenate_to_the_text():
    ids = [1, 3, 4, 7, 10, 11, 2]
    pieces = token_pieces(toy_decode, ids)
    assert "".join(pieces) == toy_decode(ids) and len(pieces) == len(ids)

    # A decoder that rewrites earlier output (a character completed by a later byte token).
    def bytes_decode(ids):
        return bytes(ids).decode("utf-8", errors="replace")

    ids = list("aé b".encode())
    pieces = token_pieces(bytes_decode, ids)
    assert "".join(pieces) == "aé b" and len(pieces) == len(ids)


def test_generalizing_and_no_text(tmp_path):
    out = fake_scan_dir(tmp_path / "gen", memorizing_share=0.0, texts=False)
    html = write_scan_html(out).read_text(encoding="utf-8")
    assert ">generalizing<" in html and "gate passed" in html
    assert "decoded text" not in html and 'class="tok id' in html


def test_report_of_a_real_scan(tmp_path):
    """Against the files memaudit.scan itself writes (tiny untrained network, two steps)."""
    out = tiny_scan_dir(tmp_path / "real")
    html = write_scan_html(out).read_text(encoding="utf-8")
    assert ">inconclusive<" in html and "too_few_samples" in html
    assert len([1 for t, a in _tags(html) if t == "img" and a["src"].startswith("data:image/png")]) == 2


# -------------------------------------------------------------------------------- browser test
def chromium_binary():
    override = os.environ.get("MEMAUDIT_CHROMIUM")
    if override:
        return shutil.which(override)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def chromium():
    binary = chromium_binary()
    if binary is None:
        message = ("headless Chromium not found: install Debian's `chromium` package "
                   "(apt-get install -y chromium) or set MEMAUDIT_CHROMIUM")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _run_chromium(binary, tmp_path, *args):
    profile = tmp_path / "chromium-profile"
    cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(tmp_path)})


def test_report_renders_in_headless_chromium(chromium, memorizing_dir, memorizing_html, tmp_path):
    url = (memorizing_dir / REPORT_NAME).resolve().as_uri()
    dom = _run_chromium(chromium, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert ">memorizing<" in dom.stdout and "lowest-entropy distinct samples" in dom.stdout
    assert dom.stdout.count('src="data:image/png;base64,') == 2
    # Nothing blocked by the page's Content-Security-Policy (which would mean a network fetch) and no
    # console errors.
    blocked = [line for line in dom.stderr.splitlines()
               if "Refused to" in line or ("CONSOLE" in line and "error" in line.lower())]
    assert blocked == []

    png = tmp_path / "shot.png"
    shot = _run_chromium(chromium, tmp_path, f"--screenshot={png}", "--window-size=1100,1400", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000


# ---------------------------------------------------------------------------------- recovery
def test_recovery_report(tmp_path):
    from report_fixtures import fake_recovery_dir

    out = fake_recovery_dir(tmp_path / "rec")
    html = write_recovery_html(out).read_text(encoding="utf-8")
    assert 'id="verdict"' in html and ">memorizing<" in html
    assert "train − test" in html
    imgs = [a for t, a in _tags(html) if t == "img"]
    assert imgs and all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    assert "<script>" not in html
    assert write_recovery_html(out).read_text(encoding="utf-8") == html


def test_in_memory_render_matches_the_files(memorizing_dir, memorizing_html):
    """render_scan_html(result) (for report/files.py's writer) gives the bytes write_scan_html builds
    from the files on disk."""
    from memaudit.report import render_scan_html
    from report_fixtures import fake_scan_result

    assert render_scan_html(fake_scan_result(memorizing_share=0.9)).decode("utf-8") == memorizing_html


def test_recovery_in_memory_render_matches_the_files(tmp_path):
    from memaudit.report import render_recovery_html
    from report_fixtures import fake_recovery_result

    result = fake_recovery_result()
    write_recovery_report(result, tmp_path)
    on_disk = write_recovery_html(tmp_path).read_bytes()
    assert render_recovery_html(result) == on_disk
