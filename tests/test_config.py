import pytest

from conftest import ROOT
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


@pytest.mark.parametrize("override,message", [
    ("data.batch_size=abc", "config key 'data.batch_size' expects int, got 'abc' (str)"),
    ("data.batch_size=2.5", "'data.batch_size' expects int"),
    ("data.batch_size=0", "data.batch_size=0 must be >= 1"),
    ("data.cache_mb=-1", "data.cache_mb=-1 must be >= 0"),
    ("train.lr=fast", "'train.lr' expects float or None"),
    ("train.lr=-0.1", "train.lr=-0.1 must be > 0"),
    ("model.head_bn=maybe", "'model.head_bn' expects bool"),
    ("model.adapter_scale=big", "config section model: adapter_scale must be a number or 'learnable'"),
    ("model.bottleneck=0", "config section model: bottleneck, vpt_tokens and lora_rank must be at least 1"),
    ("model.adapter_layers=[0, x]", "'model.adapter_layers' expects list of int or None"),
    ("data.crop_scale=0.5", "'data.crop_scale' expects list of float"),
    ("data.crop_scale=[0.5, 2]", "must be <= 1"),
    ("model.arch=3", "'model.arch' expects mapping"),
    ("model=3", "config key 'model' must be a mapping"),
    ("model.name=vit_gigantic", "model.name='vit_gigantic' is not one of"),
    ("data.randaugment=auto", "data.randaugment='auto' is not a timm RandAugment spec"),
])
def test_values_are_checked_against_type_and_range(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")) as err:
        load_config(None, [override])
    assert "\n" not in str(err.value)


def test_yaml_values_are_checked_and_well_typed_ones_kept(tmp_path):
    (tmp_path / "bad.yaml").write_text("data:\n  num_workers: -1\n")
    with pytest.raises(ConfigError, match="data.num_workers=-1 must be >= 0"):
        load_config(tmp_path / "bad.yaml")
    cfg = load_config(None, ["model.adapter_scale=learnable", "model.adapter_scale=0.5", "train.lr=1e-3",
                             "train.layer_decay=1", "model.pretrained=null", "data.flip=null"])
    # PyYAML reads 1e-3 as a string: it is still a valid float; an int is a valid float
    assert (cfg.model.adapter_scale, cfg.train.lr, cfg.train.layer_decay) == (0.5, 0.001, 1)
    assert cfg.model.pretrained is None and cfg.data.flip is None


def test_override_values_are_yaml_scalars():
    assert parse_overrides(["a.b=0.1", "c=true", "d=null", "e=x"]) == {"a": {"b": 0.1}, "c": True, "d": None, "e": "x"}


def test_every_grid_config_loads_and_is_generated():
    from video_adapt import config_grid
    assert config_grid.grid_datasets() == ["hmdb51_split1", "hmdb51_split2", "hmdb51_split3", "ssv2"]
    assert config_grid.grid_methods() == ["adaptformer", "vpt", "linear", "full"]
    for dataset in config_grid.grid_datasets():
        for method in config_grid.grid_methods():
            for frames in config_grid.FRAMES:
                path = config_grid.grid_path(dataset, method, frames)
                assert path.read_text() == config_grid.grid_config(dataset, method, frames), path
                cfg = load_config(path)
                assert (cfg.model.tuning, cfg.data.num_frames) == (method, frames)
                assert cfg.model.num_classes == (174 if dataset == "ssv2" else 51)
                assert cfg.data.dataset == ("ssv2" if dataset == "ssv2" else "hmdb51")
                # the official recipe, not overridden by a method or base file
                assert cfg.train.recipe == "adaptformer" and cfg.train.global_batch == 1024
                assert cfg.model.head_bn and (cfg.model.adapter_input, cfg.model.adapter_init) == ("residual", "official")


def test_model_section_has_every_tuning_option_with_the_same_default():
    """The engine passes every TuningConfig option from the model section; both must agree on defaults."""
    from dataclasses import fields
    from video_adapt.config import ModelConfig
    from video_adapt.models.methods import TUNING_OPTIONS, TuningConfig
    model, tuning = ModelConfig(), TuningConfig()
    for key in TUNING_OPTIONS:
        assert getattr(model, key) == getattr(tuning, key), key
    assert model.tuning == tuning.method
    assert {f.name for f in fields(ModelConfig)} >= set(TUNING_OPTIONS)


@pytest.mark.parametrize("method", ["adaptformer", "vpt", "linear", "full", "lora", "bitfit", "st_adapter"])
def test_every_method_config_loads(method):
    from video_adapt.models.methods import METHODS
    assert method in METHODS
    cfg = load_config(ROOT / "video_adapt" / "configs" / "methods" / f"{method}.yaml")
    assert cfg.model.tuning == method


def test_configs_are_found_by_shipped_name_repository_path_or_file(tmp_path):
    from video_adapt.resources import configs_dir, resolve_config, shipped_config
    expected = configs_dir() / "ssv2" / "adaptformer_8f.yaml"
    for name in ("ssv2/adaptformer_8f", "ssv2/adaptformer_8f.yaml", "configs/ssv2/adaptformer_8f.yaml",
                 "video_adapt/configs/ssv2/adaptformer_8f.yaml"):
        assert shipped_config(name) == expected, name
    assert shipped_config("../pyproject") is None and shipped_config("ssv2/nothing") is None
    mine = tmp_path / "ssv2" / "adaptformer_8f.yaml"  # a file on disk wins over the shipped name
    mine.parent.mkdir()
    mine.write_text("_base_: ssv2/adaptformer_8f\ndata:\n  num_frames: 2\n")
    assert resolve_config(mine) == mine.resolve()
    cfg = load_config(mine)  # its _base_ names the shipped config
    assert cfg.data.num_frames == 2 and cfg.data.dataset == "ssv2" and cfg.model.tuning == "adaptformer"
    with pytest.raises(ConfigError, match="nowhere.yaml: config file not found, and no shipped config"):
        load_config(tmp_path / "nowhere.yaml")


def test_pretrained_demo_names_the_committed_backbone():
    from video_adapt.resources import demo_backbone
    assert demo_backbone().is_file()
    assert load_config("demo/base").model.pretrained == str(demo_backbone())
    assert load_config(None, ["model.pretrained=demo"]).model.pretrained == str(demo_backbone())
    assert load_config(None, ["model.pretrained=none"]).model.pretrained == "none"


def test_repository_tooling_knows_it_runs_from_a_checkout():
    from video_adapt.resources import repository_root
    assert (repository_root("a test") / "tools" / "gpu_check.py").is_file()
