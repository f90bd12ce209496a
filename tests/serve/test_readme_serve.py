"""The README's serve section: its runbook.yaml is valid and its example tokens identify their owners."""

from __future__ import annotations

import re

from engine.config import load_config
from engine.serve.rules import load_settings
from tests.conftest import REPO, Workspace


def _section_yaml(title: str) -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)


def test_readme_serve_config_is_valid(ws: Workspace) -> None:
    config, receiver = _section_yaml("Automated remediation")
    ws.write("runbook.yaml", config.replace("runbook_paths: [runbooks]", f"runbook_paths: [{REPO / 'runbooks'}]"))
    checked = ws.cli("triggers", "check")
    assert checked.code == 0, checked.text
    settings = load_settings(load_config(cwd=ws.root))
    assert settings.identify("example-alice-token") == "alice"
    assert settings.identify("example-alertmanager-token") == "alertmanager"
    assert settings.listen == "127.0.0.1:8787"
    assert "/hooks/alertmanager" in receiver and "send_resolved: true" in receiver
