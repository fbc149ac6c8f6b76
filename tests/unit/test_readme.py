"""The README is the operator's manual: it must match what the code reads."""

from __future__ import annotations

import re
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


DOCS = README.parent / "docs"


def test_the_readme_points_to_the_repositorys_own_docs_and_each_exists() -> None:
    text = README.read_text()
    assert "../shared" not in text
    linked = set(re.findall(r"\]\((docs/[^)#]+)", text))
    assert {"docs/incident.md", "docs/architecture.md", "docs/threat-model.md"} <= linked
    assert all((README.parent / path).is_file() for path in linked)


def test_every_test_the_docs_name_exists() -> None:
    defined = set()
    for path in (README.parent / "tests").rglob("test_*.py"):
        defined.update(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M))
    named = {
        name for doc in DOCS.glob("*.md") for name in re.findall(r"`(test_\w+)`", doc.read_text())
    }
    assert named, "the docs name the tests that prove each control"
    assert sorted(named - defined) == []
