"""The VideoMAE pretraining loop: AdamW (0.9, 0.95), warmup + cosine, AMP on GPU, atomic checkpoints, resume.

Clips come from a tube store or from the synthetic generator (`SyntheticClips`, unlabelled use of the embedded
benchmark's generator); each clip and each mask is a function of (seed, index) and (seed, step), so a resumed
run continues exactly.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from video_adapt.data.synthetic import CLASSES, SyntheticSpec, generate_clip
from video_adapt.data.transforms import normalize_clips, random_resized_crop, to_tensor_clip
from video_adapt.models.pretrain import PretrainVideoMAE, save_pretrain_checkpoint, tube_mask


@dataclass
class PretrainConfig:
    model: str = "vit_tiny_patch8_32"
    arch: dict[str, Any] = field(default_factory=dict)
    num_frames: int = 8
    img_size: int = 32
    mask_ratio: float = 0.9
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1.5e-4  # base lr, scaled by batch / 256 as in VideoMAE
    min_lr: float = 1e-6
    warmup_epochs: float = 2
    weight_decay: float = 0.05
    seed: int = 0
    store: str | None = None  # a tube store; else synthetic clips
    synthetic_clips: int = 6000
    synthetic_size: int = 32
    synthetic_video_frames: int = 16
    num_workers: int = 0
    out_dir: str = "runs/pretrain"
    device: str = "auto"


class SyntheticClips(Dataset):
    """`count` unlabelled clips of the synthetic task, each a fixed function of (seed, index)."""

    def __init__(self, count: int, num_frames: int, size: int, video_frames: int = 16, seed: int = 0):
        self.count, self.num_frames, self.seed = count, num_frames, seed
        self.spec = SyntheticSpec(size=size, frames=video_frames)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng((self.seed, 7, i))
        video = generate_clip(int(rng.integers(0, len(CLASSES))), rng, self.spec)
        # segment sampling, a random frame per segment, as the fine-tuning data is stored
        edges = np.linspace(0, len(video), self.num_frames + 1)
        idx = (edges[:-1] + rng.random(self.num_frames) * np.diff(edges)).astype(int)
        return to_tensor_clip(video[idx])


class StoreClips(Dataset):
    """Training views of a tube store without labels, random resized crops (scale 0.5-1) as VideoMAE."""

    def __init__(self, root: str, num_frames: int, img_size: int, seed: int = 0):
        from video_adapt.data.datasets import TubeTrainDataset
        self.inner = TubeTrainDataset(root, "train", num_frames, img_size, flip=None, scale=(0.5, 1.0), seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.inner[i][0]


def build_pretrain_model(cfg: PretrainConfig) -> PretrainVideoMAE:
    return PretrainVideoMAE(cfg.model, decoder_dim=cfg.decoder_dim, decoder_depth=cfg.decoder_depth,
                            decoder_heads=cfg.decoder_heads, norm_pix_loss=cfg.norm_pix_loss,
                            num_frames=cfg.num_frames, img_size=cfg.img_size, **cfg.arch)


def pretrain(cfg: PretrainConfig, resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Pretrain, writing `checkpoint.pth` (official layout) after every epoch; returns the run summary."""
    from timm.scheduler import CosineLRScheduler

    from video_adapt.distributed import resolve_device
    from video_adapt.engine import autocast_context, autocast_dtype, rng_state, set_rng_state
    device = resolve_device(cfg.device)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_pretrain_model(cfg).to(device)
    data = StoreClips(cfg.store, cfg.num_frames, cfg.img_size, cfg.seed) if cfg.store else \
        SyntheticClips(cfg.synthetic_clips, cfg.num_frames, cfg.synthetic_size, cfg.synthetic_video_frames, cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True, num_workers=cfg.num_workers,
                        generator=generator)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(data)} clips give no full batch of {cfg.batch_size}")
    lr = cfg.lr * cfg.batch_size / 256
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    scheduler = CosineLRScheduler(optimizer, t_initial=cfg.epochs * steps_per_epoch, lr_min=cfg.min_lr,
                                  warmup_t=int(cfg.warmup_epochs * steps_per_epoch), warmup_lr_init=1e-6,
                                  warmup_prefix=True, t_in_epochs=False)
    amp = autocast_dtype(device, "auto")
    state_path = out / "train_state.pt"
    start_epoch, step, losses = 0, 0, []
    if resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        start_epoch, step, losses = state["epoch"] + 1, state["step"], list(state["losses"])
        scheduler.step_update(step)
    grid = model.grid(torch.empty(1, 3, cfg.num_frames, cfg.img_size, cfg.img_size))
    start = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        if hasattr(data, "set_epoch"):
            data.set_epoch(epoch)
        model.train()
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"pretrain {epoch}", disable=not progress, leave=False)
        for clips in bar:
            x = normalize_clips(clips.to(device))
            mask = tube_mask(x.shape[0], grid, cfg.mask_ratio, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step),
                             device=device)
            with autocast_context(device, amp):
                loss = model(x, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            total += loss.item()
            count += 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
        losses.append(total / count)
        save_pretrain_checkpoint(model, out / "checkpoint.pth", extra={"epoch": epoch})
        tmp = state_path.with_name(state_path.name + ".tmp")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "rng": rng_state(),
                    "epoch": epoch, "step": step, "losses": losses}, tmp)
        tmp.replace(state_path)
        if progress:
            print(f"[pretrain] epoch {epoch}: loss {losses[-1]:.4f}, lr {optimizer.param_groups[0]['lr']:.2e}", flush=True)
    summary = {"config": asdict(cfg), "epochs": cfg.epochs, "steps": step, "losses": losses,
               "final_loss": losses[-1] if losses else None, "wall_time_s": time.perf_counter() - start,
               "checkpoint": str(out / "checkpoint.pth")}
    (out / "pretrain_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
