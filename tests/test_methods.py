"""LoRA (through peft), BitFit and ST-Adapter; AdaptFormer's three adapter initialisations; VPT's prompt init."""
import math

import pytest
import torch
from torch import nn

from tiny_models import TINY, clips, randomize_, tiny_model
from video_adapt import create_model, load_pretrained, merge_lora, parameter_report
from video_adapt.models.tuning import AdaptMLP, PromptTokens, STAdapter
from video_adapt.models.methods import TuningConfig


def _backbone_file(tmp_path, seed=3):
    """A randomised plain backbone (no zero biases hiding a mapping mistake), saved as a checkpoint."""
    backbone = randomize_(tiny_model(), seed=seed)
    path = tmp_path / "backbone.pth"
    torch.save({"model": backbone.state_dict()}, path)
    return backbone.eval(), path


def _vit_b(**kwargs):
    """ViT-B for counting parameters: on the meta device, nothing is allocated or initialised."""
    with torch.device("meta"):
        return create_model("vit_base_patch16_224", num_classes=174, **kwargs)


def _unfused(model):
    """The backbone with each qkv called as a module: the path a wrapped (LoRA) qkv takes, bias added after."""
    for block in model.blocks:
        block.attn.qkv = nn.Sequential(block.attn.qkv)
    return model


# ----------------------------------------------------------------------------------------------- LoRA
def test_untrained_lora_equals_backbone_exactly(tmp_path):
    backbone, path = _backbone_file(tmp_path)
    x = clips()
    expected = backbone(x)
    inner = create_model("vit_base_patch16_224", num_classes=5, tuning="lora", lora_targets=["proj", "fc1", "fc2"],
                         **TINY)
    report = load_pretrained(inner, path)  # the wrapped weights load through their plain names
    assert not report.initialised or all("lora_" in k or k.startswith("fc_norm") for k in report.initialised)
    assert torch.equal(inner.eval()(x), expected)
    qkv = tiny_model("lora", lora_rank=3)
    load_pretrained(qkv, path)
    # a wrapped qkv adds q_bias / v_bias after its matmul instead of inside it: exact against that same path
    assert torch.equal(qkv.eval()(x), _unfused(backbone)(x))
    assert torch.allclose(qkv(x), expected, atol=1e-6)


def test_lora_wraps_the_chosen_layers_with_peft():
    from peft.tuners.lora import LoraLayer
    model = tiny_model("lora", lora_rank=2, lora_alpha=6, lora_targets=["qkv", "fc2"], adapter_layers=[1])
    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, LoraLayer))
    assert wrapped == ["blocks.1.attn.qkv", "blocks.1.mlp.fc2"]
    assert model.blocks[1].attn.qkv.scaling["default"] == 3.0
    assert torch.equal(model.blocks[1].attn.qkv.lora_B["default"].weight, torch.zeros(96, 2))
    assert isinstance(model.patch_embed.proj, nn.Conv3d) and type(model.blocks[0].attn.proj) is nn.Linear


def test_merged_lora_equals_unmerged_and_is_the_plain_backbone(tmp_path):
    model = randomize_(tiny_model("lora", lora_rank=4, lora_targets=["qkv", "proj", "fc1", "fc2"]), seed=5).eval()
    x = clips()
    unmerged = model(x)
    merge_lora(model)
    assert torch.allclose(model(x), unmerged, atol=1e-5)
    plain = tiny_model("linear")
    assert list(model.state_dict()) == list(plain.state_dict())  # the backbone's names and nothing else
    for block in model.blocks:  # plain Linear: Attention.forward takes its fused F.linear path
        assert type(block.attn.qkv) is nn.Linear and type(block.mlp.fc1) is nn.Linear
    assert merge_lora(model) is model  # merging twice changes nothing
    with pytest.raises(ValueError, match="not tuned with LoRA"):
        merge_lora(tiny_model("adaptformer"))


def test_lora_parameter_counts_vit_base():
    qkv = parameter_report(_vit_b(tuning="lora", lora_rank=8))
    assert qkv["groups"]["lora"]["total"] == 294_912 == 12 * 8 * (768 + 3 * 768)
    assert qkv["groups"]["backbone"]["trainable"] == 0
    assert qkv["trainable"] == 294_912 + 768 * 2 + 768 * 174 + 174
    every = parameter_report(_vit_b(tuning="lora", lora_rank=8, lora_targets=["qkv", "proj", "fc1", "fc2"]))
    assert every["groups"]["lora"]["total"] == 12 * 8 * ((768 + 2304) + (768 + 768) + 2 * (768 + 3072)) == 1_179_648


# ----------------------------------------------------------------------------------------------- BitFit
def test_bitfit_trains_every_bias_and_the_head_only():
    model = tiny_model("bitfit")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    biases = {n for n, _ in model.named_parameters() if n.endswith("bias") and not n.startswith(("head", "fc_norm"))}
    assert biases >= {"patch_embed.proj.bias", "blocks.0.attn.q_bias", "blocks.0.attn.v_bias", "blocks.0.attn.proj.bias",
                      "blocks.0.mlp.fc1.bias", "blocks.0.mlp.fc2.bias", "blocks.0.norm1.bias", "blocks.0.norm2.bias"}
    assert trainable == biases | {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    backbone = randomize_(tiny_model())
    model.load_state_dict(backbone.state_dict())
    x = clips()
    assert torch.equal(model.eval()(x), backbone.eval()(x))  # adds nothing: the untrained model is its backbone


def test_bitfit_parameter_counts_vit_base():
    report = parameter_report(_vit_b(tuning="bitfit"))
    per_block = 768 * 2 + 768 + 3072 + 768 + 768 * 2  # q/v bias, proj, fc1, fc2, two LayerNorms
    assert report["groups"]["backbone"]["trainable"] == 12 * per_block + 768 == 92_928  # + the patch embedding's
    assert report["added"] == 0 and report["trainable"] == 92_928 + 768 * 2 + 768 * 174 + 174


# ----------------------------------------------------------------------------------------------- ST-Adapter
@pytest.mark.parametrize("kwargs", [{}, {"st_position": "mlp"}, {"st_position": "both", "st_kernel": [3, 3, 3]},
                                    {"adapter_layers": [1], "bottleneck": 3}])
def test_untrained_st_adapter_equals_backbone_exactly(kwargs):
    backbone = randomize_(tiny_model())
    tuned = tiny_model("st_adapter", **{"bottleneck": 8, **kwargs})
    missing, unexpected = tuned.load_state_dict(backbone.state_dict(), strict=False)
    assert not unexpected and missing and all("_adapter." in k for k in missing)
    x = clips()
    assert torch.equal(backbone.eval()(x), tuned.eval()(x))


def test_st_adapter_init_as_the_official_code():
    """linziyi96/st-adapter models_adapter.py:22-34: zero depthwise conv and biases, default Linear weights."""
    adapter = STAdapter(768, 384, (3, 1, 1))
    assert adapter.conv.groups == 384 and adapter.conv.padding == (1, 0, 0)
    assert not adapter.conv.weight.any() and not adapter.conv.bias.any()
    assert not adapter.down.bias.any() and not adapter.up.bias.any()
    bound = 1 / math.sqrt(768)  # nn.Linear's default: Kaiming-uniform a = sqrt(5)
    assert adapter.down.weight.abs().max() <= bound and adapter.down.weight.std().item() == pytest.approx(
        bound / math.sqrt(3), rel=0.05)


def test_st_adapter_convolves_over_time_height_width_of_the_token_grid():
    torch.manual_seed(0)
    grid = (4, 2, 3)  # tokens are time-major: index = (t * 2 + h) * 3 + w
    adapter = STAdapter(8, 4, (3, 1, 1))
    nn.init.normal_(adapter.conv.weight)
    x = torch.randn(1, 24, 8)
    poked = x.clone()
    poked[0, (1 * 2 + 0) * 3 + 2] += 1.0  # token at t=1, h=0, w=2
    with torch.no_grad():
        delta = (adapter(poked, grid) - adapter(x, grid)).abs().sum(-1)[0]
    changed = {(i // 6, (i // 3) % 2, i % 3) for i in torch.nonzero(delta > 1e-6).flatten().tolist()}
    assert changed == {(0, 0, 2), (1, 0, 2), (2, 0, 2)}  # the 3x1x1 kernel reaches t-1 and t+1 only
    with pytest.raises(ValueError, match="token grid"):
        adapter(x, None)


def test_st_adapter_parameter_counts_vit_base():
    """The official ViT-B/16 sizes: 12 x 384 (one per block) and 24 x 384 (two per block), kernel 3x1x1."""
    per_adapter = 768 * 384 + 384 + 384 * 3 + 384 + 384 * 768 + 768
    one = parameter_report(_vit_b(tuning="st_adapter", bottleneck=384))
    assert one["groups"]["adapters"]["total"] == 12 * per_adapter == 7_110_144
    two = parameter_report(_vit_b(tuning="st_adapter", bottleneck=384, st_position="both"))
    assert two["groups"]["adapters"]["total"] == 24 * per_adapter
    assert one["groups"]["backbone"]["trainable"] == 0


@pytest.mark.parametrize("method,trained", [("lora", ".lora_A."), ("lora", ".lora_B."), ("bitfit", "attn.q_bias"),
                                            ("st_adapter", "pre_attn_adapter.conv.")])
def test_one_step_trains_the_method_and_nothing_frozen(method, trained):
    model = randomize_(tiny_model(method))
    if method == "st_adapter":  # randomize_ left nothing zero; restore the official zero conv
        for block in model.blocks:
            nn.init.zeros_(block.pre_attn_adapter.conv.weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    torch.nn.functional.cross_entropy(model(clips()), torch.tensor([1, 3])).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and not changed & frozen
    assert any(trained in k for k in changed) and any(k.startswith("head.") for k in changed)


def test_bad_new_options_fail_with_a_clear_message():
    with pytest.raises(ValueError, match="lora_targets"):
        TuningConfig(method="lora", lora_targets=["q"])
    with pytest.raises(ValueError, match="st_kernel"):
        TuningConfig(method="st_adapter", st_kernel=[2, 1, 1])
    with pytest.raises(ValueError, match="st_position"):
        TuningConfig(method="st_adapter", st_position="before")
    with pytest.raises(ValueError, match="adapter_init"):
        TuningConfig(adapter_init="xavier")


# ----------------------------------------------------------------------------------------------- initialisations
def test_adapter_init_statistics():
    """article: Kaiming-normal down; lora: Kaiming-uniform(a=sqrt(5)) down (AF:models/adapter.py:43-48); official:
    trunc-normal(0.02) down and up, what AF runs after re-initialising every Linear (AF:models/vit_video.py:258,272-276).
    Zero biases in all three; zero up in the first two."""
    torch.manual_seed(0)
    fan_in = 768
    expected_down = {"article": math.sqrt(2 / fan_in), "lora": 1 / math.sqrt(3 * fan_in), "official": 0.02}
    for init, std in expected_down.items():
        adapter = AdaptMLP(fan_in, 64, init=init)
        assert adapter.down.weight.std().item() == pytest.approx(std, rel=0.03), init
        assert not adapter.down.bias.any() and not adapter.up.bias.any()
        if init == "official":
            assert adapter.up.weight.std().item() == pytest.approx(0.02, rel=0.03)
            assert adapter.up.weight.abs().max() <= 2.0  # timm's trunc_normal_ cuts at +-2 (absolute)
        else:
            assert not adapter.up.weight.any()
    assert AdaptMLP(fan_in, 64, init="lora").down.weight.abs().max() <= 1 / math.sqrt(fan_in)


@pytest.mark.parametrize("init", ["article", "lora"])
def test_zero_up_inits_start_at_the_backbone(init):
    backbone = randomize_(tiny_model())
    tuned = tiny_model("adaptformer", adapter_init=init, adapter_input="residual")
    tuned.load_state_dict(backbone.state_dict(), strict=False)
    x = clips()
    assert torch.equal(backbone.eval()(x), tuned.eval()(x))


def test_official_init_does_not_start_at_the_backbone():
    backbone = randomize_(tiny_model())
    tuned = tiny_model("adaptformer", adapter_init="official", adapter_input="residual")
    tuned.load_state_dict(backbone.state_dict(), strict=False)
    x = clips()
    assert (backbone.eval()(x) - tuned.eval()(x)).abs().max() > 1e-5  # far above float rounding (~1e-7 here)
    tokens = torch.randn(2, 10, 32)
    branch = tuned.blocks[0].mlp_adapter.branch(tokens)  # s * up(ReLU(down(x))), all weights ~ N(0, 0.02)
    assert branch.abs().max() > 1e-4


@pytest.mark.parametrize("tokens,mode", [(1, "deep"), (4, "deep"), (8, "shallow")])
def test_vpt_prompt_init_bound_is_the_official_codes(tokens, mode):
    """AF:models/vit_video.py:263-270: xavier_uniform_ on each (1, n, D) set: bound sqrt(6 / (D (n + 1)))."""
    torch.manual_seed(0)
    dim = 768
    prompts = PromptTokens(dim, 12, tokens, mode).prompts
    bound = math.sqrt(6 / (dim * (tokens + 1)))
    assert prompts.abs().max() <= bound and prompts.abs().max() > 0.98 * bound
    assert prompts.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
