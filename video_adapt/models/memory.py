"""How much memory a training step needs, and so which batch fits on which GPU, without that GPU.

`peak_step_bytes` measures the exact peak of live tensor bytes over one training step (forward, backward, AdamW):
weights, optimizer state, input, gradients, saved activations and temporaries, from the PyTorch profiler's
memory timeline. A ViT's peak is bilinear in batch B and depth L (every block adds the same state, the same saved
activations per clip and the same temporaries), so four measurements of 2- and 3-block models at the real clip size
and batches 1 and 2 give it for any depth and batch: a ViT-H estimate costs CPU seconds, not a GPU.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

GiB = 2**30


def peak_step_bytes(model: nn.Module, clips: torch.Tensor, amp: torch.dtype | None = torch.bfloat16) -> tuple[int, int]:
    """Peak live tensor bytes of one training step of `model` on `clips` (cross-entropy, AdamW), on the CPU:
    (forward + backward, optimizer step). The peak of the step is the larger of the two.

    A first step creates the optimizer state; the second is profiled, so the state counts as already there.
    The two phases are profiled apart because each has its own shape: activations grow with the batch, the
    optimizer's temporaries with the parameters, and which one is higher depends on both.
    """
    from torch.profiler import ProfilerActivity, profile

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, foreach=True)
    labels = torch.zeros(clips.shape[0], dtype=torch.long, device=clips.device)
    model.train()

    def forward_backward() -> None:
        with torch.autocast(clips.device.type, dtype=amp, enabled=amp is not None):
            loss = nn.functional.cross_entropy(model(clips).float(), labels)
        loss.backward()

    def update() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    forward_backward()
    update()
    peaks = []
    for phase in (forward_backward, update):
        # what is alive when the phase starts: the timeline lists only tensors the phase touches
        resident = [*model.parameters(), clips, labels, *(p.grad for p in model.parameters() if p.grad is not None),
                    *(t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t))]
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            phase()
        peaks.append(_distinct_bytes(resident) + _peak_growth(prof))
    return peaks[0], peaks[1]


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
    """bytes = base + L * per_block + batch * (clip + L * clip_block), fitted from L in {2, 3}, batch in {1, 2}."""

    base: float
    per_block: float
    clip: float
    clip_block: float

    @classmethod
    def fit(cls, peaks: dict[tuple[int, int], float]) -> "Bilinear":
        """peaks[batch, blocks] for batch 1, 2 and blocks 2, 3."""
        clip_block = (peaks[2, 3] - peaks[1, 3]) - (peaks[2, 2] - peaks[1, 2])
        clip = (peaks[2, 2] - peaks[1, 2]) - 2 * clip_block
        per_block = (peaks[1, 3] - peaks[1, 2]) - clip_block
        return cls(peaks[1, 2] - 2 * per_block - clip - 2 * clip_block, per_block, clip, clip_block)

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


def estimate_training_memory(build: Callable[[int], nn.Module], depth: int, num_frames: int, img_size: int,
                             amp: torch.dtype | None = torch.bfloat16) -> MemoryEstimate:
    """Fit both phases from 2- and 3-block models (`build(blocks)`) at batches 1 and 2, for `depth` blocks."""
    backward, update = {}, {}
    for blocks in (2, 3):
        torch.manual_seed(0)
        model = build(blocks)
        for batch in (1, 2):
            clips = torch.randn(batch, model.cfg.in_chans, num_frames, img_size, img_size)
            backward[batch, blocks], update[batch, blocks] = peak_step_bytes(model, clips, amp)
        del model
    return MemoryEstimate(depth, Bilinear.fit(backward), Bilinear.fit(update))
