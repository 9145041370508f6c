"""The Hugging Face format: a directory that `transformers.VideoMAEForVideoClassification.from_pretrained` loads and
`transformers.pipeline("video-classification", model=DIR)` runs (config.json with the class names,
preprocessor_config.json with our resize, crop, mean and std, model.safetensors).

Only methods whose weights fold into a plain VideoMAE can go there, and they go exactly:
- full fine-tuning, linear probing and BitFit change tensors VideoMAE has; LoRA is merged first (`merge_lora`);
- AdaptFormer's `head_bn` (BatchNorm1d without affine, in eval mode an affine map per feature) folds into the
  classifier: W' = W diag(1 / sqrt(var + eps)), b' = b - W' mean;
- layer scale (`gamma_1`, `gamma_2`) folds into the attention output and fc2 weights and biases.
AdaptFormer's bottleneck branches, VPT's prompt tokens and ST-Adapter's convolutions add computation VideoMAE does not
have; they are refused in one line that names the ONNX format.

Hugging Face's fc_norm is `nn.LayerNorm(hidden_size)`, eps 1e-5 whatever the config says, against our 1e-6; the
blocks' eps is the config's `layer_norm_eps`, set to ours. The fc_norm difference is the only one left, and the
self-check measures it (about 1e-6 of the logits on the tests' models).
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from video_adapt.checkpoint import to_hf_keys
from video_adapt.errors import ExportError
from video_adapt.export.optional import import_optional
from video_adapt.models.methods import method_spec
from video_adapt.models.tuning import merge_tuning
from video_adapt.imagenet import IMAGENET_MEAN, IMAGENET_STD

HF_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def refusal(method: str) -> str | None:
    """Why `method` cannot be written in the Hugging Face format, or None."""
    spec = method_spec(method)
    if not spec.merges:  # what the method adds has no place in a plain VideoMAE
        return (f"{method}: its modules ({spec.summary.split(' (')[0]}) do not merge into Hugging Face's VideoMAE, "
                "which cannot hold them; export it with --format onnx (or openvino, torch-export)")
    return None


def _folded_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors with head_bn and layer scale folded in: a plain VideoMAE's state dict under our names."""
    state = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    for i in range(len(model.blocks)):
        for gamma, target in (("gamma_1", "attn.proj"), ("gamma_2", "mlp.fc2")):
            g = state.pop(f"blocks.{i}.{gamma}", None)
            if g is not None:
                state[f"blocks.{i}.{target}.weight"] *= g[:, None]
                state[f"blocks.{i}.{target}.bias"] *= g
    if model.head_bn is not None:
        mean, var = state.pop("head_bn.running_mean"), state.pop("head_bn.running_var")
        state.pop("head_bn.num_batches_tracked", None)
        weight = state["head.weight"] / torch.sqrt(var + model.head_bn.eps)[None, :]
        state["head.weight"], state["head.bias"] = weight, state["head.bias"] - weight @ mean
    if not model.cfg.use_mean_pooling:  # Hugging Face's VideoMAE then ends with its `layernorm` and the first token
        state.pop("fc_norm.weight", None)
        state.pop("fc_norm.bias", None)
    return state


def hf_config(model: nn.Module, class_names: list[str], num_frames: int, multilabel: bool = False) -> Any:
    """VideoMAEConfig of `model`; a multi-label model says so (`problem_type`), so Hugging Face's pipeline scores each
    class with its own sigmoid, as `video-adapt infer` does, and its loss is BCE."""
    transformers = import_optional("transformers")
    c = model.cfg
    return transformers.VideoMAEConfig(
        image_size=c.img_size, patch_size=c.patch_size, num_channels=c.in_chans, num_frames=num_frames,
        tubelet_size=c.tubelet_size, hidden_size=c.embed_dim, num_hidden_layers=c.depth,
        num_attention_heads=c.num_heads, intermediate_size=int(c.embed_dim * c.mlp_ratio), hidden_act="gelu",
        layer_norm_eps=c.norm_eps, qv_bias=c.qkv_bias, use_mean_pooling=c.use_mean_pooling,
        id2label=dict(enumerate(class_names)), label2id={n: i for i, n in enumerate(class_names)},
        architectures=["VideoMAEForVideoClassification"],
        problem_type="multi_label_classification" if multilabel else "single_label_classification")


def hf_model(model: nn.Module, class_names: list[str], num_frames: int, multilabel: bool = False) -> nn.Module:
    """`VideoMAEForVideoClassification` holding `model`'s function (method permitting); every tensor placed."""
    method = getattr(getattr(model, "tuning", None), "method", "full")
    reason = refusal(method)
    if reason:
        raise ExportError(reason)
    if model.cfg.cos_attn:
        raise ExportError("cosine attention (VideoMAE V2's cos_attn) has no place in Hugging Face's VideoMAE; "
                          "export with --format onnx")
    if model.num_classes < 1:
        raise ExportError("the model has no classification head; Hugging Face's video classifier needs one")
    model = merge_tuning(copy.deepcopy(model))  # LoRA folds into its Linear layers
    transformers = import_optional("transformers")
    target = transformers.VideoMAEForVideoClassification(hf_config(model, class_names, num_frames,
                                                                                multilabel)).eval()
    state = to_hf_keys(_folded_state(model))
    missing, unexpected = target.load_state_dict(state, strict=False)
    if missing or unexpected:  # a mapping that left a tensor out would otherwise ship a random weight
        raise ExportError(f"Hugging Face's VideoMAE does not take the weights as mapped ({len(missing)} missing, "
                          f"{len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]})")
    return target


def image_processor(data: dict[str, Any], img_size: int) -> Any:
    """Our test-time spatial transform in Hugging Face's terms: short side resized (bilinear), centre crop, ImageNet
    mean and std (its default would be 0.5, 0.5, 0.5)."""
    transformers = import_optional("transformers")
    short = int(data.get("test_short_side") or img_size)
    return transformers.VideoMAEImageProcessor(
        do_resize=True, size={"shortest_edge": short}, resample=2, do_center_crop=True,
        crop_size={"height": img_size, "width": img_size}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))


@contextlib.contextmanager
def _no_progress_bars():
    """transformers draws a bar for each file it writes or reads; the export prints its own summary."""
    logging = import_optional("transformers").utils.logging
    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


def write_hf(model: nn.Module, class_names: list[str], data: dict[str, Any], num_frames: int,
             folder: Path) -> list[Path]:
    """config.json, model.safetensors and preprocessor_config.json in `folder`; returns them."""
    target = hf_model(model, class_names, num_frames, bool(data.get("multilabel")))
    with _no_progress_bars():
        target.save_pretrained(str(folder))
    image_processor(data, model.cfg.img_size).save_pretrained(str(folder))
    return [folder / name for name in HF_FILES]


def load_hf(folder: Path) -> nn.Module:
    """The written directory as Hugging Face loads it (SDPA attention), for the self-check."""
    transformers = import_optional("transformers")
    with _no_progress_bars():
        return transformers.VideoMAEForVideoClassification.from_pretrained(str(folder),
                                                                           attn_implementation="sdpa").eval()


def hf_logits(hf: nn.Module):
    """Our clip layout (B, 3, T, H, W) into Hugging Face's (B, T, 3, H, W): a logits function for the self-check."""
    def run(clips: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return hf(pixel_values=clips.permute(0, 2, 1, 3, 4)).logits
    return run
