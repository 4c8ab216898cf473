"""Training logs: a CSV file (one row per logged step) and, when the ``tensorboard`` package is installed,
TensorBoard scalars."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class CSVLog:
    """Append rows of scalars to ``path``. The header is taken from the first row; later keys that were not in it
    are dropped (with a debug message). On resume, rows after the resumed step are removed first."""

    def __init__(self, path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] | None = None
        if self.path.exists() and resume_step is not None:
            self._truncate(resume_step)
        elif self.path.exists():
            self.path.unlink()

    def _truncate(self, step: int) -> None:
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            self.fields = reader.fieldnames
            rows = [r for r in reader if int(float(r.get("step", 0))) <= step]
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        """Append one row."""
        new = self.fields is None
        if new:
            self.fields = list(row)
        extra = set(row) - set(self.fields)
        if extra:
            log.debug("CSV log: dropping columns not in the header: %s", sorted(extra))
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(v) for k, v in row.items()})


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


class TensorBoardLog:
    """TensorBoard scalars under ``log_dir`` if ``torch.utils.tensorboard`` can be imported; otherwise a no-op."""

    def __init__(self, log_dir, enabled: bool = True):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed
            return
        self.writer = SummaryWriter(str(log_dir))

    def write(self, row: dict, step: int) -> None:
        """Add every numeric value of ``row`` as a scalar at ``step``."""
        if self.writer is None:
            return
        for k, v in row.items():
            if isinstance(v, (int, float)) and k != "step":
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        """Flush and close the writer."""
        if self.writer is not None:
            self.writer.close()
