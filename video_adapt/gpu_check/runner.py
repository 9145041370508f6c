"""Checks and their results: each check runs whatever happened before it, and ends as pass, fail or skip with its
reason and its duration. A failure stops nothing; a check that no longer fits the time budget is skipped, named,
so that the report is always written within the budget."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from video_adapt.gpu_check.sizes import Sizes

ROOT = Path(__file__).resolve().parents[2]  # the repository: tools/ and the package beside it (checked in command)
STATUSES = ("pass", "fail", "skip")


class CheckFailure(Exception):
    """A criterion of the check failed; `figures` keeps what was measured."""

    def __init__(self, message: str, figures: dict[str, Any] | None = None):
        super().__init__(message)
        self.figures = figures or {}


class Skip(CheckFailure):
    """The check cannot run here (no CUDA, a missing optional package, no data); the message says why, and
    `figures` keeps what could be measured anyway."""


@dataclass
class Context:
    """What every check works with: the device, the sizes, a scratch folder, the prepared store, the clock."""

    device: torch.device
    sizes: Sizes
    work: Path
    store: Path | None = None
    budget_s: float | None = None  # None: no limit
    start: float = field(default_factory=time.monotonic)
    results: list["Result"] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def seconds_left(self) -> float | None:
        return None if self.budget_s is None else self.budget_s - (time.monotonic() - self.start)

    def run(self, args: Sequence[str], timeout: float | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
        """A subprocess of this Python with the repository importable, bounded by the time budget; a non-zero exit
        or a timeout fails the check with the end of its output."""
        limits = [t for t in (timeout, self.seconds_left()) if t is not None]
        limit = max(1.0, min(limits)) if limits else None
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        if not self.cuda:
            env.setdefault("OMP_NUM_THREADS", "1")
        args = [str(a) for a in args]
        if args[:2] == ["-m", "video_adapt"]:
            label = f"video-adapt {args[2]}"
        else:
            label = args[1] if args[0] == "-m" else Path(args[0]).name
        try:
            done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=limit)
        except subprocess.TimeoutExpired:
            raise CheckFailure(f"{label}: timed out after {limit:.0f} s") from None
        if done.returncode:
            raise CheckFailure(f"{label}: exit {done.returncode}: {tail(done.stderr or done.stdout)}")
        return done


def tail(text: str, lines: int = 3) -> str:
    """The last non-empty lines of a tool's output, on one line."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "(no output)"


@dataclass
class Check:
    name: str
    title: str
    run: Callable[[Context], dict[str, Any]]


@dataclass
class Result:
    name: str
    title: str
    status: str
    seconds: float
    reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_check(check: Check, ctx: Context) -> Result:
    """One check, timed; its outcome and figures, whatever it raised."""
    expected = ctx.sizes.expected(check.name)
    left = ctx.seconds_left()
    if left is not None and left < expected:
        return Result(check.name, check.title, "skip", 0.0,
                      f"time budget: {max(left, 0):.0f} s left of {ctx.budget_s:.0f}, the check takes about {expected:.0f} s")
    start = time.perf_counter()
    status, reason, figures = "pass", "", {}
    try:
        figures = check.run(ctx)
    except Skip as err:
        status, reason, figures = "skip", str(err), err.figures
    except CheckFailure as err:
        status, reason, figures = "fail", str(err), err.figures
    except Exception as err:  # a bug or a broken device path: the check fails, the run goes on
        status, reason = "fail", f"{type(err).__name__}: {one_line(err)}"
        figures = {"traceback": traceback.format_exc(limit=8).splitlines()[-12:]}
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return Result(check.name, check.title, status, time.perf_counter() - start, reason, figures)


def one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines[:3]) or type(err).__name__


def run_checks(checks: Sequence[Check], ctx: Context,
               after_each: Callable[[list[Result]], None] = lambda results: None,
               log: Callable[[str], None] = print) -> list[Result]:
    """Every check in order; `after_each` sees the results so far (the report is rewritten after each check)."""
    for check in checks:
        log(f"[gpu_check] {check.name}: {check.title} ...")
        result = run_check(check, ctx)
        ctx.results.append(result)
        log(f"[gpu_check] {check.name}: {result.status} ({result.seconds:.1f} s)"
            + (f": {result.reason}" if result.reason else ""))
        after_each(ctx.results)
    return ctx.results
