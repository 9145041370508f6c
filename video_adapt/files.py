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
from typing import Any, Iterator, Sequence


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary name beside `path` to write to; it becomes `path` when the block ends without an error.

    The temporary name keeps the suffix (`table.tmp123.png`), so writers that pick a format from it still work;
    the process id keeps concurrent writers (DDP ranks, prep workers) apart.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
