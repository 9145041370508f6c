"""How much memory a training step needs, and so which batch fits on which GPU, without that GPU.

`peak_step_bytes` measures the exact peak of live tensor bytes over a training step (forward, backward, AdamW):
weights, optimizer state, input, gradients, saved activations and temporaries, from the PyTorch profiler's
memory timeline. A ViT's peak is bilinear in batch B and depth L (every block adds the same state, the same
activations per clip and the same temporaries), so measurements of 2- and 4-block models at the real clip size and
batches 2 and 6 give it for any depth and batch: a ViT-H estimate costs CPU minutes, not a GPU.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

GiB = 2**30


def peak_step_bytes(model: nn.Module, clips: torch.Tensor, amp: torch.dtype | None = torch.bfloat16) -> tuple[int, int]:
    """Peak live tensor bytes of a training step of `model` on `clips` (cross-entropy, AdamW), on the CPU, in two
    phases: (forward + backward, optimizer step). The peak of the step is the larger of the two.

    The forward + backward figure is activations and temporaries at their peak plus all the gradients at once: the
    gradients are dropped as they are made and their full size added. That bound is at most the gradients above the
    true peak, and it grows with the batch by exactly the activations' share. The true peak can sit early in the
    backward (activations) or late (gradients) depending on the batch, so it would not extrapolate from small batches.
    A first step creates the optimizer state, so the profiled phases find it already there.
    """
    from torch.profiler import ProfilerActivity, profile

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, foreach=True)
    labels = torch.zeros(clips.shape[0], dtype=torch.long, device=clips.device)
    model.train()

    def forward_backward() -> None:
        with torch.autocast(clips.device.type, dtype=amp, enabled=amp is not None):
            loss = nn.functional.cross_entropy(model(clips).float(), labels)
        loss.backward()

    def update() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def resident() -> int:
        """What is alive when a phase starts (the profiler's timeline lists only the tensors a phase touches)."""
        return _distinct_bytes([*model.parameters(), clips, labels, *(p.grad for p in trainable if p.grad is not None),
                                *(t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))])

    forward_backward()
    update()
    drops = [p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None)) for p in trainable]
    before = resident()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        forward_backward()
    for handle in drops:
        handle.remove()
    backward_peak = before + _peak_growth(prof) + sum(p.numel() * p.element_size() for p in trainable)
    forward_backward()  # the gradients the optimizer step needs
    before = resident()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        update()
    return backward_peak, before + _peak_growth(prof)


def _distinct_bytes(tensors: list[torch.Tensor]) -> int:
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


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
    def fit(cls, peaks: dict[tuple[int, int], float]) -> "Bilinear":
        """From peaks[batch, blocks] at two batches and two depths (the four corners of a rectangle)."""
        (b1, b2), (l1, l2) = sorted({b for b, _ in peaks}), sorted({l for _, l in peaks})
        slope_1 = (peaks[b2, l1] - peaks[b1, l1]) / (b2 - b1)  # bytes per clip at depth l1
        slope_2 = (peaks[b2, l2] - peaks[b1, l2]) / (b2 - b1)
        clip_block = (slope_2 - slope_1) / (l2 - l1)
        clip = slope_1 - l1 * clip_block
        at_b1 = (peaks[b1, l2] - peaks[b1, l1]) / (l2 - l1)  # bytes per block at batch b1
        per_block = at_b1 - b1 * clip_block
        base = peaks[b1, l1] - l1 * per_block - b1 * (clip + l1 * clip_block)
        return cls(base, per_block, clip, clip_block)

    def fixed(self, depth: int) -> float:
        return self.base + depth * self.per_block

    def per_clip(self, depth: int) -> float:
        return self.clip + depth * self.clip_block


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of a training step of a depth-L model: the larger of its two phases, each bilinear."""

    depth: int
    backward: Bilinear  # forward + backward: activations, gradients
    update: Bilinear  # optimizer step: its temporaries

    @property
    def fixed(self) -> float:
        """The forward/backward phase's bytes whatever the batch: weights, optimizer state, gradients."""
        return self.backward.fixed(self.depth)

    @property
    def per_clip(self) -> float:
        """Bytes per clip of the forward/backward phase: saved activations and their share of temporaries."""
        return self.backward.per_clip(self.depth)

    def total(self, batch: int) -> float:
        return max(phase.fixed(self.depth) + batch * phase.per_clip(self.depth) for phase in (self.backward, self.update))

    def largest_batch(self, capacity: float, reserve: float = 1.5 * GiB, slack: float = 0.10) -> int:
        """The largest batch whose peak fits in `capacity` bytes after the CUDA context and workspaces
        (`reserve`) and allocator fragmentation (`slack`, a fraction of what is left)."""
        usable = (capacity - reserve) * (1 - slack)
        limits = []
        for phase in (self.backward, self.update):
            room, per_clip = usable - phase.fixed(self.depth), phase.per_clip(self.depth)
            if room < 0:
                return 0
            if per_clip > 0:
                limits.append(math.floor(room / per_clip))
        return max(0, min(limits)) if limits else 0


FIT_DEPTHS = (2, 4)
FIT_BATCHES = (2, 6)


def estimate_training_memory(build: Callable[[int], nn.Module], depth: int, num_frames: int, img_size: int,
                             amp: torch.dtype | None = torch.bfloat16) -> MemoryEstimate:
    """Fit both phases from models of FIT_DEPTHS blocks (`build(blocks)`) at FIT_BATCHES, for `depth` blocks.

    The corners are far apart (2 and 4 blocks, 2 and 6 clips) because the per-block, per-clip term is small next to
    the others under checkpointing (one residual per block) and is multiplied by the depth when extrapolated.
    """
    backward, update = {}, {}
    for blocks in FIT_DEPTHS:
        torch.manual_seed(0)
        model = build(blocks)
        for batch in FIT_BATCHES:
            clips = torch.randn(batch, model.cfg.in_chans, num_frames, img_size, img_size)
            backward[batch, blocks], update[batch, blocks] = peak_step_bytes(model, clips, amp)
        del model
    return MemoryEstimate(depth, Bilinear.fit(backward), Bilinear.fit(update))
