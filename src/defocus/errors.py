"""Error text for people: one line where a library's message spans many (tracebacks, exporter dumps)."""
from __future__ import annotations


def first_line(e: BaseException) -> str:
    """The first line of ``e``'s message; its type's name when the message is empty."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
