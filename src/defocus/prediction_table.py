"""The Parquet results table of a batch prediction: one row per image, appended in parts, compacted at the end.

A running job appends its rows as small part files (each written atomically) in a hidden folder beside the table,
so a job killed at any moment keeps every row it has flushed. :func:`compact_table` merges the table and its parts
into one ``predictions.parquet`` (one row per path, the newest wins) and removes the parts. :func:`read_table`
reads the table and any parts left by an interrupted job, which is what a rerun needs to skip finished images.
Needs ``pyarrow`` (the ``ray`` extra).
"""
from __future__ import annotations

import io
import logging
import os
import time
import uuid
from pathlib import Path

from . import imageio
from .atomic import leftover_temp_files

log = logging.getLogger(__name__)

TABLE_NAME = "predictions.parquet"
PARTS_DIR = ".predictions.parts"
#: Columns of the table, in order: the input, its output stem (relative to the output folder), its displayed
#: size, the in-focus fraction, the model that produced it, the error (null when it worked) and the seconds spent.
COLUMNS = ("path", "output", "width", "height", "in_focus_fraction", "model", "error", "seconds")


def table_schema():
    """The Arrow schema of the table."""
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("output", pa.string()), ("width", pa.int32()),
                      ("height", pa.int32()), ("in_focus_fraction", pa.float64()), ("model", pa.string()),
                      ("error", pa.string()), ("seconds", pa.float64())])


def rows_to_table(rows: list[dict]):
    """A list of row dicts (keys: :data:`COLUMNS`; missing keys are null) -> an Arrow table."""
    import pyarrow as pa

    return pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=table_schema())


def write_part(table, out_dir) -> Path:
    """Append ``table`` to the results of ``out_dir`` as a new part file (atomically); returns its path."""
    import pyarrow.parquet as pq

    parts = Path(out_dir) / PARTS_DIR
    parts.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    pq.write_table(table.cast(table_schema()), buf)
    # time first: parts sort in the order they were written, which is what "the newest row wins" relies on
    name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    return imageio.write_bytes_atomic(buf.getvalue(), parts / name)


def _part_files(out_dir) -> list[Path]:
    parts = Path(out_dir) / PARTS_DIR
    return sorted(parts.glob("part-*.parquet")) if parts.is_dir() else []


def read_table(out_dir):
    """All rows recorded in ``out_dir`` (the table, then unmerged parts in the order written; a path may occur
    more than once, the last row is the newest), as an Arrow table; empty when there are none. Unreadable
    files are skipped with a warning."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for path in [Path(out_dir) / TABLE_NAME, *_part_files(out_dir)]:
        if not path.is_file():
            continue
        try:
            tables.append(pq.read_table(path).select(list(COLUMNS)).cast(table_schema()))
        except Exception as e:  # a damaged file loses only its rows: their images are predicted again
            log.warning("%s: unreadable results file skipped (%s)", path, e)
    return pa.concat_tables(tables) if tables else table_schema().empty_table()


def latest_rows(table):
    """One row per path, the last occurrence (the newest) kept, sorted by path. A successful row whose output
    files a later successful row of another path wrote over is dropped: its maps are gone."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return table
    paths = table.column("path").to_pylist()
    outputs, errors = table.column("output").to_pylist(), table.column("error").to_pylist()
    last = {p: i for i, p in enumerate(paths)}
    writer = {o: i for i, (o, e) in enumerate(zip(outputs, errors)) if o is not None and e is None}
    keep = [i for i in sorted(last.values())
            if outputs[i] is None or errors[i] is not None or writer[outputs[i]] == i]
    table = table.take(pa.array(keep, pa.int64()))
    return table.take(pc.sort_indices(table, sort_keys=[("path", "ascending")]))


def done_paths(out_dir, retry_failed: bool = True) -> set[str]:
    """Paths whose newest row in ``out_dir`` is a success (with ``retry_failed=False``: any row)."""
    import pyarrow.compute as pc

    table = latest_rows(read_table(out_dir))
    if retry_failed:
        table = table.filter(pc.is_null(table.column("error")))
    return set(table.column("path").to_pylist())


def done_outputs(out_dir) -> dict[str, str]:
    """The output stems whose maps a successful row in ``out_dir`` records, each with the path that wrote them."""
    import pyarrow.compute as pc

    table = latest_rows(read_table(out_dir))
    table = table.filter(pc.is_null(table.column("error")))
    return {o: p for p, o in zip(table.column("path").to_pylist(), table.column("output").to_pylist())
            if o is not None}


def compact_table(out_dir) -> Path:
    """Merge the table and its parts into ``out_dir/predictions.parquet`` (one row per path, the newest kept,
    sorted by path; a row whose maps another path's later row wrote over is dropped, :func:`latest_rows`), written
    atomically, then remove the parts (and the temporary files of part writes a kill cut short). Returns the
    table's path (not written when there are no rows at all)."""
    import pyarrow.parquet as pq

    parts = _part_files(out_dir)
    if not parts and not (Path(out_dir) / TABLE_NAME).exists():  # nothing recorded (a run that never started)
        return Path(out_dir) / TABLE_NAME
    table = latest_rows(read_table(out_dir))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    path = imageio.write_bytes_atomic(buf.getvalue(), Path(out_dir) / TABLE_NAME)
    for part in parts:  # only after the merged table is in place: a kill here leaves duplicates, never losses
        os.unlink(part)
    for temp in leftover_temp_files(Path(out_dir) / PARTS_DIR, "part-*.parquet"):
        temp.unlink(missing_ok=True)
    try:
        (Path(out_dir) / PARTS_DIR).rmdir()
    except OSError:
        pass
    return path
