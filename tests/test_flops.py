"""The analytic FLOPs formula against torch's FlopCounterMode, method by method."""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from tiny_models import TINY as TWO_BLOCKS
from video_adapt import create_model
from video_adapt.models.flops import clip_flops, model_flops_utilisation

TINY = {**TWO_BLOCKS, "depth": 3, "num_classes": 5}  # three blocks: 'top blocks' [1, 2] leave one out
VARIANTS = {
    "full": dict(tuning="full"),
    "linear": dict(tuning="linear"),
    "adaptformer": dict(tuning="adaptformer", bottleneck=8),
    "adaptformer sequential": dict(tuning="adaptformer", bottleneck=8, adapter_position="sequential"),
    "adaptformer residual input": dict(tuning="adaptformer", bottleneck=8, adapter_input="residual"),
    "adaptformer top blocks": dict(tuning="adaptformer", bottleneck=8, adapter_layers=[1, 2]),
    "vpt deep": dict(tuning="vpt", vpt_tokens=3),
    "vpt shallow": dict(tuning="vpt", vpt_tokens=3, vpt_mode="shallow"),
    "lora qkv": dict(tuning="lora", lora_rank=4),
    "lora all targets, top blocks": dict(tuning="lora", lora_rank=2, lora_targets=["qkv", "proj", "fc1", "fc2"],
                                         adapter_layers=[1, 2]),
    "bitfit": dict(tuning="bitfit"),
    "st_adapter": dict(tuning="st_adapter", bottleneck=8),
    "st_adapter both, 3x3x3, top blocks": dict(tuning="st_adapter", bottleneck=8, st_position="both",
                                               st_kernel=[3, 3, 3], adapter_layers=[1, 2]),
    "st_adapter before the mlp": dict(tuning="st_adapter", bottleneck=4, st_position="mlp"),
}


def _conv_backward(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                   _output_padding, _groups, output_mask, out_shape, **kwargs) -> int:
    """Each gradient of a (non-transposed) convolution costs its forward. torch's own formula counts a grouped
    convolution's weight gradient as if it were ungrouped (`groups` times too much: ST-Adapter's depthwise conv)."""
    assert not transposed
    return conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=False) * (int(output_mask[0]) + int(output_mask[1]))


def _counted(model, batch: int = 2) -> tuple[float, float]:
    x = torch.randn(batch, 3, 4, 32, 32)
    fixed = {torch.ops.aten.convolution_backward: _conv_backward}
    with sdpa_kernel([SDPBackend.MATH]):  # the math path is made of counted matmuls
        with FlopCounterMode(display=False, custom_mapping=fixed) as forward:
            logits = model(x)
        with FlopCounterMode(display=False, custom_mapping=fixed) as backward:
            logits.sum().backward()
    return forward.get_total_flops() / batch, backward.get_total_flops() / batch


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_formula_matches_the_flop_counter(variant):
    torch.manual_seed(0)
    model = create_model("vit_nano_patch8_32", **TINY, **VARIANTS[variant]).train()
    flops = clip_flops(model)
    counted_forward, counted_backward = _counted(model)
    assert flops.forward == pytest.approx(counted_forward, rel=1e-9)
    assert flops.backward == pytest.approx(counted_backward, rel=1e-9)
    assert flops.train == flops.forward + flops.backward


def test_one_vit_b_block_at_16x224_by_hand():
    n, d = 1568, 768
    full = create_model("vit_base_patch16_224", num_classes=174, num_frames=16, depth=1, tuning="full")
    f = clip_flops(full)
    patch = 2 * n * 3 * 2 * 16 * 16 * d
    block = 24 * n * d * d + 4 * n * n * d
    assert f.forward == pytest.approx(patch + block + 2 * d * 174)
    assert f.backward == pytest.approx(patch + 2 * block + 2 * 2 * d * 174)
    assert model_flops_utilisation(1e12, 100, 400e12) == pytest.approx(0.25)


def test_merged_lora_costs_what_its_backbone_costs():
    from video_adapt.models.tuning import merge_lora
    lora = create_model("vit_nano_patch8_32", **TINY, tuning="lora", lora_rank=4, lora_targets=["qkv", "fc1"])
    plain = create_model("vit_nano_patch8_32", **TINY, tuning="linear")
    assert clip_flops(lora).forward > clip_flops(plain).forward
    assert clip_flops(merge_lora(lora)).forward == clip_flops(plain).forward


def test_conv_backward_count_agrees_with_torch_for_ungrouped_convolutions():
    """The corrected convolution formula above changes nothing where torch's is right (groups = 1)."""
    conv = torch.nn.Conv3d(4, 6, (3, 1, 1), padding=(1, 0, 0))
    x = torch.randn(2, 4, 2, 3, 3, requires_grad=True)
    counts = []
    for mapping in ({}, {torch.ops.aten.convolution_backward: _conv_backward}):
        y = conv(x)
        with FlopCounterMode(display=False, custom_mapping=mapping) as backward:
            y.sum().backward()
        counts.append(backward.get_total_flops())
    assert counts[0] == counts[1] == 2 * 2 * (2 * 2 * 3 * 3 * 6 * 4 * 3)
