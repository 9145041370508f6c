"""The VideoMAE pretraining loop (the model is video_adapt.models.mae), as the official code runs it: S-TSN clips at
stride 2 with the multi-scale crop (VM:datasets.py:9-20,38-54), tube masking, AdamW (0.9, 0.95) without weight decay
on 1-D tensors, biases and the mask token, lr 1.5e-4 and min_lr 1e-5 both x batch / 256, 40 warmup epochs from 0,
then the per-step cosine (VM:run_mae_pretraining.py:64-68,193-215), AMP with a gradient scaler under fp16, atomic
checkpoints, exact resume. The update step, schedule, precision and checkpoint code are the fine-tuning loop's
(video_adapt.engine.optim / precision / state). The defaults are the official ViT-B SSv2 run
(VM:scripts/ssv2/videomae_vit_base_patch16_224_tubemasking_ratio_0.9_epoch_800/pretrain.sh, per GPU batch 32);
configs/pretrain/demo.yaml is the embedded benchmark's small one.

Clips come from a frame store or from the synthetic generator (`SyntheticClips`, unlabelled use of the embedded
benchmark's generator); each clip and each mask is a function of (seed, epoch, index) and (seed, step), so a
resumed run continues exactly. Configs are `PretrainConfig` dataclasses, read from YAML and `key=value` overrides with
the same checks as training configs (`load_pretrain_config`).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from video_adapt.config import read_config_values
from video_adapt.data.augment import msc_box
from video_adapt.data.sampling import tsn_indices
from video_adapt.data.synthetic import CLASSES, SyntheticSpec, generate_clip
from video_adapt.data.transforms import crop_resize, normalize_clips, to_tensor_clip
from video_adapt.engine.optim import Updater, create_optimizer
from video_adapt.engine.precision import Precision
from video_adapt.engine.state import find_resume, load_state, restore, save_state
from video_adapt.errors import ConfigError
from video_adapt.files import write_json_atomic
from video_adapt.models.mae import PretrainVideoMAE, save_pretrain_checkpoint, tube_mask
from video_adapt.schedules import LRSchedule
from video_adapt.schema import from_dict, option, validate

STATE_NAME = "train_state.pt"


def _model_names() -> list[str]:
    from video_adapt.models.presets import PRESETS
    return list(PRESETS)


CORPORA = ("benchmark", "broad")  # the synthetic corpora (`corpus_video`)


@dataclass
class PretrainConfig:
    model: str = option("vit_base_patch16_224", choices=_model_names)
    arch: dict[str, Any] = field(default_factory=dict)
    num_frames: int = option(16, ge=1)
    img_size: int = option(224, ge=1)
    sampling_rate: int = option(2, ge=1)  # S-TSN stride (VM:datasets.py:38-54, --sampling_rate 2)
    mask_ratio: float = option(0.9, ge=0, lt=1)
    decoder_dim: int = option(384, ge=1)
    decoder_depth: int = option(4, ge=1)
    decoder_heads: int = option(6, ge=1)
    norm_pix_loss: bool = True  # per-patch normalised targets; plain pixels suit flat synthetic patches better
    epochs: int = option(800, ge=1)
    batch_size: int = option(32, ge=1)  # per process
    lr: float = option(1.5e-4, gt=0)  # base lr, scaled by batch / 256 (VM:run_mae_pretraining.py:193)
    min_lr: float = option(1e-5, ge=0)  # scaled the same way (VM:run_mae_pretraining.py:194): 8e-5 at batch 2048
    warmup_epochs: float = option(40, ge=0)
    weight_decay: float = option(0.05, ge=0)
    amp: str = option("auto", choices=("auto", "bf16", "fp16", "off"))  # auto: bf16/fp16 on GPU, fp32 on CPU
    seed: int = option(0, ge=0)
    store: str | None = None  # a frame store (its train split); else synthetic clips
    synthetic_clips: int = option(6000, ge=1)
    synthetic_size: int = option(32, ge=1)
    synthetic_video_frames: int = option(16, ge=1)
    synthetic_corpus: str = option("benchmark", choices=CORPORA)  # broad: half benchmark videos, half random scenes
    synthetic_cache: bool = False  # generate the videos once and keep them in memory (much faster on a CPU)
    num_workers: int = option(0, ge=0)
    out_dir: str = "runs/pretrain"
    device: str = option("auto", choices=("auto", "cpu", "cuda"))


def load_pretrain_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PretrainConfig:
    """A `PretrainConfig` from a YAML file (with `_base_`) and dotted `key=value` overrides, every value checked."""
    return from_dict(PretrainConfig, read_config_values(path, overrides))


def corpus_video(corpus: str, index: int, seed: int, size: int, frames: int) -> np.ndarray:
    """Video `index` of a synthetic corpus, a fixed function of (corpus, seed, index): 'benchmark' is the embedded
    benchmark's generator (a class drawn at random); 'broad' is half that, half random scenes
    (video_adapt.data.scenes)."""
    spec = SyntheticSpec(size=size, frames=frames)
    if corpus == "broad" and np.random.default_rng((seed, 9, index)).random() < 0.5:
        from video_adapt.data.scenes import SceneSpec, generate_scene
        return generate_scene(np.random.default_rng((seed, 10, index)), SceneSpec(size=size, frames=frames))
    return generate_clip(int(np.random.default_rng((seed, 7, index)).integers(0, len(CLASSES))),
                         np.random.default_rng((seed, 8, index)), spec)


class SyntheticClips(Dataset):
    """`count` unlabelled videos of a synthetic corpus (`corpus_video`), each a fixed function of (seed, index);
    every epoch draws a fresh S-TSN clip and multi-scale crop from it, as the official pretraining data pipeline
    does. With `cache`, every video is generated once, up front, and kept in memory (count x frames x size^2 x 3
    bytes): generating a video costs more than a training step spends on it."""

    def __init__(self, count: int, num_frames: int, size: int, video_frames: int = 16, seed: int = 0,
                 stride: int = 2, *, corpus: str = "benchmark", cache: bool = False, progress: bool = False):
        self.count, self.num_frames, self.seed, self.stride = count, num_frames, seed, stride
        self.size, self.video_frames, self.corpus = size, video_frames, corpus
        self.epoch = 0
        self.videos = None
        if cache:
            self.videos = np.empty((count, video_frames, size, size, 3), np.uint8)
            for i in tqdm(range(count), desc="generating", unit="video", disable=not progress, leave=False):
                self.videos[i] = self._generate(i)

    def _generate(self, i: int) -> np.ndarray:
        return corpus_video(self.corpus, i, self.seed, self.size, self.video_frames)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> torch.Tensor:
        video = self.videos[i] if self.videos is not None else self._generate(i)
        rng = np.random.default_rng((self.seed, self.epoch, i))
        clip = to_tensor_clip(video[tsn_indices(len(video), self.num_frames, self.stride, rng)])
        box = msc_box(*clip.shape[-2:], rng, size=self.size)
        return crop_resize(clip, box, self.size, antialias=True)


class StoreClips(Dataset):
    """The training split of a frame store without labels: S-TSN at the sampling rate and the multi-scale crop
    (VM:datasets.py:9-20, 38-54)."""

    def __init__(self, root: str, num_frames: int, img_size: int, stride: int, seed: int = 0):
        from video_adapt.data.datasets import StoreSource, TrainClips, TrainView
        view = TrainView(num_frames=num_frames, img_size=img_size, sampling="tsn", stride=stride, crop="msc")
        self.inner = TrainClips(StoreSource(root, "train"), view, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.inner[i][0][0]


def build_pretrain_model(cfg: PretrainConfig) -> PretrainVideoMAE:
    return PretrainVideoMAE(cfg.model, decoder_dim=cfg.decoder_dim, decoder_depth=cfg.decoder_depth,
                            decoder_heads=cfg.decoder_heads, norm_pix_loss=cfg.norm_pix_loss,
                            num_frames=cfg.num_frames, img_size=cfg.img_size, **cfg.arch)


def build_pretrain_updater(model: PretrainVideoMAE, cfg: PretrainConfig, steps_per_epoch: int,
                           device: torch.device) -> Updater:
    """AdamW (0.9, 0.95), lr and min_lr x batch / 256, no weight decay on 1-D tensors, biases and `mask_token`
    (VM:run_mae_pretraining.py:193-205, VM:optim_factory.py:49-61, VM:modeling_pretrain.py:268-269), VideoMAE's
    per-step warmup-from-0 + cosine table (VM:run_mae_pretraining.py:210-213)."""
    scale = cfg.batch_size / 256
    optimizer = create_optimizer(model, "adamw", cfg.lr * scale, cfg.weight_decay, betas=(0.9, 0.95))
    schedule = LRSchedule("step", cfg.lr * scale, cfg.min_lr * scale, cfg.epochs, cfg.warmup_epochs, steps_per_epoch)
    return Updater(optimizer, schedule, Precision.create(device, cfg.amp))


def pretrain(cfg: PretrainConfig, resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Pretrain, writing `checkpoint.pth` (official layout) after every epoch; returns the run summary."""
    from video_adapt.distributed import resolve_device
    validate(cfg)
    device = resolve_device(cfg.device)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    try:
        model = build_pretrain_model(cfg).to(device)
    except ValueError as err:  # an option the model code refuses (e.g. arch)
        raise ConfigError(f"pretraining config does not build a model: {err}") from None
    data = StoreClips(cfg.store, cfg.num_frames, cfg.img_size, cfg.sampling_rate, cfg.seed) if cfg.store else \
        SyntheticClips(cfg.synthetic_clips, cfg.num_frames, cfg.synthetic_size, cfg.synthetic_video_frames, cfg.seed,
                       cfg.sampling_rate, corpus=cfg.synthetic_corpus, cache=cfg.synthetic_cache, progress=progress)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True, num_workers=cfg.num_workers,
                        generator=generator)
    if len(loader) == 0:
        raise ConfigError(f"batch_size={cfg.batch_size}: {len(data)} clips give no full batch")
    updater = build_pretrain_updater(model, cfg, len(loader), device)
    params = [p for p in model.parameters() if p.requires_grad]

    state_path = out / STATE_NAME
    start_epoch, losses = 0, []
    resume_path = find_resume("auto" if resume else None, state_path)
    if resume_path is not None:
        state = load_state(resume_path)
        model.load_state_dict(state["model"])
        restore(updater, state, resume_path)
        generator.set_state(state["generator"])
        start_epoch, losses = state["epoch"] + 1, list(state["losses"])

    grid = model.grid(torch.empty(1, 3, cfg.num_frames, cfg.img_size, cfg.img_size))
    start = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        if hasattr(data, "set_epoch"):
            data.set_epoch(epoch)
        model.train()
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"pretrain {epoch}", disable=not progress, leave=False)
        for i, clips in enumerate(bar):
            updater.begin(epoch, i, len(loader))
            x = normalize_clips(clips.to(device))
            mask_rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + updater.step)
            mask = tube_mask(x.shape[0], grid, cfg.mask_ratio, mask_rng, device=device)
            with updater.precision.autocast():
                loss = model(x, mask)
            updater.backward(loss)
            updater.update(params)
            total += loss.item()
            count += 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
        losses.append(total / count)
        save_pretrain_checkpoint(model, out / "checkpoint.pth", extra={"epoch": epoch})
        save_state({"model": model.state_dict(), **updater.state_dict(), "generator": generator.get_state(),
                    "epoch": epoch, "losses": losses}, state_path)
        if progress:
            print(f"[pretrain] epoch {epoch}: loss {losses[-1]:.4f}, lr {updater.optimizer.param_groups[0]['lr']:.2e}",
                  flush=True)
    summary = {"config": asdict(cfg), "epochs": cfg.epochs, "steps": updater.step, "losses": losses,
               "final_loss": losses[-1] if losses else None, "wall_time_s": time.perf_counter() - start,
               "checkpoint": str(out / "checkpoint.pth")}
    write_json_atomic(out / "pretrain_summary.json", summary)
    return summary
