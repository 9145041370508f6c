"""Checkpoints in, checkpoints out.

`load_pretrained` reads official VideoMAE and VideoMAE V2 pretrain, fine-tune and distilled `.pth` files,
AdaptFormer's converted files, Hugging Face VideoMAE (directory or weights file) and our own files, maps every
layout onto our parameter names with one function (`to_videomae_keys`) and refuses to leave any backbone weight
at its random init. Nothing is ever unpickled beyond tensors: safetensors, or `torch.load(weights_only=True)`.

`save_adapters` / `load_adapters` store only what a method tuned (peft-style: a directory with
`adapter_model.safetensors` and `adapter_config.json`), tied to the backbone by a fingerprint.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from video_adapt.errors import CheckpointError
from video_adapt.files import save_safetensors_atomic, write_json_atomic
from video_adapt.models.factory import model_from_build_args
from video_adapt.models.methods import method_spec
from video_adapt.models.tuning import backbone_key, parameter_group, trains, tuned_state_dict

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
FORMAT_TAG = "video_adapt"
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                   "pytorch_model.bin.index.json")


# ----------------------------------------------------------------------------------------------- reading
# Harmless non-tensor objects that official training checkpoints carry beside the weights
# (VideoMAE saves its argparse arguments; numpy scalars for metrics).
_SAFE_GLOBALS = [argparse.Namespace, np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.int64))]
try:
    _SAFE_GLOBALS.append(np._core.multiarray.scalar)
except AttributeError:  # numpy < 2
    _SAFE_GLOBALS.append(np.core.multiarray.scalar)


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "unsupported object"
        raise CheckpointError(
            f"{path}: refused: loading it would need unsafe unpickling of non-tensor objects "
            f"({reason[:160]}); re-save the state dict with torch.save(weights) or as safetensors"
        ) from None
    except Exception as err:  # torch.load fails on other files with many types (IndexError on a text file)
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None


def _read_weights_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            return load_file(str(path)), metadata
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0][:160]})") from None
    if path.name.endswith(".index.json"):
        index = json.loads(path.read_text())
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(_read_weights_file(path.parent / shard)[0])
        return state, {}
    return _unwrap(_torch_load(path), path), {}


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside a training checkpoint (`model`, `module`, `state_dict`)."""
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in ("model", "module", "state_dict", "model_state") if k in obj), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no tensors under 'model', 'module' or 'state_dict'")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a weights file or a Hugging Face model directory."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        found = [path / name for name in HF_WEIGHT_FILES if (path / name).exists()]
        if not found:
            raise CheckpointError(f"{path}: directory holds none of {', '.join(HF_WEIGHT_FILES)}")
        return _read_weights_file(found[0])
    return _read_weights_file(path)


# ----------------------------------------------------------------------------------------------- mapping
_HF_LAYER = "videomae.encoder.layer.{n}."
# Hugging Face transformers VideoMAE names against ours, {n} the block index; a name ending in "." covers every
# tensor under it. Read by `to_videomae_keys`, written by `to_hf_keys` (the first pair naming one of ours wins).
HF_NAMES: list[tuple[str, str]] = [
    ("videomae.embeddings.patch_embeddings.projection.", "patch_embed.proj."),
    (_HF_LAYER + "attention.attention.query.weight", "blocks.{n}.attn.query.weight"),  # split parts of our qkv
    (_HF_LAYER + "attention.attention.key.weight", "blocks.{n}.attn.key.weight"),
    (_HF_LAYER + "attention.attention.value.weight", "blocks.{n}.attn.value.weight"),
    (_HF_LAYER + "attention.attention.query.bias", "blocks.{n}.attn.q_bias"),  # how current transformers holds it
    (_HF_LAYER + "attention.attention.q_bias", "blocks.{n}.attn.q_bias"),  # how older save_pretrained wrote it
    (_HF_LAYER + "attention.attention.value.bias", "blocks.{n}.attn.v_bias"),
    (_HF_LAYER + "attention.attention.v_bias", "blocks.{n}.attn.v_bias"),
    (_HF_LAYER + "attention.attention.key.bias", "blocks.{n}.attn.k_bias"),
    (_HF_LAYER + "attention.output.dense.", "blocks.{n}.attn.proj."),
    (_HF_LAYER + "intermediate.dense.", "blocks.{n}.mlp.fc1."),
    (_HF_LAYER + "output.dense.", "blocks.{n}.mlp.fc2."),
    (_HF_LAYER + "layernorm_before.", "blocks.{n}.norm1."),
    (_HF_LAYER + "layernorm_after.", "blocks.{n}.norm2."),
    ("videomae.layernorm.", "norm."),
    ("fc_norm.", "fc_norm."),
    ("classifier.", "head."),
]


def _name_rule(source: str, target: str) -> tuple[str, str]:
    """A (regex, replacement) pair from one table entry: {n} becomes a captured block index."""
    pattern = "^" + re.escape(source).replace(re.escape("{n}"), r"(\d+)") + ("" if source.endswith(".") else "$")
    return pattern, target.replace("{n}", r"\1")


_RENAMES: list[tuple[str, str]] = [
    *(_name_rule(hf, ours) for hf, ours in HF_NAMES),
    # AdaptFormer's converted files: split projections, MLP without `mlp.`, its adapter names
    (r"^blocks\.(\d+)\.attn\.(q|k|v)_proj\.weight$", r"blocks.\1.attn.\2.weight"),
    (r"^blocks\.(\d+)\.attn\.(q|v)_proj\.bias$", r"blocks.\1.attn.\2_bias"),
    (r"^blocks\.(\d+)\.attn\.k_proj\.bias$", r"blocks.\1.attn.k_bias"),
    (r"^blocks\.(\d+)\.fc(1|2)\.", r"blocks.\1.mlp.fc\2."),
    (r"^blocks\.(\d+)\.adaptmlp\.down_proj\.", r"blocks.\1.mlp_adapter.down."),
    (r"^blocks\.(\d+)\.adaptmlp\.up_proj\.", r"blocks.\1.mlp_adapter.up."),
]
_RENAMES_COMPILED = [(re.compile(p), r) for p, r in _RENAMES]
_IGNORED = [
    (re.compile(r"^(decoder|encoder_to_decoder|mask_token|decoder_pos_embed)"), "pretraining decoder"),
    (re.compile(r"(^|\.)pos_embed$|position_embeddings$"), "position table is a fixed sinusoid, regenerated"),
    (re.compile(r"\.k_bias$"), "key bias cancels in softmax; VideoMAE has none"),
    (re.compile(r"^norm\.(weight|bias)$"), "final norm unused with mean pooling + fc_norm"),
]
_SPLIT_QKV = re.compile(r"^blocks\.(\d+)\.attn\.(q|k|v|query|key|value)\.weight$")


# DDP, EMA/model wrappers, VideoMAE pretraining (`encoder.`), and what V2's fine-tuning strips before loading:
# torch.compile's `_orig_mod.` and `backbone.` (V2:run_class_finetuning.py:557-560, 584-590)
_WRAPPER_PREFIX = re.compile(r"^(module|model|encoder|backbone|_orig_mod)\.")
_COS_ATTN_SCALE = re.compile(r"^blocks\.\d+\.attn\.scale$")  # V2's CosAttention log-scale, (heads, 1, 1)


def _rename(key: str) -> str:
    while _WRAPPER_PREFIX.match(key):
        key = _WRAPPER_PREFIX.sub("", key, count=1)
    for pattern, repl in _RENAMES_COMPILED:
        if pattern.search(key):
            return pattern.sub(repl, key, count=1)
    return key


def to_videomae_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename any known layout to ours (= official VideoMAE fine-tune names); fuse split q/k/v."""
    renamed: dict[str, torch.Tensor] = {}
    split: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        new = _rename(key)
        match = _SPLIT_QKV.match(new)
        if match:
            split.setdefault(match.group(1), {})[match.group(2)[0]] = tensor
        else:
            renamed[new] = tensor
    for block, parts in split.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"block {block} has split attention weights {sorted(parts)}, expected q, k and v")
        renamed[f"blocks.{block}.attn.qkv.weight"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return renamed


_TO_HF = [(re.compile(p), r) for p, r in (_name_rule(ours, hf) for hf, ours in HF_NAMES)]
_QKV_WEIGHT = re.compile(r"^blocks\.(\d+)\.attn\.qkv\.weight$")


def to_hf_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names (a plain backbone and its head) -> Hugging Face VideoMAE's, with the fused qkv split into query, key
    and value: the inverse of `to_videomae_keys` through the same table. A tensor Hugging Face has no place for (an
    adapter, prompts, head_bn) raises CheckpointError naming it."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        match = _QKV_WEIGHT.match(key)
        parts = zip(("query", "key", "value"), tensor.chunk(3, dim=0)) if match else [(None, tensor)]
        for part, value in parts:
            name = f"blocks.{match.group(1)}.attn.{part}.weight" if match else key
            rule = next(((p, r) for p, r in _TO_HF if p.search(name)), None)
            if rule is None:
                raise CheckpointError(f"{key}: Hugging Face VideoMAE has no place for this tensor")
            out[rule[0].sub(rule[1], name, count=1)] = value.contiguous()
    return out


# ----------------------------------------------------------------------------------------------- loading
@dataclass
class LoadReport:
    """What `load_pretrained` did: loaded keys, ignored keys with reasons, keys that start fresh."""

    path: str
    loaded: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    initialised: list[str] = field(default_factory=list)
    head_dropped: bool = False

    def summary(self) -> str:
        return (f"{self.path}: loaded {len(self.loaded)} tensors, ignored {len(self.ignored)}, "
                f"fresh {len(self.initialised)}" + (" (head dropped: class count differs)" if self.head_dropped else ""))


def _ignore_reason(key: str) -> str | None:
    for pattern, reason in _IGNORED:
        if pattern.search(key):
            return reason
    return None


def _check_attention_kind(path: str | os.PathLike, surplus: list[str], missing: list[str]) -> None:
    """Name the one architecture switch a V2 file can disagree on, instead of a generic missing/surplus error."""
    if any(_COS_ATTN_SCALE.match(k) for k in surplus):
        raise CheckpointError(f"{path}: the checkpoint uses VideoMAE V2's cosine attention (blocks.N.attn.scale); "
                              "build the model with cos_attn=True (config: model.arch.cos_attn=true)")
    if any(_COS_ATTN_SCALE.match(k) for k in missing):
        raise CheckpointError(f"{path}: the model uses cosine attention but the checkpoint has no blocks.N.attn.scale; "
                              "build the model with cos_attn=False")


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load backbone (and, when shapes fit, head) weights from any supported layout.

    Raises `CheckpointError` if a backbone weight is missing or has another shape, or if the file carries
    backbone weights this model has no place for (e.g. a deeper model): only adapters, prompts,
    `fc_norm`, `head_bn` and `head` may start fresh.
    """
    state, _ = read_state_dict(path)
    mapped = to_videomae_keys(state)
    own_state = model.state_dict()
    names = {backbone_key(k): k for k in own_state}  # a LoRA-wrapped Linear keeps its weight under base_layer
    own = {backbone_key(k): v for k, v in own_state.items()}
    report = LoadReport(str(path))
    loadable: dict[str, torch.Tensor] = {}
    mismatched, surplus = [], []
    for key, tensor in mapped.items():
        if key not in own:
            reason = _ignore_reason(key)
            if reason is None and parameter_group(key) == "backbone":
                surplus.append(key)
            report.ignored[key] = reason or "not part of this model"
        elif own[key].shape != tensor.shape:
            if key.startswith("head."):
                report.head_dropped = True
                report.ignored[key] = f"head shape {tuple(tensor.shape)} != {tuple(own[key].shape)}"
            else:
                mismatched.append(f"{key} {tuple(tensor.shape)} vs model {tuple(own[key].shape)}")
        else:
            loadable[key] = tensor
    missing = [k for k in own if k not in loadable and parameter_group(k) == "backbone"
               and not k.startswith("head_bn.")]
    if mismatched:
        raise CheckpointError(f"{path}: {len(mismatched)} weights have another shape, e.g. {mismatched[0]}; "
                              "the model's architecture does not match the checkpoint")
    _check_attention_kind(path, surplus, missing)
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} backbone weights not in the checkpoint, e.g. "
                              f"{', '.join(missing[:3])}; refusing to train a randomly initialised backbone")
    if surplus:
        raise CheckpointError(f"{path}: {len(surplus)} backbone weights have no place in this model, e.g. "
                              f"{surplus[0]}; the checkpoint is for a larger architecture")
    if report.head_dropped:
        loadable = {k: v for k, v in loadable.items() if not k.startswith("head.")}
    model.load_state_dict({names[k]: v for k, v in loadable.items()}, strict=False)
    report.loaded = sorted(loadable)
    report.initialised = sorted(k for k in own if k not in loadable)
    return report


def architecture_of(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """The preset and architecture overrides that rebuild the backbone in a weights file without build_args (an
    official or Hugging Face checkpoint), read from its tensor shapes: width, patch and tubelet from the patch
    embedding, depth from the blocks, MLP width, q/v biases, layer scale and cosine attention from what the blocks
    hold. The head count is not in the weights: the preset of that width, depth and patch decides it."""
    from video_adapt.models.presets import PRESETS, vit_config
    state = to_videomae_keys(read_state_dict(path)[0])
    proj = state.get("patch_embed.proj.weight")
    if proj is None or proj.ndim != 5:
        raise CheckpointError(f"{path}: no 3-D patch embedding (patch_embed.proj.weight); not a VideoMAE backbone")
    dim, _, tubelet, patch = proj.shape[:4]
    depth = len({m.group(1) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    arch = {"tubelet_size": int(tubelet), "qkv_bias": "blocks.0.attn.q_bias" in state,
            "cos_attn": "blocks.0.attn.scale" in state}
    if fc1 is not None:
        arch["mlp_ratio"] = fc1.shape[0] / dim
    if "blocks.0.gamma_1" in state:
        arch["init_values"] = 0.1  # any non-zero value builds the layer scale; the file's values are loaded over it
    for name in PRESETS:
        cfg = vit_config(name)
        if (cfg.embed_dim, cfg.depth, cfg.patch_size) == (dim, depth, patch):
            return name, {k: v for k, v in arch.items() if getattr(cfg, k) != v}
    raise CheckpointError(f"{path}: no model preset is {dim} wide with {depth} blocks and {patch} px patches; name "
                          "the preset and its overrides yourself (create_model)")


# ----------------------------------------------------------------------------------------------- our files
def backbone_fingerprint(model: nn.Module) -> str:
    """sha256 of the backbone tensors the method leaves frozen (names in the plain backbone, shapes, float32 bytes).

    BitFit's trained biases are left out (they travel in the adapter file); LoRA's wrapped weights count under their
    plain names, so a LoRA model has its plain backbone's fingerprint. Cached while the tensors are unchanged.
    """
    method = getattr(getattr(model, "tuning", None), "method", "full")
    tensors = [(backbone_key(n), t) for n, t in model.state_dict(keep_vars=True).items()
               if parameter_group(n) == "backbone" and not n.startswith("head_bn.")
               and (method_spec(method).saves_backbone or not trains(n, method))]
    key = tuple((n, t.data_ptr(), t._version) for n, t in tensors)
    cached = getattr(model, "_fingerprint_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = hashlib.sha256()
    for name, tensor in tensors:
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    value = digest.hexdigest()[:32]
    object.__setattr__(model, "_fingerprint_cache", (key, value))
    return value


def adapter_config(model: nn.Module, class_names: list[str] | None = None) -> dict[str, Any]:
    tuning = getattr(model, "tuning", None)
    method = tuning.method if tuning is not None else "full"
    return {
        "format": FORMAT_TAG,
        "method": method,
        "build_args": getattr(model, "build_args", None),
        "class_names": list(class_names) if class_names is not None else None,
        # a fully fine-tuned model carries its own backbone: nothing to tie it to
        "backbone_fingerprint": None if method_spec(method).saves_backbone else backbone_fingerprint(model),
    }


def _refuse_merged(model: nn.Module, where: Path) -> None:
    if getattr(model, "lora_merged", False):
        raise CheckpointError(f"{where}: the model's LoRA is merged into its backbone; save or load adapter files "
                              "before merge_lora, not after")


def save_adapters(model: nn.Module, path: str | os.PathLike, class_names: list[str] | None = None,
                  extra: dict[str, Any] | None = None, weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the tuned tensors and their config into directory `path`; returns the directory. `weights` are the
    tensors to write when the model's own are sharded (FSDP: the gathered full state dict)."""
    out = Path(path)
    _refuse_merged(model, out)
    out.mkdir(parents=True, exist_ok=True)
    config = adapter_config(model, class_names)
    if extra:
        config.update(extra)
    tensors = tuned_state_dict(model) if weights is None else {k: v for k, v in weights.items()
                                                              if k in set(tuned_state_dict(model))}
    save_safetensors_atomic(tensors, out / ADAPTER_WEIGHTS, {"format": FORMAT_TAG})
    write_json_atomic(out / ADAPTER_CONFIG, config)
    return out


def _adapter_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    directory = path if path.is_dir() else path.parent
    weights, config = directory / ADAPTER_WEIGHTS, directory / ADAPTER_CONFIG
    for needed in (weights, config):
        if not needed.exists():
            raise CheckpointError(f"{directory}: not an adapter directory (missing {needed.name})")
    return weights, config


def read_adapter_config(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(_adapter_paths(path)[1].read_text())


def load_adapters(model: nn.Module, path: str | os.PathLike, force: bool = False) -> dict[str, Any]:
    """Load tuned tensors saved by `save_adapters`; returns the adapter config (class names inside).

    Refuses another method, other shapes, and (unless `force`) a backbone whose fingerprint differs
    from the one the adapters were trained on.
    """
    weights, config_path = _adapter_paths(path)
    _refuse_merged(model, weights.parent)
    config = json.loads(config_path.read_text())
    tuning = getattr(model, "tuning", None)
    method = tuning.method if tuning is not None else "full"
    if config.get("method") != method:
        raise CheckpointError(f"{weights.parent}: adapters are for method {config.get('method')!r}, "
                              f"the model uses {method!r}")
    expected = config.get("backbone_fingerprint")
    if expected and not force:
        actual = backbone_fingerprint(model)
        if actual != expected:
            raise CheckpointError(f"{weights.parent}: adapters were trained on another backbone "
                                  f"(fingerprint {expected} vs {actual}); pass force=True to load anyway")
    tensors = load_file(str(weights))
    own = model.state_dict()
    problems = [k for k, v in tensors.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in tuned_state_dict(model) if k not in tensors]
    if problems or missing:
        example = (problems or missing)[0]
        raise CheckpointError(f"{weights}: does not fit the model ({len(problems)} unknown or reshaped, "
                              f"{len(missing)} missing tensors, e.g. {example})")
    model.load_state_dict(tensors, strict=False)
    return config


def save_model(model: nn.Module, path: str | os.PathLike, class_names: list[str] | None = None) -> Path:
    """Whole model as one safetensors file, with what is needed to rebuild it in the metadata."""
    meta = {"format": FORMAT_TAG, "build_args": json.dumps(getattr(model, "build_args", None)),
            "class_names": json.dumps(class_names)}
    return save_safetensors_atomic(dict(model.state_dict()), path, meta)


def load_model(path: str | os.PathLike) -> tuple[nn.Module, list[str] | None]:
    """Rebuild and load a model written by `save_model`; returns (model, class names)."""
    state, meta = read_state_dict(path)
    if meta.get("format") != FORMAT_TAG or meta.get("build_args") in (None, "null"):
        raise CheckpointError(f"{path}: not a video_adapt model file (no build_args); "
                              "create the model yourself and use load_pretrained")
    model = model_from_build_args(json.loads(meta["build_args"]))
    model.load_state_dict(state, strict=True)
    return model, json.loads(meta.get("class_names", "null"))
