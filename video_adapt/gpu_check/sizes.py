"""The sizes every check runs at: `QUICK` on the CPU (CI proves the logic), `FULL` on one H100/H200.

The full run is sized to end in about 6 minutes. `expected_s` is each
check's estimated duration on an H200 (the runner skips a check that no longer fits the budget, naming it); the
report gives the measured ones, which should replace these estimates after the first GPU run.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from video_adapt.models.methods import METHODS

AMPS = ("bf16", "fp16")


@dataclass(frozen=True)
class Sizes:
    """One run's settings. Every model is a preset of `video_adapt.models.vit` with a random backbone: these checks
    prove code paths and speed, not accuracy, and the GPU machine has no checkpoints."""

    name: str
    model: str  # the in-process checks: method steps, DDP, FSDP, compile, SDPA kernel, largest batch
    frames: int
    img_size: int
    batch: int  # clips per step of the method checks (one fixed batch, `steps` steps)
    steps: int = 20
    lr: float = 1e-3  # AdamW, tuned weights of the parameter-efficient methods
    full_lr: float = 1e-4  # AdamW, full fine-tuning
    classes: int = 10
    # video-adapt train on a generated store (data_prep.synthetic: classes, training and validation videos per
    # class, frame size, frames per video)
    store: tuple[int, int, int, int, int] = (4, 4, 2, 32, 8)
    cli_model: str = "vit_nano_patch8_32"
    cli_frames: int = 4
    cli_img_size: int = 32
    cli_batch: int = 4
    cli_workers: int = 0
    ddp_batch: int = 4  # the global batch, split over the processes
    ddp_steps: int = 3
    compile_backend: str = "inductor"
    compile_batch: int = 2
    timing_iters: int = 5
    largest_start: int = 1
    largest_limit: int = 2
    bench_model: tuple[str, ...] = ()  # tools/bench_model.py arguments (the check adds --device, --methods, --json)
    bench_model_methods: tuple[str, ...] = METHODS
    bench_data: tuple[str, ...] = ("--smoke",)  # tools/bench_data.py arguments (the check adds --device, --json)
    bench_e2e: tuple[str, ...] = ("--smoke",)  # tools/bench_e2e.py arguments (the check adds --device, --json)
    expected_s: dict[str, float] = field(default_factory=dict)  # check name -> estimated seconds

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def expected(self, check: str) -> float:
        """The estimated seconds of a check; a method check is named `steps <method> <amp>`."""
        key = "steps" if check.startswith("steps ") else check.split(" ")[0]
        return self.expected_s.get(key, 0.0)


QUICK = Sizes(
    name="quick",
    model="vit_nano_patch8_32", frames=4, img_size=32, batch=4,
    steps=10,  # the logic, at half the GPU run's 20 steps: CI shares 2 cores
    compile_backend="aot_eager",  # inductor's C++ build takes ~80 s on 2 CPU cores; dynamo and AOTAutograd still run
    bench_model=("--sizes", "tiny", "--forward-only", "--frames", "2", "--img-size", "32", "--batch", "1",
                 "--steps", "1", "--in-process", "--amp", "bf16"),
    bench_model_methods=("full", "adaptformer"),
)

# ViT-B 16x224, the size the goals are set at; the H200 estimates add up to about 330 s
FULL = Sizes(
    name="full",
    model="vit_base_patch16_224", frames=16, img_size=224, batch=4,
    store=(4, 12, 4, 96, 24),  # ~5 MB of JPEG frames
    cli_model="vit_base_patch16_224", cli_frames=16, cli_img_size=224, cli_batch=8, cli_workers=4,
    compile_batch=8, timing_iters=10, largest_start=16, largest_limit=1024,
    bench_model=("--sizes", "base", "--forward-only", "--frames", "16", "--img-size", "224", "--batch", "32",
                 "--steps", "5", "--amp", "bf16", "--check-flash"),
    bench_data=("--videos", "16", "--protocols", "adaptformer", "--codecs", "jpeg", "--workers", "0", "8",
                "--min-clips", "128"),
    bench_e2e=("--model", "vit_small_patch16_224", "--img-size", "224", "--batch", "16", "--videos", "64",
               "--epochs", "3", "--workers", "8", "--amp", "bf16"),
    expected_s={"steps": 2, "decode": 5, "train_cli": 20, "ddp": 20, "sdpa": 5, "compile": 50, "fsdp": 10,
                "bench_model": 60, "largest_batch": 40, "bench_data": 40, "bench_e2e": 45},
)

SIZES = {s.name: s for s in (QUICK, FULL)}
