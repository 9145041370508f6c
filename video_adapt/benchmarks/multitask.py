"""N tasks on one backbone: one process serving all of them (`MultiTaskPredictor`) against N separate processes
(one `Predictor` each, as N copies of `video-adapt infer` would run), on the same video files.

Each configuration runs in fresh processes (`python -m video_adapt.benchmarks.multitask worker ...`): a worker
loads its tasks, classifies one batch to warm up, says it is ready and waits. The one-process server and the N
separate processes are started together and timed in alternating rounds (one, separate, separate, one, ...), so a
busy shared host slows both alike: in a round the parent says go to every worker of one side at once and times from
go to the last worker's end; the median round counts. Throughput is videos classified for all N tasks per second
(each video is one clip: one view); memory is each worker's peak RSS (VmHWM, loading included), summed over the
separate processes. Separate workers split the machine's cores between
them (torch threads = cores // N, at least 1), so N processes do not oversubscribe the CPU.

Inputs are made here: a randomly initialised backbone file (`vit_base_patch16_224` at 8 frames by default), task
adapters with random weights in every tuned tensor (`random_adapters`: the adapters do their full work), and
footage-like VP9 sources (video_adapt.benchmarks.sources).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from video_adapt.checkpoint import load_pretrained, save_adapters
from video_adapt.data.protocol import DataProtocol
from video_adapt.files import save_safetensors_atomic
from video_adapt.models.factory import create_model
from video_adapt.models.memory import peak_rss


def random_adapters(backbone: str | Path, out: str | Path, model_name: str, method: str, num_classes: int,
                    protocol: DataProtocol, seed: int = 0, *, std: float = 0.3, **options: Any) -> Path:
    """An adapter directory of `method` on `backbone` whose every tuned tensor (and head_bn statistic) is random, as
    `video-adapt train` would write it (class names, data protocol, backbone fingerprint): zero-initialised
    adapters would hide a task that skips its own modules."""
    model = create_model(model_name, num_classes=num_classes, num_frames=protocol.num_frames,
                         img_size=protocol.img_size, tuning=method, **options)
    load_pretrained(model, backbone)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * std)
        if model.head_bn is not None:
            model.head_bn.running_mean.copy_(torch.randn(model.embed_dim, generator=g) * 0.1)
            model.head_bn.running_var.copy_(torch.rand(model.embed_dim, generator=g) + 0.5)
    names = [f"{method} class {c}" for c in range(num_classes)]
    return save_adapters(model, out, names, extra={"data": protocol.record()})


@dataclass
class Setup:
    backbone: str
    tasks: dict[str, str]  # task name -> adapter directory
    videos: list[str]


def make_setup(out: Path, methods: Sequence[str], model_name: str = "vit_base_patch16_224", num_frames: int = 8,
               img_size: int = 224, videos: int = 8, video_frames: int = 48, video_size: tuple[int, int] = (240, 320),
               classes: int = 174) -> Setup:
    """A backbone file, one adapter directory per entry of `methods` (task names t0, t1, ...) and the videos; files
    already there are reused."""
    from video_adapt.benchmarks.sources import make_sources
    out.mkdir(parents=True, exist_ok=True)
    backbone = out / f"{model_name}_{num_frames}f.safetensors"
    if not backbone.exists():
        torch.manual_seed(0)
        save_safetensors_atomic(create_model(model_name, num_classes=0, num_frames=num_frames,
                                             img_size=img_size).state_dict(), backbone)
    protocol = DataProtocol(num_frames=num_frames, img_size=img_size, test_clips=1, test_crops=1,
                            view_average="logits")
    tasks = {}
    for i, method in enumerate(methods):
        folder = out / f"t{i}_{method}"
        if not (folder / "adapter_config.json").exists():
            random_adapters(backbone, folder, model_name, method, classes, protocol, seed=i,
                            **({"head_bn": True} if method == "linear" else {}))
        tasks[f"t{i}"] = str(folder)
    sources = sorted((out / "videos").glob("*.webm"))
    if len(sources) < videos:
        (out / "videos").mkdir(exist_ok=True)
        sources = make_sources(out / "videos", videos, video_frames, *video_size)
    return Setup(str(backbone), tasks, [str(p) for p in sources[:videos]])


def worker(argv: list[str] | None = None) -> int:
    """One serving process: load, warm up on one batch, print its load time; then, for every `go` line on stdin,
    classify every video and print the figures as one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--tasks", nargs="+", required=True, help="TASK=DIR; one task runs a plain Predictor")
    parser.add_argument("--shared", action="store_true", help="serve through MultiTaskPredictor (even one task)")
    parser.add_argument("--videos", nargs="+", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from video_adapt.inference import Predictor
    from video_adapt.serving import MultiTaskPredictor, parse_tasks
    start = time.perf_counter()
    tasks, _ = parse_tasks(args.tasks)
    if args.shared:
        predictor = MultiTaskPredictor.load(tasks, args.backbone, device="cpu")
    else:
        (directory,) = tasks.values()
        predictor = Predictor.load(backbone=args.backbone, adapters=directory, device="cpu")
    predictor.predict(args.videos[:args.batch], batch_videos=args.batch)  # the timed batches' shapes, once
    print(json.dumps({"load_s": time.perf_counter() - start}), flush=True)
    while sys.stdin.readline().strip() == "go":
        start = time.perf_counter()
        results = predictor.predict(args.videos, batch_videos=args.batch)
        elapsed = time.perf_counter() - start
        failed = sum(r.error is not None for r in results)
        print(json.dumps({"predict_s": elapsed, "peak_rss": peak_rss(), "failed": failed}), flush=True)
    return 0


class _Side:
    """The worker processes of one way of serving, started together and released together."""

    def __init__(self, commands: list[list[str]]):
        self.procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                      for cmd in commands]
        self.load_s = max(self._reply(p)["load_s"] for p in self.procs)
        self.last: list[dict[str, Any]] = []

    @staticmethod
    def _reply(proc: subprocess.Popen) -> dict[str, Any]:
        line = proc.stdout.readline()
        if not line.startswith("{"):
            raise RuntimeError(f"a benchmark worker failed: {line.strip() or 'no output'} (exit {proc.poll()})")
        return json.loads(line)

    def round(self) -> float:
        """Release every worker at once; seconds until the last one is done."""
        start = time.perf_counter()
        for p in self.procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        self.last = [self._reply(p) for p in self.procs]
        return time.perf_counter() - start

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.stdin.close()
            p.wait(timeout=120)


def _worker_command(setup: Setup, tasks: dict[str, str], threads: int, shared: bool, batch: int) -> list[str]:
    return [sys.executable, "-m", "video_adapt.benchmarks.multitask", "worker", "--backbone", setup.backbone,
            "--tasks", *[f"{k}={v}" for k, v in tasks.items()], "--videos", *setup.videos,
            "--threads", str(threads), "--batch", str(batch), *(["--shared"] if shared else [])]


@dataclass
class Row:
    family: str  # the methods of the tasks, e.g. "linear" or "adaptformer"
    tasks: int
    serving: str  # "one process" | "separate processes"
    processes: int
    threads: int  # torch threads per process
    peak_rss_mb: float  # summed over processes
    load_s: float  # the slowest process's load and warm-up
    wall_s: float  # the median round
    videos_per_s: float  # videos answered for every task per second (median round)
    failed: int
    rounds_s: list[float]  # every round's wall time


def measure(setup: Setup, family: str, tasks: dict[str, str], cores: int, batch: int, rounds: int) -> list[Row]:
    """One process with every task against one process per task, on the same videos, in alternating rounds."""
    n = len(tasks)
    threads = max(1, cores // n)
    sides = {"one process": (_Side([_worker_command(setup, tasks, cores, True, batch)]), cores)}
    sides["separate processes"] = (_Side([_worker_command(setup, {k: v}, threads, False, batch)
                                          for k, v in tasks.items()]), threads)
    walls: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for r in range(rounds):
            for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                walls[name].append(sides[name][0].round())
    finally:
        for side, _ in sides.values():
            side.stop()
    rows = []
    for name, (side, per_process) in sides.items():
        wall = statistics.median(walls[name])
        rows.append(Row(family, n, name, len(side.procs), per_process,
                        round(sum(f["peak_rss"] for f in side.last) / 2**20, 1), round(side.load_s, 2), round(wall, 4),
                        round(len(setup.videos) / wall, 4), sum(f["failed"] for f in side.last),
                        [round(w, 2) for w in walls[name]]))
    return rows


MIXED = ("linear", "adaptformer", "lora", "st_adapter")


def family_methods(family: str, count: int) -> list[str]:
    """The methods of `count` tasks of a family: one method, or 'mixed' (linear, adaptformer, lora, st_adapter in
    turn)."""
    return [MIXED[i % len(MIXED)] if family == "mixed" else family for i in range(count)]


def run(out: Path, families: Sequence[str], counts: Sequence[int], *, model_name: str = "vit_base_patch16_224",
        num_frames: int = 8, img_size: int = 224, videos: int = 8, video_frames: int = 48,
        video_size: tuple[int, int] = (240, 320), batch: int = 8, rounds: int = 3,
        cores: int | None = None) -> list[Row]:
    """Every family (a method, or 'mixed' for linear, adaptformer, lora, st_adapter in turn) at every task count."""
    cores = cores or len(os.sched_getaffinity(0))
    rows = []
    for family in families:
        setup = make_setup(out / family, family_methods(family, max(counts)), model_name, num_frames, img_size, videos, video_frames, video_size)
        for n in counts:
            rows += measure(setup, family, dict(list(setup.tasks.items())[:n]), cores, batch, rounds)
            print(report(rows[-2:]), flush=True)
    return rows


def forward_rounds(setup: Setup, tasks: dict[str, str], clips: int = 2, rounds: int = 3) -> dict[str, list[float]]:
    """The model alone, in one process, interleaved rounds: every task on `clips` clips as one mixed forward
    (`every_task`: the clips once for all linear probes, once per other task), as many rows through the first task's
    own model in one forward (the cost of a batch that large without routers), and `clips` rows through each task's
    own model in turn (what separate processes do)."""
    from video_adapt.inference import Predictor
    from video_adapt.serving import MultiTaskPredictor
    multi = MultiTaskPredictor.load(tasks, setup.backbone, device="cpu")
    first = Predictor.load(backbone=setup.backbone, adapters=next(iter(tasks.values())), device="cpu")
    singles = [Predictor.load(backbone=setup.backbone, adapters=d, device="cpu").model for d in tasks.values()]
    protocol = first.protocol
    x = torch.randn(clips, 3, protocol.num_frames, protocol.img_size, protocol.img_size,
                    generator=torch.Generator().manual_seed(0))
    model = multi.model
    n = len(model.mixed) + len(model.grouped) + (1 if model.plain else 0)  # copies of the clips every_task runs
    runs = {f"every task, one mixed forward of {n * clips} rows": lambda: model.every_task(x),
            f"the first task's model, one forward of {n * clips} rows": lambda: first.model(x.repeat(n, 1, 1, 1, 1)),
            f"each task's own model, {clips} rows each": lambda: [model(x) for model in singles]}
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for run_once in runs.values():
            run_once()  # warm-up
        for _ in range(rounds):
            for name, run_once in runs.items():
                start = time.perf_counter()
                run_once()
                times[name].append(round(time.perf_counter() - start, 3))
    return times


def report(rows: list[Row]) -> str:
    head = "| tasks (methods) | serving | processes x threads | peak RSS MB | load s | wall s | videos/s |"
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        lines.append(f"| {r.tasks} ({r.family}) | {r.serving} | {r.processes} x {r.threads} | {r.peak_rss_mb:,.0f} | "
                     f"{r.load_s:.1f} | {r.wall_s:.1f} | {r.videos_per_s:.2f} |")
    return "\n".join(lines)


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


if __name__ == "__main__":
    if sys.argv[1:2] != ["worker"]:
        sys.exit("usage: python -m video_adapt.benchmarks.multitask worker ... (started by tools/bench_multitask.py)")
    sys.exit(worker(sys.argv[2:]))
