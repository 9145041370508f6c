"""The model, data and steps shared by the sharded worker (tests/sharding_worker.py) and its one-process replay."""
import torch
import torch.nn.functional as F
from torch import nn

from tiny_models import randomize_

GLOBAL_BATCH = 4
STEPS = 2


def build_model(seed: int) -> nn.Module:
    """Tiny V2-style backbone, fully fine-tuned: cosine attention and activation checkpointing as for ViT-g."""
    from video_adapt import create_model
    torch.manual_seed(seed)
    model = create_model("vit_giant_patch14_224", num_classes=5, tuning="full", img_size=28, num_frames=4,
                         embed_dim=32, depth=3, num_heads=2, cos_attn=True, use_checkpoint=True)
    return randomize_(model, seed=seed, std=0.1)


def build_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """timm's factory, as the engine calls it: two param groups (weight decay, and none for 1-D tensors and the
    cosine-attention scales)."""
    from timm.optim import create_optimizer_v2
    return create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(GLOBAL_BATCH, 3, 4, 28, 28, generator=g), torch.randint(0, 5, (GLOBAL_BATCH,), generator=g)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps, part: slice = slice(None)) -> None:
    """Mean cross-entropy over this process's part of each global batch, clipped gradients, an AdamW step."""
    model.train()
    for step in steps:
        clips, labels = batch(step)
        loss = F.cross_entropy(model(clips[part]), labels[part])
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
