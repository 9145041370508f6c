"""What a run logs while it trains: one metrics.csv row per epoch and TensorBoard scalars, on rank 0 only."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from video_adapt.files import write_csv_atomic


class RunLog:
    """CSV + TensorBoard scalars on rank 0; nothing on the other ranks."""

    def __init__(self, out_dir: Path, enabled: bool):
        self.enabled = enabled
        self.csv_path = out_dir / "metrics.csv"
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional at run time
                self.writer = None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def epoch_row(self, row: dict[str, Any]) -> None:
        """Append a row (a log grows line by line; a killed run leaves its finished epochs). A row with columns the
        file lacks (the first evaluated epoch under `train.eval_every` > 1) rewrites the file, atomically, under the
        union of the columns, the earlier rows' new cells empty; a row without some column leaves that cell empty."""
        if not self.enabled:
            return
        columns: list[str] = []
        if self.csv_path.exists():
            with self.csv_path.open(newline="") as f:
                columns = next(csv.reader(f), [])
        missing = [key for key in row if key not in columns]
        if missing:
            rows = []
            if columns:
                with self.csv_path.open(newline="") as f:
                    rows = list(csv.DictReader(f))
            columns += missing
            write_csv_atomic(self.csv_path, columns, [[old.get(k, "") for k in columns] for old in [*rows, row]])
            return
        with self.csv_path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=columns, restval="").writerow(row)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
