"""report.html as a browser shows it: headless Chromium (Debian's `chromium`) loads the page from disk."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.trust.helpers import cli, run
from tests.trust.test_report import GATED

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_chromium_renders_the_summary_first(tmp_path: Path) -> None:
    """The DOM Chromium builds from report.html: summary (outcome, why, change, rollback, approval with who and
    what was shown, verification) before the timeline; no request leaves the file."""
    assert CHROMIUM is not None
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "gated.yaml").write_text(textwrap.dedent(GATED).lstrip())
    bundle = run(tmp_path, "gated", "--param", "note=fail", code=12)
    cli(tmp_path, "approve", bundle.name, "ok_to_write", "--by", "alice", "--note", "diff checked", check=0)
    cli(tmp_path, "resume", bundle.name, check=10)
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                           (bundle / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    text = " ".join(re.sub(r"<[^>]+>", " ", dom.split("</style>", 1)[1]).split())
    summary = text[text.index("Summary"):text.index("Timeline")]
    for fact in ("BUSINESS_REJECT (exit 10)", "step 'confirm' failed", "What changed write", "Rolled back undo ok",
                 "approved by alice", "shown: “write out.txt with fail?”", "note: diff checked",
                 "hash-chained records", "not signed"):
        assert fact in summary, fact
    assert "run_started" in text[text.index("Timeline"):]
    assert not re.search(r"(src|href)=\"(https?:)?//", dom)
