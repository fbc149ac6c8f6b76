"""Optional sampling profiles of the services while a benchmark runs (``--profile DIR``).

py-spy attaches to each service process from outside, so the services run
unchanged; it is a developer tool, not a dependency (``pip install py-spy``).
Each profile is kept raw (one collapsed stack per line) and summarised into the
functions that hold the most samples, inclusive of what they call.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

_NOISE = re.compile(r"asyncio/|runpy|<module>|threading\.py|selectors\.py")
_PATH = re.compile(r"\s*\((?:/[^)]*?/site-packages/|/[^)]*?/python3\.\d+/|[^)]*?/(?=services/))")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(
    pids: dict[str, int], folder: Path, label: str, *, delay: float, seconds: float
) -> list[Path]:
    """Sample every service for ``seconds`` after ``delay``; returns the raw profiles."""
    program = py_spy()
    if program is None or seconds < 1:
        return []
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    await asyncio.sleep(delay)
    outputs = {name: folder / f"{label}-{name}.txt" for name in pids}
    processes = [
        await asyncio.create_subprocess_exec(
            program,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "100",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(outputs[name]),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]
    await asyncio.gather(*(p.wait() for p in processes))
    return await asyncio.to_thread(_summarise_all, list(outputs.values()))


def _summarise_all(outputs: list[Path]) -> list[Path]:
    written = [path for path in outputs if path.exists()]
    for path in written:
        path.with_suffix(".summary.txt").write_text(summarise(path))
    return written


def summarise(raw: Path, top: int = 40) -> str:
    """The functions holding the most samples, inclusive, as shares of all samples."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = {_PATH.sub(" (", frame) for frame in stack.split(";")}
        for frame in frames:
            if not _NOISE.search(frame):
                inclusive[frame] += count
    lines = [f"{raw.name}: {total} samples (100 per second of CPU)"]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"
