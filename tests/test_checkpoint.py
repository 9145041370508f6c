import json
import os

import pytest
import torch

from tiny_models import clips, randomize_, tiny_model
from video_adapt import CheckpointError, load_adapters, load_model, load_pretrained, save_adapters, save_model

@pytest.fixture
def transformers():
    """Only the tests that compare with Hugging Face need it (an extra: pip install video_adapt[bench])."""
    return pytest.importorskip("transformers")


def hf_config(transformers, **kw):
    cfg = dict(image_size=32, patch_size=8, num_channels=3, num_frames=4, tubelet_size=2, hidden_size=32,
               num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, qkv_bias=True,
               use_mean_pooling=True, num_labels=5, layer_norm_eps=1e-12)
    cfg.update(kw)
    return transformers.VideoMAEConfig(**cfg)


def test_logits_match_transformers_videomae(tmp_path, transformers):
    torch.manual_seed(0)
    hf = transformers.VideoMAEForVideoClassification(hf_config(transformers))
    randomize_(hf, seed=3, std=0.1)
    hf.save_pretrained(tmp_path / "hf")
    hf.eval()
    model = tiny_model()
    report = load_pretrained(model, tmp_path / "hf")
    assert not report.initialised, report.initialised
    x = clips()
    with torch.no_grad():
        expected = hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits
        ours = model.eval()(x)
    assert torch.allclose(ours, expected, atol=1e-4), (ours - expected).abs().max()


def test_transformers_pretraining_weights_load_backbone(tmp_path, transformers):
    torch.manual_seed(0)
    hf = transformers.VideoMAEForPreTraining(hf_config(transformers, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                                                       decoder_num_attention_heads=2, decoder_intermediate_size=32))
    randomize_(hf, seed=4, std=0.1)
    hf.save_pretrained(tmp_path / "pre")
    model = tiny_model("adaptformer")
    report = load_pretrained(model, tmp_path / "pre")
    assert any(k.startswith("decoder") for k in report.ignored)
    assert all(not k.startswith(("blocks.", "patch_embed")) or "mlp_adapter" in k for k in report.initialised)
    x = clips()
    with torch.no_grad():
        expected = hf.videomae(x.permute(0, 2, 1, 3, 4)).last_hidden_state
        ours = model.eval().forward_tokens(model.embed(x))
    assert torch.allclose(ours, expected, atol=1e-4)


def test_hf_weights_file_alone_loads_with_either_bias_naming(tmp_path, transformers):
    from safetensors.torch import load_file, save_file
    hf = randomize_(transformers.VideoMAEForVideoClassification(hf_config(transformers)), seed=5)
    hf.save_pretrained(tmp_path / "hf")
    state = load_file(str(tmp_path / "hf" / "model.safetensors"))
    renamed = {k.replace("attention.attention.q_bias", "attention.attention.query.bias")
                .replace("attention.attention.v_bias", "attention.attention.value.bias"): v for k, v in state.items()}
    save_file(renamed, str(tmp_path / "alone.safetensors"))
    a, b = tiny_model(), tiny_model()
    load_pretrained(a, tmp_path / "hf" / "model.safetensors")
    load_pretrained(b, tmp_path / "alone.safetensors")
    x = clips()
    assert torch.equal(a.eval()(x), b.eval()(x))
    assert not torch.equal(a.blocks[0].attn.q_bias, torch.zeros_like(a.blocks[0].attn.q_bias))


def _official_layouts(state):
    pretrain = {f"encoder.{k}": v for k, v in state.items() if not k.startswith(("fc_norm", "head"))}
    pretrain.update({"encoder.norm.weight": torch.ones(32), "encoder.norm.bias": torch.zeros(32),
                     "decoder.blocks.0.mlp.fc1.weight": torch.zeros(4, 16), "decoder.norm.weight": torch.ones(16),
                     "encoder_to_decoder.weight": torch.zeros(16, 32), "mask_token": torch.zeros(1, 1, 16)})
    adaptformer = {}
    for k, v in state.items():
        if k.endswith("attn.qkv.weight"):
            for name, part in zip("qkv", v.chunk(3)):
                adaptformer[k.replace("qkv.weight", f"{name}_proj.weight")] = part
        else:
            adaptformer[k.replace("mlp.fc", "fc")] = v
    # AdaptFormer's own backbone file: VideoMAE's K400 pretraining checkpoint through AF:convert.py:5-35, which keeps
    # the `encoder.` keys (the final norm too), splits qkv into q/k/v_proj and renames mlp.fc* to fc*
    converted = {k: v for k, v in pretrain.items() if k.startswith("encoder.")}
    for k in [k for k in converted if k.endswith("attn.qkv.weight")]:
        for name, part in zip("qkv", converted.pop(k).chunk(3)):
            converted[k.replace("qkv.weight", f"{name}_proj.weight")] = part
    converted = {k.replace("mlp.fc", "fc"): v for k, v in converted.items()}
    return {"finetune": {"module": state}, "pretrain": {"model": pretrain, "epoch": 799},
            "adaptformer": {"model": adaptformer}, "adaptformer-converted": {"model": converted}}


@pytest.mark.parametrize("layout", ["finetune", "pretrain", "adaptformer", "adaptformer-converted"])
def test_official_layouts_load_to_the_same_features(layout, tmp_path):
    source = randomize_(tiny_model(), seed=7).eval()
    path = tmp_path / f"{layout}.pth"
    torch.save(_official_layouts(source.state_dict())[layout], path)
    model = tiny_model("adaptformer").eval()
    load_pretrained(model, path)
    x = clips()
    with torch.no_grad():
        expected = source.forward_tokens(source.embed(x))
        assert torch.equal(model.forward_tokens(model.embed(x)), expected)


def test_videomae_training_checkpoint_with_args_loads(tmp_path):
    import argparse
    import numpy as np
    source = randomize_(tiny_model(), seed=2)
    path = tmp_path / "checkpoint-best.pth"
    torch.save({"model": source.state_dict(), "args": argparse.Namespace(lr=1e-3), "epoch": 3,
                "max_accuracy": np.float64(70.1)}, path)
    report = load_pretrained(tiny_model(), path)
    assert "head.weight" in report.loaded


def test_head_is_dropped_when_class_count_differs(tmp_path):
    path = tmp_path / "k400.pth"
    torch.save({"module": randomize_(tiny_model(num_classes=400)).state_dict()}, path)
    report = load_pretrained(tiny_model(num_classes=7), path)
    assert report.head_dropped and "head.weight" in report.initialised


def test_missing_backbone_weight_is_refused(tmp_path):
    state = tiny_model().state_dict()
    del state["blocks.1.mlp.fc2.weight"]
    torch.save({"model": state}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="blocks.1.mlp.fc2.weight.*randomly initialised"):
        load_pretrained(tiny_model(), tmp_path / "broken.pth")


def test_wrong_architecture_is_refused(tmp_path):
    torch.save({"model": tiny_model(depth=3).state_dict()}, tmp_path / "deeper.pth")
    with pytest.raises(CheckpointError, match="larger architecture"):
        load_pretrained(tiny_model(), tmp_path / "deeper.pth")
    torch.save({"model": tiny_model(patch_size=16).state_dict()}, tmp_path / "p16.pth")
    with pytest.raises(CheckpointError, match="another shape"):
        load_pretrained(tiny_model(), tmp_path / "p16.pth")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": tiny_model().state_dict(), "payload": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="unsafe unpickling"):
        load_pretrained(tiny_model(), path)
    assert not marker.exists()


def test_missing_and_garbage_files_give_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_pretrained(tiny_model(), tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth") as err:
        load_pretrained(tiny_model(), tmp_path / "junk.pth")
    assert "\n" not in str(err.value)


def _trained_adaptformer(backbone_state):
    model = tiny_model("adaptformer", head_bn=True)
    model.load_state_dict(backbone_state, strict=False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model.train()(clips(batch=4)), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
    return model


def test_adapter_round_trip_reproduces_logits(tmp_path):
    backbone = randomize_(tiny_model(head_bn=True), seed=11).state_dict()
    trained = _trained_adaptformer(backbone)
    out = save_adapters(trained, tmp_path / "adapters", class_names=list("abcde"))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["method"] == "adaptformer" and config["class_names"] == list("abcde")
    fresh = tiny_model("adaptformer", head_bn=True)
    fresh.load_state_dict(backbone, strict=False)
    load_adapters(fresh, out)
    x = clips()
    assert torch.equal(trained.eval()(x), fresh.eval()(x))


def test_adapter_file_is_small_next_to_the_model(tmp_path):
    from video_adapt import create_model
    model = create_model("vit_base_patch16_224", num_classes=174, tuning="adaptformer")
    size = os.path.getsize(save_adapters(model, tmp_path / "a") / "adapter_model.safetensors")
    assert 4e6 < size < 6e6  # 1.19M adapter + head parameters in float32, against ~350 MB


def test_adapters_refuse_another_backbone_unless_forced(tmp_path):
    trained = _trained_adaptformer(randomize_(tiny_model(head_bn=True), seed=11).state_dict())
    save_adapters(trained, tmp_path / "adapters")
    other = tiny_model("adaptformer", head_bn=True)
    with pytest.raises(CheckpointError, match="another backbone"):
        load_adapters(other, tmp_path / "adapters")
    load_adapters(other, tmp_path / "adapters", force=True)
    with pytest.raises(CheckpointError, match="method"):
        load_adapters(tiny_model("vpt"), tmp_path / "adapters")


def test_save_model_round_trip_rebuilds_the_model(tmp_path):
    model = randomize_(tiny_model("vpt", vpt_tokens=2), seed=9).eval()
    path = save_model(model, tmp_path / "m.safetensors", class_names=list("vwxyz"))
    loaded, names = load_model(path)
    assert names == list("vwxyz") and loaded.tuning.method == "vpt"
    x = clips()
    assert torch.equal(model(x), loaded.eval()(x))
    report = load_pretrained(tiny_model(), path)  # our own file also works as a pretrained backbone
    assert "token_prompts.prompts" in report.ignored


@pytest.mark.parametrize("method,kwargs", [("lora", {"lora_targets": ["qkv", "fc1"]}), ("bitfit", {}),
                                           ("st_adapter", {"bottleneck": 4, "st_position": "both"})])
def test_new_methods_round_trip_through_adapter_files(method, kwargs, tmp_path):
    from video_adapt.checkpoint import backbone_fingerprint, read_adapter_config
    from video_adapt.models.factory import model_from_build_args
    backbone = randomize_(tiny_model(head_bn=True), seed=11)
    path = tmp_path / "backbone.pth"
    torch.save({"model": backbone.state_dict()}, path)
    trained = tiny_model(method, head_bn=True, **kwargs)
    load_pretrained(trained, path)
    before = backbone_fingerprint(trained)
    if method != "bitfit":  # the frozen backbone under its plain names, also where LoRA wraps it
        assert before == backbone_fingerprint(backbone)
    opt = torch.optim.SGD([p for p in trained.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(trained.train()(clips(batch=4)), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
    assert backbone_fingerprint(trained) == before  # BitFit's trained biases travel in the adapter file instead
    out = save_adapters(trained, tmp_path / "adapters")
    config = read_adapter_config(out)
    assert config["method"] == method and config["build_args"]["tuning"] == method
    fresh = model_from_build_args(config["build_args"])
    load_pretrained(fresh, path)
    load_adapters(fresh, out)
    x = clips()
    assert torch.equal(trained.eval()(x), fresh.eval()(x))
    with pytest.raises(CheckpointError, match="another backbone"):
        load_adapters(model_from_build_args(config["build_args"]), out)


def test_merged_lora_refuses_adapter_files(tmp_path):
    from video_adapt import merge_lora
    model = tiny_model("lora")
    save_adapters(model, tmp_path / "adapters")
    merge_lora(model)
    with pytest.raises(CheckpointError, match="merged"):
        save_adapters(model, tmp_path / "again")
    with pytest.raises(CheckpointError, match="merged"):
        load_adapters(model, tmp_path / "adapters")
    assert not (tmp_path / "again").exists()
