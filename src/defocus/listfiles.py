"""Text list files (split files, stem lists, input lists): one entry per line."""
from __future__ import annotations

from pathlib import Path


def parse_list(text: str) -> list[str]:
    """The entries of a list in file order: lines stripped of surrounding white space; blank lines and lines
    starting with ``#`` are skipped. ``#`` inside a line is part of the entry (file names may contain it)."""
    lines = text.removeprefix("\ufeff").splitlines()
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]


def read_list_lines(path) -> list[str]:
    """The entries of the list file at ``path`` (UTF-8, a byte-order mark ignored; see :func:`parse_list`)."""
    return parse_list(Path(path).read_text(encoding="utf-8-sig"))


def read_list_stems(path, suffixes=None) -> list[str]:
    """File stems listed in a list file (split files, evaluation lists), in file order.

    Entries are names or paths, with or without an extension; only the name counts, and an extension in
    ``suffixes`` (default: the readable image suffixes) is dropped. The ``<k>.bmp--<name>.jpg`` lines of the
    reference ``split.txt`` give ``<name>``.
    """
    return list_stems(read_list_lines(path), suffixes)


def list_stems(entries, suffixes=None) -> list[str]:
    """The stems of list entries (see :func:`read_list_stems`)."""
    if suffixes is None:
        from .imageio import IMAGE_SUFFIXES as suffixes
    stems = []
    for entry in entries:
        if "--" in entry:
            entry = entry.split("--", 1)[1].strip()
        name = Path(entry).name
        suffix = Path(name).suffix
        stems.append(name[: -len(suffix)] if suffix and suffix.lower() in suffixes else name)
    return stems
