"""Regenerate docs/report-screenshot.png from a real scan, so the picture cannot go stale silently.

    python benchmarks/report_screenshot.py [--out docs/report-screenshot.png] [--samples 64]

Scans the memorizing reference model (trained into the cache on first use, memaudit.reference)
with the default rule, renders its report.html in headless Chromium (Debian's `chromium`, or
$MEMAUDIT_CHROMIUM) and writes the PNG with two text chunks: `memaudit-rule` (name, version and
the first 16 hex digits of the rule file's sha256) and `memaudit-command` (how it was made).
tests/test_doc_claims.py fails when the rule named in the picture is not the default rule any more,
which is the moment to run this script again.
"""
from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_chunks(data: bytes):
    """(type, payload) of each chunk of a PNG file."""
    if data[:8] != PNG_MAGIC:
        raise ValueError("not a PNG file")
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        yield kind.decode("ascii"), data[pos + 8:pos + 8 + length]
        pos += 12 + length


def png_text(data: bytes) -> dict[str, str]:
    """The tEXt chunks of a PNG file, as {keyword: text}."""
    out = {}
    for kind, payload in png_chunks(data):
        if kind == "tEXt":
            key, _, value = payload.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
    return out


def with_text(data: bytes, text: dict[str, str]) -> bytes:
    """The PNG with tEXt chunks added right after its header chunk (IHDR)."""
    (ihdr_len,) = struct.unpack(">I", data[8:12])
    cut = 8 + 12 + ihdr_len
    chunks = b""
    for key, value in text.items():
        payload = key.encode("latin-1") + b"\0" + value.encode("latin-1")
        chunks += struct.pack(">I", len(payload)) + b"tEXt" + payload + \
            struct.pack(">I", zlib.crc32(b"tEXt" + payload) & 0xFFFFFFFF)
    return data[:cut] + chunks + data[cut:]


def rule_stamp(rule) -> str:
    return f"{rule.name} v{rule.version} {rule.sha256[:16]}"


def chromium() -> str:
    override = os.environ.get("MEMAUDIT_CHROMIUM")
    for name in ([override] if override else ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("headless Chromium not found: apt-get install -y chromium, or set MEMAUDIT_CHROMIUM")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "report-screenshot.png")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", help="scan this checkpoint instead of the memorizing reference model")
    args = ap.parse_args(argv)

    import memaudit
    from memaudit.reference import ensure_reference_models
    from memaudit.report import write_report
    from memaudit.verdict import load_rule

    binary = chromium()
    checkpoint = args.checkpoint or ensure_reference_models(["memorizing"])["memorizing"]
    result = memaudit.scan(checkpoint, samples=args.samples, seed=args.seed, show_progress=False, adaptive=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_report(result, tmp / "scan")
        png = tmp / "shot.png"
        cmd = [binary, *FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--screenshot={png}",
               "--window-size=1100,1400", (tmp / "scan" / "report.html").resolve().as_uri()]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HOME": str(tmp)})
        if run.returncode != 0 or not png.exists():
            sys.exit(f"chromium failed ({run.returncode}): {run.stderr[-2000:]}")
        data = png.read_bytes()
    stamp = {"memaudit-rule": rule_stamp(load_rule()),
             "memaudit-command": f"python benchmarks/report_screenshot.py --samples {args.samples} --seed {args.seed}"
                                 + (f" --checkpoint {args.checkpoint}" if args.checkpoint else "")
                                 + f" ({'the given checkpoint' if args.checkpoint else 'memorizing reference model'}; "
                                   f"verdict {result.verdict}, reason {result.reason})"}
    args.out.write_bytes(with_text(data, stamp))
    print(f"{args.out}: {len(data):,} bytes; {stamp['memaudit-rule']}; {result.verdict} ({result.reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
