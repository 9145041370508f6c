"""The one data-protocol type and the one way views combine: what training records is what inference reads back."""
import pytest
import torch

from video_adapt.config import load_config
from video_adapt.data.protocol import DataProtocol, combine_views
from video_adapt.engine.data import DataFacts, resolve_data
from video_adapt.errors import CheckpointError


def _resolved(*overrides: str, dataset: str = "ssv2"):
    cfg = load_config(None, ["data.root=unused", *overrides])
    return resolve_data(cfg, DataFacts(["a", "b"], dataset, dataset != "ssv2")).data


def test_a_resolved_config_and_its_record_give_the_same_protocol():
    for recipe, dataset in (("adaptformer", "ssv2"), ("videomae", "ssv2"), ("videomae", "hmdb51")):
        protocol = DataProtocol.from_config(_resolved(f"train.recipe={recipe}", f"data.dataset={dataset}",
                                                      dataset=dataset))
        assert DataProtocol.from_record({**protocol.record(), "lr": 0.1, "recipe": recipe}) == protocol
    af = DataProtocol.from_config(_resolved())
    assert (af.sampling, af.test_sampling, af.test_clips, af.test_crops, af.view_average) == \
        ("tsn", "dense", 4, 3, "logits")
    vm = DataProtocol.from_config(_resolved("train.recipe=videomae", "data.dataset=ssv2"))
    assert (vm.sampling, vm.test_sampling, vm.views, vm.view_average, vm.num_sample) == ("seg", "ssv2", 6, "softmax", 2)


def test_an_unresolved_config_or_a_record_without_sizes_is_refused():
    with pytest.raises(ValueError, match="not resolved"):
        DataProtocol.from_config(load_config(None, []).data)
    with pytest.raises(CheckpointError, match="how many frames"):
        DataProtocol.from_record({"view_average": "logits"})


def test_older_records_take_the_test_defaults_and_crops_can_be_replaced():
    old = DataProtocol.from_record({"num_frames": 8, "img_size": 32, "test_sampling": "ssv2", "test_clips": 2,
                                    "test_crops": 1, "stride": None, "view_average": "logits", "protocol": "x"})
    assert (old.stride, old.test_short_side, old.name, old.sampling) == (4, 32, "x", None)
    view = old.with_crops(3).eval_view()
    assert (view.clips, view.crops, view.short_side, view.sampling) == (2, 3, 32, "ssv2")
    with pytest.raises(ValueError, match="no training rule"):
        old.train_view()


def test_views_text_says_views_and_averaging():
    dense = DataProtocol(num_frames=8, img_size=224, test_clips=5, test_crops=3, view_average="softmax")
    assert dense.views_text() == ("5 clips x 3 crops = 15 views of 8 frames at 224 px (dense clips, stride 4), "
                                  "probabilities averaged")
    ssv2 = DataProtocol(num_frames=16, img_size=224, test_sampling="ssv2", test_clips=2, test_crops=1,
                        view_average="logits")
    assert ssv2.views_text().startswith("2 clips x 1 crop = 2 views of 16 frames")
    assert ssv2.views_text().endswith("(segment starts and centres), logits averaged")


def test_combine_views_is_mean_logits_or_mean_softmax():
    logits = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 0.0, 3.0]]])  # one video, two views
    by_logits = combine_views(logits, "logits")
    by_softmax = combine_views(logits, "softmax")
    assert torch.allclose(by_logits, torch.tensor([[2.0, 0.0, 1.5]]).softmax(-1))
    assert torch.allclose(by_softmax, logits.softmax(-1).mean(1))
    assert by_logits.argmax() == 0 and torch.allclose(by_softmax.sum(-1), torch.ones(1))
    with pytest.raises(ValueError, match="view_average"):
        combine_views(logits, "prob")
