import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_params_tool_prints_vit_base_tables_at_the_papers_sizes():
    out = subprocess.run([sys.executable, "-m", "video_adapt", "params", "--model", "vit_base_patch16_224", "--tuning",
                          "adaptformer", "vpt", "lora", "bitfit", "st_adapter"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert "adapters       1,189,632     1,189,632" in out
    assert "prompts            9,216         9,216" in out
    assert "trainable share 1.51%" in out
    # sizes from configs/methods: LoRA rank 8 on qkv, BitFit's 92,928 biases, ST-Adapter 12 x 384
    assert "| lora | 294,912 | 430,254 | 0.50% |" in out
    assert "| bitfit | 0 | 228,270 | 0.26% |" in out
    assert "| st_adapter | 7,110,144 | 7,245,486 | 7.75% |" in out


def test_params_tool_flags_override_the_method_files():
    out = subprocess.run([sys.executable, "-m", "video_adapt", "params", "--tuning", "st_adapter", "--st-position", "both",
                          "--bottleneck", "64"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert f"adapters    {24 * (768 * 64 + 64 + 64 * 3 + 64 + 64 * 768 + 768):>12,}" in out
