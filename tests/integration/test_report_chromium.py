"""report.html renders in a real headless Chromium: no console errors, SVG plots in the DOM, a non-blank page."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from runners.report import write_reports
from tests.integration.test_report_golden import sample_outcome

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed"),
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-extensions",
    "--hide-scrollbars",
]


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_html_report_renders(tmp_path: Path) -> None:
    from PIL import Image

    html = write_reports(sample_outcome(), tmp_path / "report", names=["html"])["html"]
    url = html.resolve().as_uri()
    dom = _chromium(["--enable-logging=stderr", "--v=0", "--dump-dom", url], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") >= 6 and "<circle" in dom.stdout
    assert "Uncaught" not in dom.stderr and "ERROR:CONSOLE" not in dom.stderr
    shot = tmp_path / "report.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", url], tmp_path)
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2000)
    hist = img.histogram()
    assert max(hist) < 0.97 * sum(hist)  # not a blank page: well under 97% of pixels share one grey level
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # plots and text, not a flat fill
