"""The analytic FLOPs formula against torch's FlopCounterMode, method by method."""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from video_adapt import create_model
from video_adapt.models.flops import clip_flops, model_flops_utilisation

TINY = dict(embed_dim=32, depth=3, num_heads=2, patch_size=8, img_size=32, num_frames=4, num_classes=5)
VARIANTS = {
    "full": dict(tuning="full"),
    "linear": dict(tuning="linear"),
    "adaptformer": dict(tuning="adaptformer", bottleneck=8),
    "adaptformer sequential": dict(tuning="adaptformer", bottleneck=8, adapter_position="sequential"),
    "adaptformer residual input": dict(tuning="adaptformer", bottleneck=8, adapter_input="residual"),
    "adaptformer top blocks": dict(tuning="adaptformer", bottleneck=8, adapter_layers=[1, 2]),
    "vpt deep": dict(tuning="vpt", vpt_tokens=3),
    "vpt shallow": dict(tuning="vpt", vpt_tokens=3, vpt_mode="shallow"),
}


def _counted(model, batch: int = 2) -> tuple[float, float]:
    x = torch.randn(batch, 3, 4, 32, 32)
    with sdpa_kernel([SDPBackend.MATH]):  # the math path is made of counted matmuls
        with FlopCounterMode(display=False) as forward:
            logits = model(x)
        with FlopCounterMode(display=False) as backward:
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
