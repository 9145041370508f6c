"""VideoMAE V2 backbones: the ViT-g/14 preset, cosine attention, V2's checkpoint layouts, every tuning method.

V2 = OpenGVLab/VideoMAEv2 at 29eab1e; `V2:path:line` points at the line there.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tiny_models import clips, randomize_
from video_adapt import CheckpointError, create_model, load_pretrained, parameter_report
from video_adapt.models.methods import METHODS
from video_adapt.models.vit import vit_config

# a V2-shaped tiny model: 14 px patches and V2-g's MLP ratio, at 28 px (2 x 2 tokens per frame)
V2_TINY = dict(img_size=28, patch_size=14, tubelet_size=2, num_frames=4, embed_dim=32, depth=2, num_heads=2,
               mlp_ratio=48 / 11)


def v2_tiny(tuning_method="full", num_classes=5, **kwargs):
    return create_model("vit_giant_patch14_224", num_classes=num_classes, tuning=tuning_method, **{**V2_TINY, **kwargs})


def v2_finetune_layout(dim, depth, heads, hidden, classes, patch, tubelet=2, cos_attn=False):
    """Names and shapes of the state dict of V2's fine-tuning VisionTransformer (V2:models/modeling_finetune.py)."""
    shapes = {"patch_embed.proj.weight": (dim, 3, tubelet, patch, patch), "patch_embed.proj.bias": (dim,)}  # :285-289
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),  # :215
            b + "attn.qkv.weight": (3 * dim, dim),  # :99, no bias of its own
            b + "attn.q_bias": (dim,), b + "attn.v_bias": (dim,),  # :100-102
            b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),  # :108
            b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),  # :237
            b + "mlp.fc1.weight": (hidden, dim), b + "mlp.fc1.bias": (hidden,),  # :59, hidden = int(dim * ratio) :238
            b + "mlp.fc2.weight": (dim, hidden), b + "mlp.fc2.bias": (dim,),  # :61
        })
        if cos_attn:
            shapes[b + "attn.scale"] = (heads, 1, 1)  # CosAttention :92-95
    shapes.update({"fc_norm.weight": (dim,), "fc_norm.bias": (dim,),  # :392 (mean pooling)
                   "head.weight": (classes, dim), "head.bias": (classes,)})  # :394-395
    return shapes


def v2_pretrain_layout(dim, depth, heads, hidden, patch, dec_dim=16, dec_depth=1, dec_heads=2, cos_attn=False):
    """V2's PretrainVisionTransformer (V2:models/modeling_pretrain.py:239-322): the encoder under `encoder.`
    with a final norm (:91) and no head, a decoder with its own blocks, norm and pixel head (:193-195),
    `encoder_to_decoder` (:314) and `mask_token` (:317)."""
    enc = v2_finetune_layout(dim, depth, heads, hidden, 1, patch, cos_attn=cos_attn)
    shapes = {"encoder." + k: v for k, v in enc.items() if not k.startswith(("fc_norm.", "head."))}
    shapes.update({"encoder.norm.weight": (dim,), "encoder.norm.bias": (dim,)})
    dec = v2_finetune_layout(dec_dim, dec_depth, dec_heads, 4 * dec_dim, 3 * 2 * patch * patch, patch, cos_attn=cos_attn)
    shapes.update({"decoder." + k: v for k, v in dec.items() if k.startswith(("blocks.", "head."))})
    shapes.update({"decoder.norm.weight": (dec_dim,), "decoder.norm.bias": (dec_dim,),
                   "encoder_to_decoder.weight": (dec_dim, dim), "mask_token": (1, 1, dec_dim)})
    return shapes


def random_state(shapes, seed=0, std=0.1, log_scales=(5.0, 0.7)):
    """Noise for every tensor; cosine-attention log-scales one above V2's clamp (4.6052) and one below."""
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=g) * std for k, s in shapes.items()}
    for k in state:
        if k.endswith("attn.scale"):
            state[k] = torch.tensor(log_scales[: state[k].shape[0]]).view(-1, 1, 1)
    return state


def tiny_v2_file(tmp_path, cos_attn=True, classes=5, wrap="module", name="v2_ft.pth", dtype=torch.float32):
    cfg = vit_config("vit_giant_patch14_224", **V2_TINY)
    shapes = v2_finetune_layout(cfg.embed_dim, cfg.depth, cfg.num_heads, int(cfg.embed_dim * cfg.mlp_ratio), classes,
                                cfg.patch_size, cos_attn=cos_attn)
    state = {k: v.to(dtype) for k, v in random_state(shapes).items()}
    path = tmp_path / name
    torch.save({wrap: state} if wrap else state, path)  # DeepSpeed files hold `module`, torch.amp ones `model`
    return path, state


# ------------------------------------------------------------------------------------------------ presets
def test_giant_preset_is_v2s_vit_g():
    """V2:models/modeling_finetune.py:517-529 (with LayerNorm eps 1e-6 and q/v biases)."""
    cfg = vit_config("vit_giant_patch14_224")
    assert (cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads) == (14, 1408, 40, 16)
    assert cfg.mlp_ratio == 48 / 11 and cfg.qkv_bias and cfg.norm_eps == 1e-6 and cfg.tubelet_size == 2
    assert int(cfg.embed_dim * cfg.mlp_ratio) == 6144  # the hidden width V2's Block computes (:238)


def test_v2_sizes_are_all_presets():
    """V2's fine-tuning code registers small, base, large, huge and giant (V2:models/modeling_finetune.py:457-529)."""
    expected = {"vit_small_patch16_224": (384, 12, 6), "vit_base_patch16_224": (768, 12, 12),
                "vit_large_patch16_224": (1024, 24, 16), "vit_huge_patch16_224": (1280, 32, 16),
                "vit_giant_patch14_224": (1408, 40, 16)}
    for name, (dim, depth, heads) in expected.items():
        c = vit_config(name)
        assert (c.embed_dim, c.depth, c.num_heads) == (dim, depth, heads), name


@pytest.mark.parametrize("classes", [400, 710])
def test_giant_parameter_count_matches_v2s_architecture(classes):
    """Counted on the meta device (nothing allocated) against V2's modules written out: about 1.01 billion."""
    with torch.device("meta"):
        model = create_model("vit_giant_patch14_224", num_classes=classes, tuning="full")
    d, depth, hidden, p = 1408, 40, 6144, 14
    per_block = (2 * d  # norm1
                 + 3 * d * d + 2 * d  # qkv weight, q_bias, v_bias
                 + d * d + d  # proj
                 + 2 * d  # norm2
                 + hidden * d + hidden + d * hidden + d)  # fc1, fc2
    expected = d * 3 * 2 * p * p + d + depth * per_block + 2 * d + classes * d + classes
    count = sum(t.numel() for t in model.parameters())
    assert count == expected
    assert 1.00e9 < count < 1.02e9


def test_giant_with_adaptformer_builds_on_meta():
    with torch.device("meta"):
        model = create_model("vit_giant_patch14_224", num_classes=51, tuning="adaptformer")
    report = parameter_report(model)
    assert report["groups"]["adapters"]["total"] == 40 * (1408 * 64 + 64 + 64 * 1408 + 1408)
    assert report["trainable"] == report["groups"]["adapters"]["total"] + report["groups"]["head"]["total"]


@pytest.mark.parametrize("frames", [2, 4, 6, 16])
def test_patch14_gives_16x16_tokens_per_frame_pair_at_any_frame_count(frames):
    """At 224 px a 14 px patch gives 16 x 16 tokens per tubelet; the sinusoid table covers any frame count."""
    model = create_model("vit_giant_patch14_224", num_classes=3, num_frames=frames, embed_dim=16, depth=1,
                         num_heads=2).eval()
    x = clips(batch=1, frames=frames, size=224)
    assert model.patch_embed.grid(frames, 224, 224) == (frames // 2, 16, 16)
    with torch.no_grad():
        tokens = model.embed(x)
        assert tokens.shape == (1, frames // 2 * 256, 16)
        assert model(x).shape == (1, 3)


# ------------------------------------------------------------------------------------------------ cosine attention
def _sinusoid(n, d):
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(d, dtype=torch.float64)[None, :]
    angle = pos / 10000 ** (2 * torch.div(j, 2, rounding_mode="floor") / d)
    return torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))


def v2_reference_logits(state, x, heads, patch, tubelet=2, eps=1e-6):
    """V2's fine-tuning forward with CosAttention, from the formulas, in float64 (V2:models/modeling_finetune.py):
    tubelets + sinusoid table (:300-318, :434-436); per block x += proj(attn(LN1 x)), x += fc2(gelu(fc1(LN2 x)))
    (:253-256); attention weights softmax(cos(q_i, k_j) * exp(min(s_h, 4.6052))) with q, k, v from one matmul
    plus (q_bias, 0, v_bias) (:111-135); mean over tokens, fc_norm, head (:445-453)."""
    s = {k: v.double() for k, v in state.items()}
    x = x.double()
    t = F.conv3d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=(tubelet, patch, patch))
    t = t.flatten(2).transpose(1, 2)
    n, d = t.shape[1:]
    t = t + _sinusoid(n, d)
    depth = len({k.split(".")[1] for k in s if k.startswith("blocks.")})
    hd = d // heads
    for i in range(depth):
        b = f"blocks.{i}."
        h = F.layer_norm(t, (d,), s[b + "norm1.weight"], s[b + "norm1.bias"], eps)
        bias = torch.cat([s[b + "attn.q_bias"], torch.zeros(d, dtype=torch.float64), s[b + "attn.v_bias"]])
        qkv = h @ s[b + "attn.qkv.weight"].T + bias
        q, k, v = (qkv[..., j * d:(j + 1) * d] for j in range(3))
        outs = []
        for head in range(heads):
            sl = slice(head * hd, (head + 1) * hd)
            qh, kh, vh = q[..., sl], k[..., sl], v[..., sl]
            cos = (qh / qh.norm(dim=-1, keepdim=True)) @ (kh / kh.norm(dim=-1, keepdim=True)).transpose(-1, -2)
            weights = torch.softmax(cos * math.exp(min(s[b + "attn.scale"][head].item(), 4.6052)), dim=-1)
            outs.append(weights @ vh)
        t = t + torch.cat(outs, dim=-1) @ s[b + "attn.proj.weight"].T + s[b + "attn.proj.bias"]
        h = F.layer_norm(t, (d,), s[b + "norm2.weight"], s[b + "norm2.bias"], eps)
        h = F.gelu(h @ s[b + "mlp.fc1.weight"].T + s[b + "mlp.fc1.bias"])
        t = t + h @ s[b + "mlp.fc2.weight"].T + s[b + "mlp.fc2.bias"]
    feat = F.layer_norm(t.mean(1), (d,), s["fc_norm.weight"], s["fc_norm.bias"], eps)
    return feat @ s["head.weight"].T + s["head.bias"]


def test_cosine_attention_matches_v2s_formula(tmp_path):
    path, state = tiny_v2_file(tmp_path, cos_attn=True)
    model = v2_tiny(cos_attn=True)
    load_pretrained(model, path)
    x = clips(frames=4, size=28)
    with torch.no_grad():
        ours = model.eval()(x).double()
    expected = v2_reference_logits(state, x, heads=2, patch=14)
    assert torch.allclose(ours, expected, atol=1e-5), (ours - expected).abs().max()


class _Wrapped(nn.Module):
    """A stand-in for LoRA-style wrappers: `qkv` stops being a bare nn.Linear."""

    def __init__(self, linear):
        super().__init__()
        self.base = linear

    def forward(self, x):
        return self.base(x)


def test_cosine_attention_through_a_wrapped_qkv_equals_the_fused_path():
    model = randomize_(v2_tiny(cos_attn=True), seed=2).eval()
    x = clips(frames=4, size=28)
    with torch.no_grad():
        fused = model(x)
        for block in model.blocks:
            block.attn.qkv = _Wrapped(block.attn.qkv)
        wrapped = model(x)
    assert torch.allclose(fused, wrapped, atol=1e-6)


def test_cosine_attention_scale_is_v2s_parameter_and_clamped():
    """Shape (heads, 1, 1), init log 10 (V2:models/modeling_finetune.py:92-95); no gradient above the clamp (:128)."""
    model = v2_tiny(cos_attn=True)
    scale = model.blocks[0].attn.scale
    assert scale.shape == (2, 1, 1) and torch.allclose(scale, torch.full((2, 1, 1), math.log(10.0)))
    with torch.no_grad():
        for block in model.blocks:
            block.attn.scale.copy_(torch.tensor([5.0, 1.0]).view(2, 1, 1))
    model(clips(frames=4, size=28)).square().sum().backward()
    grad = model.blocks[0].attn.scale.grad.flatten()
    assert grad[0] == 0 and grad[1] != 0


def test_cosine_attention_scales_skip_weight_decay_as_in_v2():
    """V2 excludes every `*.scale` from weight decay (V2:optim_factory.py:67-68); timm reads no_weight_decay()."""
    from timm.optim import create_optimizer_v2
    model = v2_tiny(cos_attn=True)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    scales = {id(b.attn.scale) for b in model.blocks}
    for group in optimizer.param_groups:
        if any(id(p) in scales for p in group["params"]):
            assert group["weight_decay"] == 0.0
    decayed = [g for g in optimizer.param_groups if g["weight_decay"] > 0]
    assert decayed and not any(id(p) in scales for g in decayed for p in g["params"])


def test_default_attention_has_no_scale_and_head_dropout_is_v2s_head_drop_rate():
    model = v2_tiny(head_dropout=0.5)
    assert not any(k.endswith("attn.scale") for k in model.state_dict())
    assert isinstance(model.head_dropout, nn.Dropout) and model.head_dropout.p == 0.5  # V2: modeling_finetune.py:393
    features = torch.ones(64, 32)
    model.train()
    dropped = model.forward_head(features)
    model.eval()
    assert not torch.allclose(dropped, model.forward_head(features))


# ------------------------------------------------------------------------------------------------ checkpoint layouts
@pytest.mark.parametrize("wrap", ["module", "model", None])
@pytest.mark.parametrize("cos_attn", [False, True])
def test_v2_finetuned_layout_round_trip(tmp_path, wrap, cos_attn):
    """V2 reads `model` or `module` (V2:run_class_finetuning.py:284, 549-556; extract_tad_feature.py:129-134)."""
    path, state = tiny_v2_file(tmp_path, cos_attn=cos_attn, wrap=wrap)
    model = v2_tiny(cos_attn=cos_attn)
    report = load_pretrained(model, path)
    assert not report.ignored and not report.initialised
    own = model.state_dict()
    assert set(state) == set(own)
    for key, tensor in state.items():
        assert torch.equal(own[key], tensor), key


@pytest.mark.parametrize("prefix", ["_orig_mod.", "backbone.", "module._orig_mod."])
def test_v2_strips_compile_and_backbone_prefixes(tmp_path, prefix):
    """V2:run_class_finetuning.py:557-560 (`_orig_mod.`) and :584-590 (`backbone.`, `encoder.`)."""
    _, state = tiny_v2_file(tmp_path)
    path = tmp_path / "prefixed.pth"
    torch.save({"module": {prefix + k: v for k, v in state.items()}}, path)
    model = v2_tiny(cos_attn=True)
    report = load_pretrained(model, path)
    assert not report.ignored and not report.initialised


def test_v2_pretrained_layout_loads_the_encoder_and_names_what_it_ignores(tmp_path):
    cfg = vit_config("vit_giant_patch14_224", **V2_TINY)
    shapes = v2_pretrain_layout(cfg.embed_dim, cfg.depth, cfg.num_heads, int(cfg.embed_dim * cfg.mlp_ratio), 14,
                                cos_attn=True)
    state = random_state(shapes, seed=1)
    path = tmp_path / "v2_pt.pth"
    torch.save({"model": state}, path)  # V2's pretraining saves {"model": ...} (V2:utils.py:473-479)
    model = v2_tiny("adaptformer", cos_attn=True)
    report = load_pretrained(model, path)
    own = model.state_dict()
    for key, tensor in state.items():
        if key.startswith("encoder.blocks.") or key.startswith("encoder.patch_embed."):
            assert torch.equal(own[key[len("encoder."):]], tensor), key
    ignored = set(report.ignored)
    assert {"norm.weight", "norm.bias", "encoder_to_decoder.weight", "mask_token"} <= ignored
    assert any(k.startswith("decoder.blocks.") and k.endswith("attn.scale") for k in ignored)
    assert all(k.startswith(("fc_norm.", "head.")) or "mlp_adapter" in k for k in report.initialised)


def test_distilled_vit_b_layout_loads_into_vit_base(tmp_path):
    """The distilled ViT-B (MODEL_ZOO `vit_b_k710_dl_from_giant.pth`, V2:docs/MODEL_ZOO.md:37) is V2's fine-tune
    layout with a K710 head, read under `module`; the released file stores half-precision tensors (173.6 MB
    for 87 M weights). Each tensor here is one constant broadcast to its full shape, so the file stays tiny."""
    cfg = vit_config("vit_base_patch16_224")
    shapes = v2_finetune_layout(768, 12, 12, 3072, 710, 16)
    state = {k: torch.full((1,), (i % 97) / 97, dtype=torch.float16).expand(s) for i, (k, s) in enumerate(shapes.items())}
    path = tmp_path / "vit_b_k710_dl_from_giant.pth"
    torch.save({"module": state}, path)
    assert path.stat().st_size < 1_000_000
    with torch.device("meta"):  # weights come from the file: skip the random init of 87 M weights
        model = create_model("vit_base_patch16_224", num_classes=51, tuning="adaptformer")
    model.to_empty(device="cpu")
    assert model.cfg.embed_dim == cfg.embed_dim
    report = load_pretrained(model, path)
    assert report.head_dropped and set(report.ignored) == {"head.weight", "head.bias"}
    own = model.state_dict()
    for key, tensor in state.items():
        if not key.startswith("head."):
            assert own[key].dtype == torch.float32 and torch.equal(own[key], tensor.float()), key


def test_cosine_attention_mismatch_is_named(tmp_path):
    path, _ = tiny_v2_file(tmp_path, cos_attn=True)
    with pytest.raises(CheckpointError, match="cos_attn=True"):
        load_pretrained(v2_tiny(), path)
    plain, _ = tiny_v2_file(tmp_path, cos_attn=False, name="plain.pth")
    with pytest.raises(CheckpointError, match="cos_attn=False"):
        load_pretrained(v2_tiny(cos_attn=True), plain)


def test_unknown_v2_keys_are_refused(tmp_path):
    _, state = tiny_v2_file(tmp_path)
    state["blocks.0.attn.relative_position_bias_table"] = torch.zeros(3, 2)
    path = tmp_path / "odd.pth"
    torch.save({"module": state}, path)
    with pytest.raises(CheckpointError, match="relative_position_bias_table"):
        load_pretrained(v2_tiny(cos_attn=True), path)


# ------------------------------------------------------------------------------------------------ tuning methods
@pytest.mark.parametrize("cos_attn", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_on_a_v2_backbone(tmp_path, method, cos_attn):
    """Load a V2 file, take two AdamW steps: something trainable moves, nothing frozen does."""
    path, _ = tiny_v2_file(tmp_path, cos_attn=cos_attn)
    model = v2_tiny(method, cos_attn=cos_attn)
    load_pretrained(model, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    scales = {n for n in before if n.endswith("attn.scale")}
    assert (scales <= trainable) if method == "full" else not (scales & trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    x, y = clips(frames=4, size=28), torch.tensor([0, 3])
    for _ in range(2):
        loss = F.cross_entropy(model(x), y)
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.state_dict()
    params = dict(model.named_parameters())
    moved = {k for k in params if not torch.equal(before[k], after[k])}
    assert moved and moved <= trainable, sorted(moved - trainable)


def test_vpt_prompts_pass_through_cosine_attention(tmp_path):
    path, _ = tiny_v2_file(tmp_path, cos_attn=True)
    backbone, prompted = v2_tiny(cos_attn=True), v2_tiny("vpt", cos_attn=True, vpt_tokens=2)
    load_pretrained(backbone, path)
    load_pretrained(prompted, path)
    x = clips(frames=4, size=28)
    with torch.no_grad():
        assert not torch.allclose(backbone.eval()(x), prompted.eval()(x))


# ------------------------------------------------------------------------------------------------ configs
def test_v2_adaptformer_configs_are_generated_and_name_their_backbone():
    from video_adapt import config_grid
    from video_adapt.config import load_config
    names = {"v2_vit_s": "vit_small_patch16_224", "v2_vit_b": "vit_base_patch16_224",
             "v2_vit_g": "vit_giant_patch14_224"}
    assert sorted(config_grid.grid_backbones()) == sorted(names)
    for backbone in config_grid.grid_backbones():
        for dataset in config_grid.grid_datasets():
            path = config_grid.backbone_path(backbone, dataset)
            assert path.read_text() == config_grid.backbone_config(backbone, dataset), path
            cfg = load_config(path)
            assert (cfg.model.name, cfg.model.tuning, cfg.data.num_frames) == (names[backbone], "adaptformer", 16)
            assert cfg.data.batch_size * cfg.train.accum_steps == 32  # AdaptFormer's batch per GPU
