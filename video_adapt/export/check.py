"""The self-check every export runs before it is published: the exported file and eager PyTorch on the same fixed
clips, logits compared. Batches of 1 and 3 while the graph was traced at 2, so a batch axis that did not stay dynamic
fails here rather than in a user's first call.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch

from video_adapt.errors import ExportError

CHECK_BATCHES = (1, 3)
TRACE_BATCH = 2
DEFAULT_TOLERANCE = 1e-4  # max abs logit difference allowed for fp32 files

Logits = Callable[[torch.Tensor], torch.Tensor]


def fixed_clips(batch: int, shape: tuple[int, int, int, int], seed: int = 0) -> torch.Tensor:
    """`batch` normalised clips of `shape` (3, T, H, W), the same on every machine (seeded normal noise: the
    normalised pixel range, no data needed)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, generator=g)


@dataclass
class CheckResult:
    max_abs_diff: float
    max_abs_logit: float
    tolerance: float | None
    batches: tuple[int, ...]
    top1_agreement: float  # share of the fixed clips whose top class is the same

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self, what: str) -> str:
        limit = f" (tolerance {self.tolerance:g})" if self.tolerance is not None else ""
        return (f"{what}: max abs logit difference to eager PyTorch {self.max_abs_diff:.3g}{limit} on "
                f"{sum(self.batches)} fixed clips, logits up to {self.max_abs_logit:.3g}, "
                f"top-1 agrees on {self.top1_agreement:.0%}")


@torch.no_grad()
def compare_logits(reference: Logits, candidate: Logits, shape: tuple[int, int, int, int], what: str,
                   tolerance: float | None = DEFAULT_TOLERANCE) -> CheckResult:
    """Run both on the fixed clips; raise ExportError when the candidate's logits differ by more than `tolerance`
    (None: measure only, as for int8 files, whose error is the point)."""
    diffs, largest, agree, total = [], 0.0, 0, 0
    for batch in CHECK_BATCHES:
        x = fixed_clips(batch, shape, seed=batch)
        ref = reference(x).float()
        try:
            out = candidate(x).float()
        except Exception as err:  # a runtime's own error types; the export is unusable either way
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ExportError(f"{what}: the exported model does not run on a batch of {batch} ({first})") from None
        if out.shape != ref.shape:
            raise ExportError(f"{what}: logits of shape {tuple(out.shape)} for a batch of {batch}, eager PyTorch gives "
                              f"{tuple(ref.shape)}")
        diffs.append((out - ref).abs().max())
        largest = max(largest, float(ref.abs().max()))
        agree += int((out.argmax(-1) == ref.argmax(-1)).sum())
        total += batch
    worst = float(torch.stack(diffs).max())  # a NaN anywhere stays NaN (Python's max would drop it)
    result = CheckResult(worst, largest, tolerance, CHECK_BATCHES, agree / total)
    if tolerance is not None and not worst <= tolerance:  # `not <=` also catches NaN
        raise ExportError(f"{what}: self-check failed: logits differ from eager PyTorch by {worst:.3g} (max abs) on "
                          f"the fixed clips, above the tolerance {tolerance:g}; nothing was written")
    return result
