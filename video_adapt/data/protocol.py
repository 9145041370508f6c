"""The data protocol of a run, resolved: how training clips are drawn and augmented, which test views each video
gets, and how their scores combine into one prediction. One frozen `DataProtocol` is built from the resolved run
config (`from_config`) or read back from what a trained model records (`from_record`), and training, testing,
inference, t-SNE and the web page all take their views and their averaging from it; `combine_views` is the one
place where the views of a video become its class probabilities (softmax over the classes, or for a multi-label task
an independent sigmoid per class).

The named protocols and their per-dataset values are video_adapt/recipes.py `DATA_PROTOCOLS`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from video_adapt.data.datasets import EvalView, TrainView

# mean logits then softmax (AdaptFormer) | mean of softmax (VideoMAE); multi-label: sigmoid in place of softmax
VIEW_AVERAGES = ("logits", "softmax")


@dataclass(frozen=True)
class DataProtocol:
    """Every setting a number depends on through its data: the training rule and augmentation, the test views and
    their averaging. Training fields are None in records of models saved before they were recorded."""

    num_frames: int
    img_size: int
    test_sampling: str = "dense"  # dense (T-DENSE) | ssv2 (T-SSV2)
    stride: int = 4  # frame stride of tsn, lin and dense
    test_clips: int = 4
    test_crops: int = 3
    test_short_side: int | None = None  # None = img_size
    view_average: str = "softmax"
    sampling: str | None = None  # tsn | lin | seg: the training rule
    train_crop: str | None = None  # msc | rrc
    crop_scale: tuple[float, float] | None = None
    flip: bool | None = None
    randaugment: str | None = None
    reprob: float | None = None
    num_sample: int | None = None
    name: str | None = None  # adaptformer | videomae (recipes.DATA_PROTOCOLS)
    dataset: str | None = None  # the dataset kind the per-dataset values were taken for
    multilabel: bool = False  # a set of classes per video: a sigmoid per class instead of a softmax over them

    def __post_init__(self) -> None:
        object.__setattr__(self, "multilabel", bool(self.multilabel))  # configs resolved before it existed say None
        if self.view_average not in VIEW_AVERAGES:
            raise ValueError(f"view_average must be one of {', '.join(VIEW_AVERAGES)}, not {self.view_average!r}")
        if self.test_short_side is None:
            object.__setattr__(self, "test_short_side", self.img_size)
        if self.crop_scale is not None:
            object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))

    @classmethod
    def from_config(cls, data: Any) -> "DataProtocol":
        """From a resolved `DataConfig` (engine.data.resolve_data has filled every protocol field)."""
        missing = [f for f in ("sampling", "test_sampling", "view_average") if getattr(data, f) is None]
        if missing:
            raise ValueError(f"the data config is not resolved yet ({', '.join(missing)} unset)")
        values = {f.name: getattr(data, f.name) for f in fields(cls) if f.name != "name"}
        return cls(name=data.protocol, **values)

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> "DataProtocol":
        """From what a trained model records (adapter_config.json / summary.json `data`, `record()` below); keys of
        the training facts beside it (recipe, lr, ...) are ignored. A one-line error if the essentials are missing."""
        from video_adapt.errors import CheckpointError
        record = dict(record or {})
        if "num_frames" not in record or "img_size" not in record:
            raise CheckpointError("the checkpoint does not say how many frames and which size the model was trained "
                                  "on; pass a training run directory or adapters saved by video-adapt train")
        if "protocol" in record and "name" not in record:
            record["name"] = record["protocol"]
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known and v is not None}
        return cls(**values)

    def record(self) -> dict[str, Any]:
        """What a trained model stores, readable by `from_record` (`protocol` is the name's key in records)."""
        out = asdict(self)
        out["protocol"] = out.pop("name")
        out["crop_scale"] = list(self.crop_scale) if self.crop_scale is not None else None
        return out

    def with_crops(self, crops: int | None) -> "DataProtocol":
        """The same protocol with another number of spatial test crops (None keeps the protocol's)."""
        return self if crops is None else replace(self, test_crops=int(crops))

    @property
    def views(self) -> int:
        return self.test_clips * self.test_crops

    def train_view(self) -> "TrainView":
        from video_adapt.data.datasets import TrainView
        if self.sampling is None:
            raise ValueError("this protocol record has no training rule (saved before training rules were recorded)")
        return TrainView(num_frames=self.num_frames, img_size=self.img_size, sampling=self.sampling,
                         stride=self.stride, crop=self.train_crop, crop_scale=tuple(self.crop_scale or (0.08, 1.0)),
                         flip=bool(self.flip), randaugment=self.randaugment, reprob=self.reprob or 0.0,
                         num_sample=self.num_sample or 1)

    def eval_view(self) -> "EvalView":
        from video_adapt.data.datasets import EvalView
        return EvalView(num_frames=self.num_frames, img_size=self.img_size, sampling=self.test_sampling,
                        stride=self.stride, clips=self.test_clips, crops=self.test_crops,
                        short_side=self.test_short_side)

    def views_text(self) -> str:
        """The test views and their averaging in words, for people reading a result."""
        rule = f"dense clips, stride {self.stride}" if self.test_sampling == "dense" else "segment starts and centres"

        def n(count: int, what: str) -> str:
            return f"{count} {what}" + ("" if count == 1 else "s")
        probabilities = "sigmoid probabilities" if self.multilabel else "probabilities"
        return (f"{n(self.test_clips, 'clip')} x {n(self.test_crops, 'crop')} = {n(self.views, 'view')} of "
                f"{self.num_frames} frames at {self.img_size} px ({rule}), "
                f"{'logits' if self.view_average == 'logits' else probabilities} averaged")


def combine_views(logits: "torch.Tensor", average: str, multilabel: bool = False) -> "torch.Tensor":
    """Class probabilities (B, C) of videos from the logits of their views (B, V, C), as the protocol combines
    them: `logits` = softmax of the mean logits (AF:engine_finetune.py:190-239), `softmax` = mean of the views'
    softmax (VM:engine_for_finetuning.py:233-282). Top-k of either is the top-k of what the official code ranks.
    `multilabel`: each class its own sigmoid instead of one softmax over the classes (sigmoid of the mean logits, or
    the mean of the views' sigmoids)."""
    def squash(x: "torch.Tensor") -> "torch.Tensor":
        return x.sigmoid() if multilabel else x.softmax(-1)

    if average == "logits":
        return squash(logits.float().mean(1))
    if average == "softmax":
        return squash(logits.float()).mean(1)
    raise ValueError(f"view_average must be one of {', '.join(VIEW_AVERAGES)}, not {average!r}")

