"""Reading the end of server log files for failure messages."""

from __future__ import annotations

from collections import deque
from pathlib import Path


def tail_file(path: Path | str | None, lines: int = 60) -> str:
    """Last ``lines`` lines of a text file, or a short note when it cannot be read."""
    if path is None:
        return "<no log file>"
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines)).rstrip("\n") or "<log is empty>"
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
