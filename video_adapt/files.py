"""Writing files so that nothing is ever half a file: write a temporary sibling, then `os.replace` it.

A killed process leaves either the old file or the new one (and at worst a `*.tmp<pid>*` sibling), never a
truncated checkpoint, summary or table. Every writer in the library goes through `atomic_path`.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:
    import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary name beside `path` to write to; it becomes `path` when the block ends without an error.

    The temporary name keeps the suffix (`table.tmp123.png`), so writers that pick a format from it still work;
    the process id keeps concurrent writers (DDP ranks, prep workers) apart.
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _temporary(path: Path, hidden: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f"{'.' if hidden else ''}{path.stem}.tmp{os.getpid()}{path.suffix}")


class NpyWriter:
    """An .npy file filled piece by piece that appears under its name only when complete.

    The array is a memory map of a temporary sibling (so an output larger than memory, such as a long video's token
    features, streams to disk); `commit()` flushes it and renames it to `path`, `discard()` deletes it. A killed
    process leaves at worst a hidden `.<name>.tmp<pid>.npy` sibling (hidden: tools that read `*.npy` skip it),
    never a short array under the real name.
    """

    def __init__(self, path: str | os.PathLike, shape: Sequence[int], dtype: Any):
        import numpy as np
        self.path = Path(path)
        self._tmp = _temporary(self.path, hidden=True)
        self.array: np.ndarray | None = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=dtype,
                                                                  shape=tuple(shape))

    def commit(self) -> Path:
        self.array.flush()
        self.array = None  # unmapped before the rename
        os.replace(self._tmp, self.path)
        return self.path

    def discard(self) -> None:
        self.array = None
        self._tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2))


def write_csv_atomic(path: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return Path(path)


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    import torch
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_safetensors_atomic(tensors: dict[str, Any], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> Path:
    """Tensors (moved to the CPU, made contiguous) as one safetensors file."""
    from safetensors.torch import save_file
    with atomic_path(path) as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)
