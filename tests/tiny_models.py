"""Tiny architectures shared by the model tests (seconds on a CPU)."""
import torch

TINY = dict(img_size=32, patch_size=8, tubelet_size=2, num_frames=4, embed_dim=32, depth=2, num_heads=2)


def tiny_model(tuning="full", num_classes=5, **kwargs):
    from video_adapt import create_model
    arch = {**TINY, **kwargs}
    return create_model("vit_base_patch16_224", num_classes=num_classes, tuning=tuning, **arch)


def clips(batch=2, frames=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, frames, size, size, generator=g)


def randomize_(model, seed=0, std=0.05):
    """Replace every parameter by noise so that no zero-initialised bias hides a mapping mistake."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model
