"""The README is the operator's manual: it must match what the code reads."""

from __future__ import annotations

from pathlib import Path

from services.devstack.settings_doc import all_variables

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_opens_with_the_two_commands() -> None:
    opening = README.read_text().splitlines()[:8]
    assert any(line.startswith("make run") for line in opening)
    assert any(line.startswith("make test") for line in opening)


def test_the_readme_documents_every_environment_variable_the_services_read() -> None:
    text = README.read_text()
    undocumented = sorted(
        name
        for name in all_variables()
        if f"`{name}`" not in text
        and f"`{name.replace(name.split('_')[0], '<SERVICE>', 1)}`" not in text
    )
    assert undocumented == [], "regenerate with python -m services.devstack.settings_doc"
