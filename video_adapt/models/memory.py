"""How much memory a training step needs, and so which batch fits on which GPU, without that GPU.

Training memory = persistent state (fp32 weights; gradients and two AdamW moments for the trainable tensors)
+ what autograd saves for the backward (counted exactly with `saved_tensors_hooks` on a real forward pass)
+ the transient peak of the backward itself. Saved activations of a ViT with flash attention are linear in the
token count (q, k, v, outputs and a log-sum-exp row per head; no N x N matrix is kept), so they are counted on the
CPU at a small token count and scaled: the counting pass of ViT-H costs seconds, not a GPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

GiB = 2**30


def saved_tensor_bytes(model: nn.Module, clips: torch.Tensor, amp: torch.dtype | None = None) -> int:
    """Bytes autograd keeps for the backward of one forward pass (distinct storages, parameters excluded).

    Under activation checkpointing only the checkpoints' inputs are kept; they are counted too.
    """
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast(clips.device.type, dtype=amp, enabled=amp is not None):
            out = model(clips)
    del out  # the graph (and with it what was saved) lives until here, so no storage was reused while counting
    return sum(kept.values())


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of a training step as state + fixed + batch x per_clip."""

    state: int  # fp32 weights, gradients and AdamW moments
    fixed: int  # saved per step whatever the batch (autocast's low-precision weight copies)
    per_clip: int  # saved activations of one clip, plus its share of the backward's transient peak

    def total(self, batch: int) -> int:
        return self.state + self.fixed + batch * self.per_clip

    def largest_batch(self, capacity: int, reserve: float = 1.5 * GiB, slack: float = 0.10) -> int:
        """The largest batch whose estimate fits in `capacity` bytes after the CUDA context and workspaces
        (`reserve`) and allocator fragmentation (`slack`, a fraction of what is left)."""
        usable = (capacity - reserve) * (1 - slack) - self.state - self.fixed
        return max(0, math.floor(usable / self.per_clip))


def state_bytes(model: nn.Module) -> int:
    """fp32 weights + fp32 gradients and the two fp32 AdamW moments of what trains."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return 4 * total + (4 + 8) * trainable


def estimate_training_memory(model: nn.Module, num_frames: int, img_size: int, amp: torch.dtype | None = torch.bfloat16,
                             count_frames: int | None = None, count_size: int | None = None) -> MemoryEstimate:
    """Estimate for clips of num_frames x img_size, counted on the CPU at count_frames x count_size (smaller,
    default: the tubelet size and img_size, one token row) and scaled linearly by the token count.

    The backward's transient peak is taken as one block's saved activations again (the gradients flowing
    through the block being differentiated); with checkpointing that block is first recomputed, so twice.
    """
    cfg = model.cfg
    count_frames = count_frames or cfg.tubelet_size
    count_size = count_size or img_size
    tokens = (num_frames // cfg.tubelet_size) * (img_size // cfg.patch_size) ** 2
    counted_tokens = (count_frames // cfg.tubelet_size) * (count_size // cfg.patch_size) ** 2
    was_training = model.training
    model.train()
    clips = torch.randn(2, cfg.in_chans, count_frames, count_size, count_size)
    one, two = saved_tensor_bytes(model, clips[:1].clone(), amp), saved_tensor_bytes(model, clips, amp)
    model.train(was_training)
    per_clip_saved = (two - one) * tokens / counted_tokens
    depth = len(model.blocks)
    per_block = per_clip_saved / depth if not cfg.use_checkpoint else _block_bytes(model, tokens, amp)
    transient = per_block * (2 if cfg.use_checkpoint else 1)
    return MemoryEstimate(state_bytes(model), int(2 * one - two), int(per_clip_saved + transient))


def _block_bytes(model: nn.Module, tokens: int, amp: torch.dtype | None) -> float:
    """Saved bytes of one block for one clip, counted on the block alone (used when the model checkpoints)."""
    block = model.blocks[0]
    one = saved_tensor_bytes(block, torch.randn(1, 4, model.embed_dim, requires_grad=True), amp)
    two = saved_tensor_bytes(block, torch.randn(2, 4, model.embed_dim, requires_grad=True), amp)
    return (two - one) * tokens / 4
