import pytest

from video_adapt.config import ConfigError, load_config, parse_overrides


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  name: vit_nano_patch8_32\n  bottleneck: 8\ndata:\n  num_frames: 4\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "run.yaml").write_text("_base_: ../base.yaml\nmodel:\n  tuning: vpt\n")
    cfg = load_config(tmp_path / "sub" / "run.yaml", ["data.num_frames=8", "train.lr=0.01", "model.adapter_layers=[0, 1]"])
    assert (cfg.model.name, cfg.model.tuning, cfg.model.bottleneck) == ("vit_nano_patch8_32", "vpt", 8)
    assert cfg.data.num_frames == 8 and cfg.train.lr == 0.01 and cfg.model.adapter_layers == [0, 1]


def test_recipes_set_defaults_that_explicit_keys_override():
    paper = load_config(None, [])
    assert (paper.train.optimizer, paper.train.base_lr, paper.train.weight_decay, paper.train.epochs) == ("sgd", 0.1, 0.0, 90)
    vm = load_config(None, ["train.recipe=videomae", "train.mixup=0.5"])
    assert (vm.train.optimizer, vm.train.layer_decay, vm.model.drop_path_rate, vm.train.mixup) == ("adamw", 0.75, 0.1, 0.5)


@pytest.mark.parametrize("override,message", [
    (["train.lrr=1"], "unknown config key 'train.lrr'"),
    (["colour=red"], "unknown config key 'colour'"),
    (["model.tuning=prompt_tuning"], "model.tuning='prompt_tuning'"),
    (["model.tuning=st_adapter", "model.st_position=after"], "model: st_position must be one of attn, mlp, both"),
    (["model.tuning=lora", "model.lora_targets=[q, v]"], "model: lora_targets must be"),
    (["model.adapter_init=xavier"], "model: adapter_init must be one of article, lora, official"),
    (["train.recipe=magic"], "train.recipe='magic'"),
    (["nodot"], "not key=value"),
])
def test_bad_keys_and_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(None, override)


def test_missing_file_and_base_cycle(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_override_values_are_yaml_scalars():
    assert parse_overrides(["a.b=0.1", "c=true", "d=null", "e=x"]) == {"a": {"b": 0.1}, "c": True, "d": None, "e": "x"}


def test_every_grid_config_loads_and_is_generated():
    import importlib.util
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("make_configs", root / "tools" / "make_configs.py")
    make_configs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_configs)
    for dataset in make_configs.DATASETS:
        for method in make_configs.METHODS:
            for frames in make_configs.FRAMES:
                path = root / "configs" / dataset / f"{method}_{frames}f.yaml"
                assert path.read_text() == make_configs.grid_config(dataset, method, frames), path
                cfg = load_config(path)
                assert (cfg.model.tuning, cfg.data.num_frames) == (method, frames)
                assert cfg.model.num_classes == (174 if dataset == "ssv2" else 51)
                assert cfg.data.flip is (dataset != "ssv2")


def test_model_section_has_every_tuning_option_with_the_same_default():
    """The engine passes every TuningConfig option from the model section; both must agree on defaults."""
    from dataclasses import fields
    from video_adapt.config import ModelConfig
    from video_adapt.models.tuning import TUNING_OPTIONS, TuningConfig
    model, tuning = ModelConfig(), TuningConfig()
    for key in TUNING_OPTIONS:
        assert getattr(model, key) == getattr(tuning, key), key
    assert model.tuning == tuning.method
    assert {f.name for f in fields(ModelConfig)} >= set(TUNING_OPTIONS)


@pytest.mark.parametrize("method", ["adaptformer", "vpt", "linear", "full", "lora", "bitfit", "st_adapter"])
def test_every_method_config_loads(method):
    from pathlib import Path
    from video_adapt.models.tuning import METHODS
    assert method in METHODS
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "methods" / f"{method}.yaml")
    assert cfg.model.tuning == method
