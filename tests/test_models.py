import math

import numpy as np
import pytest
import torch

from tiny_models import clips, randomize_, tiny_model
from video_adapt import create_model, parameter_report
from video_adapt.models.vit import sinusoid_position_table


def test_sinusoid_table_matches_formula_written_out():
    n, d = 7, 10
    expected = np.zeros((n, d))
    for pos in range(n):
        for j in range(d):
            angle = pos / 10000 ** (2 * (j // 2) / d)
            expected[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    assert np.allclose(sinusoid_position_table(n, d).numpy(), expected, atol=1e-6)


def test_tokens_are_time_major():
    model = tiny_model()
    x = torch.zeros(1, 3, 4, 32, 32)
    x[:, :, 2:] = 1.0  # second tubelet differs
    tokens = model.patch_embed(x)
    assert tokens.shape == (1, 2 * 4 * 4, 32)
    assert torch.allclose(tokens[0, :16], tokens[0, 0].expand(16, -1))
    assert not torch.allclose(tokens[0, 0], tokens[0, 16])


@pytest.mark.parametrize("frames", [2, 4, 8, 16])
def test_one_checkpoint_runs_at_any_frame_count(frames, tmp_path):
    source = randomize_(tiny_model())
    path = tmp_path / "ft.pth"
    torch.save({"module": source.state_dict()}, path)
    model = tiny_model(num_frames=frames)
    from video_adapt import load_pretrained
    load_pretrained(model, path)
    out = model.eval()(clips(frames=frames))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("method,kwargs", [
    ("adaptformer", {}),
    ("adaptformer", {"adapter_input": "residual"}),
    ("adaptformer", {"adapter_position": "sequential", "adapter_scale": "learnable"}),
    ("adaptformer", {"adapter_layers": [1], "bottleneck": 3}),
])
def test_untrained_adaptformer_equals_backbone(method, kwargs):
    backbone = randomize_(tiny_model())
    tuned = tiny_model(method, **kwargs)
    missing, unexpected = tuned.load_state_dict(backbone.state_dict(), strict=False)
    assert not unexpected and all("mlp_adapter" in k for k in missing)
    x = clips()
    assert torch.equal(backbone.eval()(x), tuned.eval()(x))


def _one_step(model):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    loss = torch.nn.functional.cross_entropy(model(clips()), torch.tensor([1, 3]))
    loss.backward()
    opt.step()


@pytest.mark.parametrize("method,trained_tags", [
    ("adaptformer", ("mlp_adapter.up.", "head.")),
    ("vpt", ("token_prompts.", "head.")),
    ("linear", ("head.", "fc_norm.")),
])
def test_one_step_changes_only_tuned_tensors(method, trained_tags):
    model = randomize_(tiny_model(method))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _one_step(model)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and not (changed & frozen)
    assert any(k.startswith("blocks.0.attn") for k in frozen)
    for tag in trained_tags:
        assert any(tag in k for k in changed), f"{tag} did not train"


def test_full_tuning_trains_everything():
    model = tiny_model("full")
    assert all(p.requires_grad for p in model.parameters())


def test_vit_base_adaptformer_parameter_counts():
    model = create_model("vit_base_patch16_224", num_classes=174, tuning="adaptformer", bottleneck=64)
    report = parameter_report(model)
    assert report["groups"]["adapters"]["total"] == 1_189_632 == 12 * (768 * 64 + 64 + 64 * 768 + 768)
    assert report["trainable_ratio"] < 0.02
    assert report["groups"]["backbone"]["trainable"] == 0
    assert report["trainable"] == 1_189_632 + 768 * 2 + 768 * 174 + 174


@pytest.mark.parametrize("tokens", [1, 4])
def test_vpt_deep_adds_tokens_times_width_times_depth(tokens):
    base = parameter_report(create_model("vit_base_patch16_224", tuning="linear"))["total"]
    report = parameter_report(create_model("vit_base_patch16_224", tuning="vpt", vpt_tokens=tokens))
    assert report["total"] - base == tokens * 768 * 12 == report["groups"]["prompts"]["total"]


def test_vpt_shallow_keeps_prompts_through_all_blocks():
    model = tiny_model("vpt", vpt_mode="shallow", vpt_tokens=3)
    seen = []
    for block in model.blocks:
        block.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    model(clips())
    assert seen == [32 + 3, 32 + 3]
    assert parameter_report(model)["groups"]["prompts"]["total"] == 3 * 32


def test_vpt_prompts_change_the_output():
    model = randomize_(tiny_model("vpt", vpt_tokens=2)).eval()
    x = clips()
    before = model(x)
    with torch.no_grad():
        model.token_prompts.prompts.normal_(0, 1.0)
    assert not torch.allclose(before, model(x))


def test_head_bn_linear_probe_sits_before_head():
    model = tiny_model("linear", head_bn=True)
    assert model.head_bn is not None and not list(model.head_bn.parameters())
    model.train()(clips(batch=4))
    assert model.head_bn.num_batches_tracked.item() == 1


def test_activation_checkpointing_gives_same_gradients():
    x = clips()
    grads = []
    for use_checkpoint in (False, True):
        model = randomize_(tiny_model("adaptformer", use_checkpoint=use_checkpoint))
        with torch.no_grad():
            for b in model.blocks:
                b.mlp_adapter.up.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        model.train()(x).sum().backward()
        grads.append(model.blocks[0].mlp_adapter.down.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_drop_path_is_active_only_in_training():
    model = randomize_(tiny_model(drop_path_rate=0.5)).eval()
    x = clips()
    assert torch.equal(model(x), model(x))
    torch.manual_seed(0)
    model.train()
    assert not torch.allclose(model(x), model(x))  # residual branches are dropped at random, per sample
    assert torch.equal(randomize_(tiny_model(drop_path_rate=0.0)).train()(x), randomize_(tiny_model()).eval()(x))


def test_bad_options_fail_with_a_clear_message():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("vit_gigantic")
    with pytest.raises(ValueError, match="unknown tuning method"):
        tiny_model("prefix_tuning")
    with pytest.raises(ValueError, match="out of range"):
        tiny_model("adaptformer", adapter_layers=[5])
    with pytest.raises(ValueError, match="does not divide"):
        tiny_model()(torch.zeros(1, 3, 3, 32, 32))


def test_wrapped_qkv_is_called_not_bypassed():
    """A LoRA-style wrapper around attn.qkv must change the output (HF VideoMAE bypasses it)."""
    model = randomize_(tiny_model()).eval()
    x = clips()
    before = model(x)

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.extra = torch.nn.Linear(inner.in_features, inner.out_features, bias=False)
            torch.nn.init.normal_(self.extra.weight, std=0.1)

        def forward(self, h):
            return self.inner(h) + self.extra(h)

    attn = model.blocks[0].attn
    plain = attn(torch.randn(1, 5, 32))
    assert plain.shape == (1, 5, 32)
    attn.qkv = Wrapped(attn.qkv)
    assert not torch.allclose(before, model(x))
    attn.qkv.extra.weight.data.zero_()
    assert torch.allclose(before, model(x), atol=1e-6)


def test_init_linear_and_norm_sets_linear_weights_by_the_given_rule_and_zero_biases():
    from video_adapt.models.vit import init_linear_and_norm
    linear, norm, conv = torch.nn.Linear(4, 3), torch.nn.LayerNorm(4), torch.nn.Conv1d(1, 1, 1)
    norm.weight.data.fill_(3.0), norm.bias.data.fill_(2.0)
    before = conv.weight.clone()
    for m in (linear, norm, conv):
        init_linear_and_norm(m, lambda w: torch.nn.init.constant_(w, 0.5))
    assert torch.equal(linear.weight, torch.full((3, 4), 0.5)) and not linear.bias.any()
    assert torch.equal(norm.weight, torch.ones(4)) and not norm.bias.any()
    assert torch.equal(conv.weight, before)  # other modules are left to their own init
