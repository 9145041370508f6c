"""How much memory a training step needs, and so which batch fits on which GPU, without that GPU.

What the estimate promises: the bytes a training step (bf16 autocast, AdamW) must hold at the start of its
backward, whichever kernels run it. That is the model's state (weights and buffers; gradients and AdamW's two
moments of what trains), the input batch, and every tensor autograd saves for the backward, counted with
`torch.autograd.graph.saved_tensors_hooks` (distinct storages). Under activation checkpointing the saved tensors
are the blocks' inputs, and the backward re-runs one block at a time, so one block's saved tensors are added.
These are fixed by the model's ops and shapes, not by which GEMM, convolution or attention kernels the CPU runs, and
are exactly linear in batch and depth for a ViT: a 2- and a 3-block model at batches 2 and 3 give them for any
depth and batch, so a ViT-H estimate costs CPU minutes, not a GPU.

What it leaves out: kernel temporaries and workspaces, the gradients flowing through the backward, the optimizer
step's temporaries and allocator fragmentation. They depend on the kernels (oneDNN's AMX kernels allocate other
temporaries than its AVX-512 ones; a GPU's differ again), so `largest_batch` covers them with a reserve and a slack.
`peak_step_bytes` measures the true peak on this CPU with its own kernels, temporaries included, as a cross-check:
it is never below the estimate.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

GiB = 2**30


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset the process's peak RSS (Linux: clear_refs 5) and return the current RSS, so that what ran before (an
    earlier run of a grid in the same process, building models) is not mistaken for what follows. Elsewhere the
    peak cannot be reset and `peak_rss` stays the process's lifetime peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_bytes("VmRSS")
    except (OSError, RuntimeError):
        return 0


def peak_rss() -> int:
    """The process's peak resident memory in bytes since start or the last `reset_peak_rss`."""
    try:
        return _status_bytes("VmHWM")
    except (OSError, RuntimeError):
        import resource
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _storage_bytes(tensors) -> int:
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def state_bytes(model: nn.Module) -> int:
    """Weights and buffers, plus a gradient and AdamW's two moments for each trainable tensor (in its own dtype)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return (sum(p.numel() * p.element_size() for p in model.parameters())
            + sum(b.numel() * b.element_size() for b in model.buffers())
            + 3 * sum(p.numel() * p.element_size() for p in trainable))


def _labels(clips: torch.Tensor) -> torch.Tensor:
    return torch.zeros(clips.shape[0], dtype=torch.long, device=clips.device)


def _loss(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
    with torch.autocast(clips.device.type, dtype=amp, enabled=amp is not None):
        return nn.functional.cross_entropy(model(clips).float(), labels)


def _saved_storages(model: nn.Module, clips: torch.Tensor, amp: torch.dtype | None,
                    units: list[nn.Module] | None = None) -> tuple[int, list[int]]:
    """Bytes of the distinct storages autograd saves in a training forward, and of those first saved inside each of
    `units` other than the unit's input."""
    labels = _labels(clips)
    counted = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers(), clips, labels)}
    kept: dict[int, torch.UntypedStorage] = {}  # holding the storage keeps its address from being reused
    inside: list[tuple[set[int], dict[int, int]]] = []  # (storages to leave out, storages first saved here)
    per_unit: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in counted:
            if inside and ptr not in kept and ptr not in inside[-1][0]:
                inside[-1][1][ptr] = storage.nbytes()
            kept[ptr] = storage
        return tensor.detach()  # the tensor itself would tie an output to its grad_fn: a cycle the gc cannot see

    def enter(_, args) -> None:
        inside.append(({a.untyped_storage().data_ptr() for a in args if torch.is_tensor(a)}, {}))

    def leave(*_) -> None:
        per_unit.append(sum(inside.pop()[1].values()))

    hooks = [h for u in units or [] for h in (u.register_forward_pre_hook(enter), u.register_forward_hook(leave))]
    was_training = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = _loss(model, clips, labels, amp)
        total = sum(storage.nbytes() for storage in kept.values())
        del loss  # the graph held the storages while they were counted
        kept.clear()
        return total, per_unit
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)


def saved_activation_bytes(model: nn.Module, clips: torch.Tensor, amp: torch.dtype | None = torch.bfloat16) -> int:
    """Bytes of the distinct storages autograd saves for the backward in a training forward of `model` on `clips`
    (cross-entropy loss), the parameters, buffers, clips and labels left out (they are state and input).

    Counted: activations, autocast's low-precision copies of the weights, attention's output and log-sum-exp rows
    (the CPU, like a GPU, picks flash attention, which keeps no N x N matrix; it chooses by dtype, shape and
    dropout, never by instruction set, and falls back to the N x N math only with attention dropout). Under
    non-reentrant activation checkpointing this outer hook sees the checkpoints' saved inputs, not what the blocks
    save inside (checkpoint's own hook takes those and drops them).
    """
    return _saved_storages(model, clips, amp)[0]


def recomputed_block_bytes(model: nn.Module, clips: torch.Tensor, amp: torch.dtype | None = torch.bfloat16) -> int:
    """What the backward holds again while it re-runs one checkpointed block: the most any block of `model` saves
    beyond its input (which the checkpoint already keeps), counted with checkpointing off."""
    with _checkpointing(model, False):
        return max(_saved_storages(model, clips, amp, list(model.blocks))[1], default=0)


def counted_step_bytes(model: nn.Module, clips: torch.Tensor, amp: torch.dtype | None = torch.bfloat16) -> int:
    """What a training step of `model` on `clips` holds at the start of its backward, whichever kernels run it: the
    state, the input and the saved activations, plus one block recomputed when the model checkpoints its blocks."""
    count = state_bytes(model) + _storage_bytes([clips, _labels(clips)]) + saved_activation_bytes(model, clips, amp)
    if getattr(getattr(model, "cfg", None), "use_checkpoint", False):
        count += recomputed_block_bytes(model, clips, amp)
    return count


@contextmanager
def _checkpointing(model: nn.Module, on: bool) -> Iterator[None]:
    cfg = model.cfg
    model.cfg = replace(cfg, use_checkpoint=on)
    try:
        yield
    finally:
        model.cfg = cfg


@contextmanager
def _quiet_profiler(drop: bytes = b"USDT:") -> Iterator[None]:
    """Kineto writes a `USDT: ... profiler_start` / `profiler_stop` line to the process's stderr for every profile,
    at a log level above its errors (so KINETO_LOG_LEVEL cannot drop them alone). Send the C-level stdout and stderr
    to files around the profiled region, then pass every line through except those."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    sinks = {fd: tempfile.TemporaryFile() for fd in saved}
    try:
        for fd, sink in sinks.items():
            os.dup2(sink.fileno(), fd)
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        for fd, sink in sinks.items():
            sink.seek(0)
            kept = [line for line in sink.read().splitlines(keepends=True) if not line.startswith(drop)]
            sink.close()
            text = b"".join(kept)
            while text:
                text = text[os.write(fd, text):]


def peak_step_bytes(model: nn.Module, clips: torch.Tensor, amp: torch.dtype | None = torch.bfloat16) -> tuple[int, int]:
    """Peak live tensor bytes of a training step of `model` on `clips` (cross-entropy, AdamW) with this CPU's kernels,
    in two phases: (forward + backward, optimizer step), from the PyTorch profiler's memory timeline.

    A cross-check of the estimate, not its source: it includes the temporaries of whichever kernels run, which differ
    between CPUs (and from a GPU's). The forward + backward figure is activations and temporaries at their peak plus
    all the gradients at once (each is dropped as it is made and its full size added), so it is at most the
    gradients above the true peak and never below the estimate's count. A first step creates the optimizer state, so
    the profiled phases find it already there.
    """
    from torch.profiler import ProfilerActivity, profile

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, foreach=True)
    labels = _labels(clips)
    model.train()

    def forward_backward() -> None:
        _loss(model, clips, labels, amp).backward()

    def update() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def resident() -> int:
        """What is alive when a phase starts (the profiler's timeline lists only the tensors a phase touches)."""
        return _storage_bytes([*model.parameters(), *model.buffers(), clips, labels,
                               *(p.grad for p in trainable if p.grad is not None),
                               *(t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))])

    def profiled(phase: Callable[[], None]) -> int:
        with _quiet_profiler(), profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                                        with_stack=True) as prof:
            phase()
        return _peak_growth(prof)

    forward_backward()
    update()
    drops = [p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None)) for p in trainable]
    before = resident()
    try:
        growth = profiled(forward_backward)
    finally:
        for handle in drops:
            handle.remove()
    backward_peak = before + growth + sum(p.numel() * p.element_size() for p in trainable)
    forward_backward()  # the gradients the optimizer step needs
    before = resident()
    return backward_peak, before + profiled(update)


def _peak_growth(prof) -> int:
    """Highest net growth of live tensor bytes over the profiled region (creates minus destroys, in order)."""
    from torch.profiler._memory_profiler import Action
    live = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak


@dataclass(frozen=True)
class Bilinear:
    """bytes = base + L * per_block + batch * (clip + L * clip_block), for depth L."""

    base: float
    per_block: float
    clip: float
    clip_block: float

    @classmethod
    def fit(cls, counts: dict[tuple[int, int], float]) -> "Bilinear":
        """From counts[batch, blocks] at two batches and two depths (the four corners of a rectangle)."""
        (b1, b2), (l1, l2) = sorted({b for b, _ in counts}), sorted({l for _, l in counts})
        slope_1 = (counts[b2, l1] - counts[b1, l1]) / (b2 - b1)  # bytes per clip at depth l1
        slope_2 = (counts[b2, l2] - counts[b1, l2]) / (b2 - b1)
        clip_block = (slope_2 - slope_1) / (l2 - l1)
        clip = slope_1 - l1 * clip_block
        at_b1 = (counts[b1, l2] - counts[b1, l1]) / (l2 - l1)  # bytes per block at batch b1
        per_block = at_b1 - b1 * clip_block
        base = counts[b1, l1] - l1 * per_block - b1 * (clip + l1 * clip_block)
        return cls(base, per_block, clip, clip_block)

    def fixed(self, depth: int) -> float:
        return self.base + depth * self.per_block

    def per_clip(self, depth: int) -> float:
        return self.clip + depth * self.clip_block


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training step of a depth-L model holds at the start of its backward: fixed + batch x per_clip.
    Kernel temporaries and workspaces are not in it; `largest_batch` leaves room for them."""

    depth: int
    counts: Bilinear  # `counted_step_bytes` by batch and depth

    @property
    def fixed(self) -> float:
        """Bytes whatever the batch: the state and autocast's low-precision weight copies."""
        return self.counts.fixed(self.depth)

    @property
    def per_clip(self) -> float:
        """Bytes per clip: the input and its saved activations."""
        return self.counts.per_clip(self.depth)

    def total(self, batch: int) -> float:
        return self.fixed + batch * self.per_clip

    def with_state(self, counted_state: float, held_state: float) -> "MemoryEstimate":
        """The same step with the model's state held as `held_state` bytes per GPU instead of the `counted_state`
        in the count (sharded training: `video_adapt.sharding.sharded_state_bytes`); input and activations stay."""
        return replace(self, counts=replace(self.counts, base=self.counts.base - counted_state + held_state))

    def largest_batch(self, capacity: float, reserve: float = 1.5 * GiB, slack: float = 0.10) -> int:
        """The largest batch whose estimate fits in `capacity` bytes after the CUDA context and kernel workspaces
        (`reserve`), and the backward's temporaries and allocator fragmentation (`slack`, a fraction of the rest)."""
        room = (capacity - reserve) * (1 - slack) - self.fixed
        if room < 0 or self.per_clip <= 0:
            return 0
        return math.floor(room / self.per_clip)


FIT_DEPTHS = (2, 3)
FIT_BATCHES = (2, 3)  # not 1: a BatchNorm before the head (linear probing) needs two clips to train


def estimate_training_memory(build: Callable[[int], nn.Module], depth: int, num_frames: int, img_size: int,
                             amp: torch.dtype | None = torch.bfloat16) -> MemoryEstimate:
    """`counted_step_bytes` of models of FIT_DEPTHS blocks (`build(blocks)`) at FIT_BATCHES, extended to `depth`
    blocks and any batch. The counts are exactly bilinear for a ViT (every block adds the same state and the same
    saved tensors per clip), so the smallest corners suffice."""
    counts = {}
    for blocks in FIT_DEPTHS:
        torch.manual_seed(0)
        model = build(blocks)
        for batch in FIT_BATCHES:
            clips = torch.randn(batch, model.cfg.in_chans, num_frames, img_size, img_size)
            counts[batch, blocks] = counted_step_bytes(model, clips, amp)
        del model
    return MemoryEstimate(depth, Bilinear.fit(counts))
