"""Print the pins of requirements.txt that belong in the image.

``python deploy/image/runtime_requirements.py requirements.txt not-in-image.txt``
keeps every ``name==version`` line of the first file whose distribution is not
named in the second. The Dockerfile installs the result with ``--no-deps`` and
then runs ``pip check``, so a runtime dependency left out by mistake fails the build.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def normalize(name: str) -> str:
    """PEP 503 name: case, dots, dashes and underscores do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: str) -> dict[str, str]:
    """``normalized name -> whole line`` for every pinned requirement."""
    found: dict[str, str] = {}
    for raw in requirements.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.fullmatch(line)
        if match is None:
            raise ValueError(f"requirements line {line!r} is not pinned as name==version")
        found[normalize(match.group(1))] = line
    return found


def excluded(listing: str) -> set[str]:
    """Normalized names of a one-per-line list, comments and blank lines ignored."""
    return {
        normalize(line.split("#", 1)[0].strip())
        for line in listing.splitlines()
        if line.split("#", 1)[0].strip()
    }


def runtime_pins(requirements: str, listing: str) -> list[str]:
    """The pinned lines that go into the image, refusing names the listing cannot match."""
    pinned = pins(requirements)
    left_out = excluded(listing)
    unknown = sorted(left_out - set(pinned))
    if unknown:
        raise ValueError(f"not-in-image names absent from requirements.txt: {unknown}")
    return [line for name, line in sorted(pinned.items()) if name not in left_out]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: runtime_requirements.py REQUIREMENTS NOT_IN_IMAGE", file=sys.stderr)
        return 2
    requirements, listing = (Path(arg).read_text() for arg in argv)
    print("\n".join(runtime_pins(requirements, listing)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
