"""Several tasks on one frozen backbone: the point of parameter-efficient tuning at serving time.

Every task is a full `VisionTransformer` (its method's modules, `fc_norm`, head) whose frozen backbone tensors are
the very tensors of one shared backbone (`share_backbone`: same storage, loaded once), so each task model alone gives
exactly its single-task logits. `MultiTaskModel` runs them together:

- linear probing (and any method whose backbone forward is the pretrained one, `MethodSpec.plain_forward`): one
  backbone forward per clip, then every such task's `fc_norm -> head` on the shared pooled feature;
- AdaptFormer, ST-Adapter and unmerged LoRA (`MethodSpec.mixes`): one forward serves a batch whose rows belong to
  different tasks. The shared backbone's slots hold routers (`RoutedMLPAdapter`, `RoutedPreAdapter`,
  `RoutedLoRALinear`): attention, the MLPs and the patch embedding run once over the whole mixed batch, and inside
  each router the rows of a task go through that task's adapter. The batch is put in task order once (a
  permutation of the clips, undone on the pooled features), so a task's rows are one contiguous slice: routers take
  views and concatenate the results, no gathers;
- VPT (prompt tokens change the sequence length) and BitFit (every bias of every layer differs): their rows cannot
  share the backbone's layers, so they run grouped by task within the call, on their task model (shared weights,
  own prompts or biases).

Full fine-tuning carries its own backbone and is refused.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from video_adapt.models.methods import method_spec
from video_adapt.models.tuning import backbone_key, lora_parts, parameter_group, trains
from video_adapt.models.vit import VisionTransformer

# ViTConfig fields that decide the backbone's weights and their function; the others are the head's (classes,
# head_bn, head init, head dropout) or training-only (drop path, attention dropout, checkpointing)
BACKBONE_FIELDS = ("patch_size", "tubelet_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio",
                   "qkv_bias", "init_values", "use_mean_pooling", "norm_eps", "cos_attn")
PLAIN = -1  # the routing index of a row that runs the pretrained backbone (no task's modules)


def backbone_differences(a: VisionTransformer, b: VisionTransformer) -> list[str]:
    """`field a vs b` for every backbone architecture field where two models differ."""
    return [f"{f} {getattr(a.cfg, f)} vs {getattr(b.cfg, f)}" for f in BACKBONE_FIELDS
            if getattr(a.cfg, f) != getattr(b.cfg, f)]


def share_backbone(model: VisionTransformer, backbone: VisionTransformer) -> int:
    """Make every backbone tensor `model`'s method leaves frozen the very Parameter of `backbone` (same storage);
    returns how many were shared. BitFit's biases and everything a method adds stay `model`'s own."""
    shared = dict(backbone.named_parameters())
    method = model.tuning.method
    count = 0
    for name, param in list(model.named_parameters()):
        if parameter_group(name) != "backbone" or trains(name, method):
            continue
        source = shared.get(backbone_key(name))
        if source is None or source.shape != param.shape:
            raise ValueError(f"{name}: the shared backbone has no tensor of shape {tuple(param.shape)} for it")
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._parameters[leaf] = source
        count += 1
    return count


def materialize(model: nn.Module) -> list[str]:
    """Give every tensor still on the meta device uninitialised CPU memory; returns their names (they must be loaded
    next: `load_adapters` refuses a file that misses any tuned tensor)."""
    names = []
    for module_name, module in model.named_modules():
        for kind in ("_parameters", "_buffers"):
            for leaf, tensor in getattr(module, kind).items():
                if tensor is None or tensor.device.type != "meta":
                    continue
                empty = torch.empty(tensor.shape, dtype=tensor.dtype)
                getattr(module, kind)[leaf] = nn.Parameter(empty, tensor.requires_grad) if kind == "_parameters" \
                    else empty
                names.append(f"{module_name}.{leaf}" if module_name else leaf)
    return names


@dataclass
class Routing:
    """Which rows of the batch now running belong to which task (set by `MultiTaskModel` around a forward). The
    batch is ordered by task, so each task's rows are one contiguous span: routers slice (views), never gather."""

    spans: list[tuple[int, int, int]] = field(default_factory=list)  # (task index or PLAIN, first row, end row)

    def set(self, route: Sequence[int]) -> None:
        self.spans = []
        for row, task in enumerate(route):
            if self.spans and self.spans[-1][0] == task:
                self.spans[-1] = (task, self.spans[-1][1], row + 1)
            else:
                self.spans.append((task, row, row + 1))
        if len({t for t, _, _ in self.spans}) != len(self.spans):
            raise ValueError("a routed batch must hold each task's rows together")


class _Router(nn.Module):
    """A slot of the shared backbone that sends each task's rows through that task's module."""

    def __init__(self, routing: Routing, modules: dict[int, nn.Module]):
        super().__init__()
        object.__setattr__(self, "routing", routing)  # shared state, not a submodule
        self.by_task = nn.ModuleDict({str(t): m for t, m in modules.items()})

    def spans(self) -> list[tuple[nn.Module | None, int, int]]:
        """(the task's module in this slot or None, first row, end row) for every span of the running batch."""
        return [(self.by_task[str(t)] if str(t) in self.by_task else None, a, b) for t, a, b in self.routing.spans]


class RoutedMLPAdapter(_Router):
    """`Block.mlp_adapter` for many tasks (AdaptFormer): each row's MLP output gets its own task's branch."""

    def forward(self, residual: torch.Tensor, normed: torch.Tensor, mlp_out: torch.Tensor) -> torch.Tensor:
        spans = self.spans()
        if all(m is None for m, _, _ in spans):
            return mlp_out
        if len(spans) == 1:
            return spans[0][0](residual, normed, mlp_out)
        return torch.cat([m(residual[a:b], normed[a:b], mlp_out[a:b]) if m is not None else mlp_out[a:b]
                          for m, a, b in spans])


class RoutedPreAdapter(_Router):
    """`Block.pre_attn_adapter` / `pre_mlp_adapter` for many tasks (ST-Adapter); rows without one pass unchanged."""

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int] | None) -> torch.Tensor:
        spans = self.spans()
        if all(m is None for m, _, _ in spans):
            return x
        if len(spans) == 1:
            return spans[0][0](x, grid)
        return torch.cat([m(x[a:b], grid) if m is not None else x[a:b] for m, a, b in spans])


class RoutedLoRALinear(_Router):
    """A shared Linear of the backbone plus each task's unmerged LoRA update on its own rows:
    y = x W^T + b, and rows of task t get + scaling_t * B_t A_t x."""

    def __init__(self, routing: Routing, base: nn.Linear, modules: dict[int, nn.Module]):
        super().__init__(routing, modules)
        self.base = base

    @staticmethod
    def _delta(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return sum(layer.lora_B[n](layer.lora_A[n](x)) * layer.scaling[n] for n in layer.active_adapters
                   if n in layer.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        spans = self.spans()
        if all(m is None for m, _, _ in spans):
            return y
        if len(spans) == 1:
            return y + self._delta(spans[0][0], x).to(y.dtype)
        return torch.cat([y[a:b] + self._delta(m, x[a:b]).to(y.dtype) if m is not None else y[a:b]
                          for m, a, b in spans])


class MultiTaskModel(nn.Module):
    """One backbone, several task models sharing its tensors; `forward(x, route)` runs a batch whose rows may belong
    to different tasks, `every_task(x)` runs every task on every clip with the least backbone work."""

    def __init__(self, backbone: VisionTransformer, tasks: dict[str, VisionTransformer]):
        super().__init__()
        for name, task in tasks.items():
            spec = method_spec(task.tuning.method)
            if spec.saves_backbone:
                raise ValueError(f"task {name}: {spec.title} carries its own backbone; it cannot share one")
            different = backbone_differences(backbone, task)
            if different:
                raise ValueError(f"task {name}: another backbone architecture ({', '.join(different)})")
        self.backbone = backbone
        self.tasks = nn.ModuleDict(tasks)
        self.names = list(tasks)
        self.routing = Routing()
        self._lock = threading.Lock()  # the routing is per forward: one mixed forward at a time
        self.mixed = [i for i, t in enumerate(tasks.values()) if method_spec(t.tuning.method).mixes
                      and not method_spec(t.tuning.method).plain_forward]
        self.plain = [i for i, t in enumerate(tasks.values()) if method_spec(t.tuning.method).plain_forward]
        self.grouped = [i for i in range(len(tasks)) if i not in self.mixed and i not in self.plain]
        self._attach_routers()

    def _attach_routers(self) -> None:
        """Fill the shared backbone's slots with routers over the mixing tasks' modules (slots no task uses stay
        empty, so a batch of linear-probing rows runs the plain backbone)."""
        models = {i: self.tasks[self.names[i]] for i in self.mixed}
        for b, block in enumerate(self.backbone.blocks):
            for slot, router in (("mlp_adapter", RoutedMLPAdapter), ("pre_attn_adapter", RoutedPreAdapter),
                                 ("pre_mlp_adapter", RoutedPreAdapter)):
                found = {i: getattr(m.blocks[b], slot) for i, m in models.items()
                         if getattr(m.blocks[b], slot) is not None}
                if found:
                    setattr(block, slot, router(self.routing, found))
        lora: dict[str, dict[int, nn.Module]] = {}
        for i, model in models.items():
            for name, module in model.named_modules():
                base, pairs = lora_parts(module)
                if pairs:
                    lora.setdefault(name, {})[i] = module
        for name, layers in lora.items():
            parent, _, child = name.rpartition(".")
            owner = self.backbone.get_submodule(parent)
            setattr(owner, child, RoutedLoRALinear(self.routing, getattr(owner, child), layers))

    def _pooled(self, x: torch.Tensor, route: Sequence[int]) -> torch.Tensor:
        """Pooled features (B, D) of rows routed to a task index or PLAIN: the rows are put in task order (a no-op
        for `every_task`'s batches), the mixing tasks' rows run in one backbone forward, the grouped tasks' rows on
        their own task models, and the features go back to the rows' order."""
        order = sorted(range(len(route)), key=lambda r: self._rank(route[r]))  # stable: rows keep their order
        if order != list(range(len(route))):
            index = torch.as_tensor(order, device=x.device)
            pooled = self._pooled(x[index], [route[r] for r in order])
            return pooled[torch.argsort(index)]
        route = list(route)
        together = sum(1 for t in route if t not in self.grouped)  # PLAIN and the mixing tasks sort first
        parts = []
        if together:
            with self._lock:
                self.routing.set(route[:together])
                try:
                    parts.append(self.backbone.forward_pooled(x[:together]))
                finally:
                    self.routing.set([])
        for task in self.grouped:
            rows = [r for r, t in enumerate(route) if t == task]
            if rows:
                parts.append(self.tasks[self.names[task]].forward_pooled(x[rows[0]:rows[-1] + 1]))
        return parts[0] if len(parts) == 1 else torch.cat([p.to(parts[0].dtype) for p in parts])

    def _rank(self, task: int) -> tuple[bool, int]:
        """Batch order: PLAIN, the mixing tasks, then the grouped ones, each by index."""
        return task in self.grouped, task

    def _head(self, task: int, pooled: torch.Tensor) -> torch.Tensor:
        model = self.tasks[self.names[task]]
        return model.forward_head(model.norm_pooled(pooled))

    def forward(self, x: torch.Tensor, tasks: Sequence[str]) -> list[torch.Tensor]:
        """Logits of row i under task `tasks[i]`, rows of any tasks mixed in one batch (a list: class counts
        differ between tasks)."""
        if len(tasks) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} clips but {len(tasks)} task names")
        unknown = sorted(set(tasks) - set(self.names))
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; this model serves {', '.join(self.names)}")
        index = [self.names.index(t) for t in tasks]
        pooled = self._pooled(x, [PLAIN if i in self.plain else i for i in index])
        out: list[torch.Tensor | None] = [None] * len(tasks)
        for task in sorted(set(index)):
            rows = [r for r, i in enumerate(index) if i == task]
            for r, logits in zip(rows, self._head(task, pooled[torch.as_tensor(rows, device=x.device)])):
                out[r] = logits
        return out

    def every_task(self, x: torch.Tensor, tasks: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Logits (B, C_task) of every clip under every task: the plain forward once for all linear-probing tasks, one
        mixed forward for the adapter tasks (the batch repeated once per task), the others task by task."""
        wanted = [self.names.index(t) for t in (tasks or self.names)]
        b = x.shape[0]
        blocks = sorted({PLAIN if t in self.plain else t for t in wanted}, key=self._rank)
        clips = x.repeat(len(blocks), 1, 1, 1, 1) if len(blocks) > 1 else x
        pooled = self._pooled(clips, [t for t in blocks for _ in range(b)])
        out = {}
        for t in wanted:
            at = blocks.index(PLAIN if t in self.plain else t) * b
            out[self.names[t]] = self._head(t, pooled[at:at + b])
        return out
