"""What a run logs while it trains: one metrics.csv row per epoch and TensorBoard scalars, on rank 0 only."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


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
        """Append a row (a log grows line by line; a killed run leaves its finished epochs)."""
        if not self.enabled:
            return
        new = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
