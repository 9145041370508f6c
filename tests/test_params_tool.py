import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_params_tool_prints_vit_base_adaptformer_table():
    out = subprocess.run([sys.executable, "tools/params.py", "--model", "vit_base_patch16_224", "--tuning",
                          "adaptformer", "vpt"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "adapters       1,189,632     1,189,632" in out
    assert "prompts            9,216         9,216" in out
    assert "trainable share 1.51%" in out
