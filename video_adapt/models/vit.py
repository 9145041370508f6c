"""The VideoMAE spatiotemporal ViT, weight-compatible with the official `modeling_finetune.py` of VideoMAE and
VideoMAE V2 (OpenGVLab/VideoMAEv2: the ViT-g/14 preset, cosine attention, head dropout).

Parameter names follow the official fine-tune checkpoints (`patch_embed.proj`, `blocks.N.attn.qkv`,
`blocks.N.attn.q_bias` ...), so those files load without renaming. The backbone knows nothing about
tuning methods; it offers explicit extension points that `tuning.py` fills:

- `Block.mlp_adapter(residual, normed, mlp_out) -> mlp_out'`: rewrites the MLP branch of one block
  (AdaptFormer's AdaptMLP, parallel or sequential);
- `Block.pre_attn_adapter(x, grid) -> x'` / `Block.pre_mlp_adapter(x, grid) -> x'`: rewrite the residual stream
  before the attention / MLP branch, knowing the (time, height, width) token grid (ST-Adapter);
- `VisionTransformer.token_prompts`: `before_block(x, i)` / `after_block(x, i)` add and remove
  extra tokens around block i (VPT).
"""
from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from video_adapt.models.presets import PRESETS, SIZE_NAMES, ViTConfig, vit_config  # noqa: F401 (re-exported)


def init_linear_and_norm(m: nn.Module, linear_weight_init: Any) -> None:
    """VideoMAE's `_init_weights` for one module (`model.apply`): a Linear's weight by `linear_weight_init`
    (trunc-normal(0.02) when fine-tuning, Xavier-uniform when pretraining) and a zero bias; LayerNorm to 1 and 0."""
    if isinstance(m, nn.Linear):
        linear_weight_init(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


_SINUSOID_TABLES: dict[tuple[int, int], torch.Tensor] = {}


def _sinusoid_table_cpu(num_positions: int, dim: int) -> torch.Tensor:
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    channel = torch.arange(dim, dtype=torch.float64)
    angle = position / torch.pow(10000.0, 2 * torch.div(channel, 2, rounding_mode="floor") / dim)
    table = torch.empty_like(angle)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float()


def sinusoid_position_table(num_positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed 1-D table over all tokens (t-major): sin on even channels, cos on odd.

    It is not a weight, so one checkpoint serves any number of frames and any image size. Tables are cached, except
    while torch.export traces: it computes with fake tensors, and a cached fake table would break later eager calls.
    """
    key = (num_positions, dim)
    table = _SINUSOID_TABLES.get(key)
    if table is None:
        table = _sinusoid_table_cpu(num_positions, dim)
        if not torch.compiler.is_exporting():
            if len(_SINUSOID_TABLES) >= 32:
                _SINUSOID_TABLES.pop(next(iter(_SINUSOID_TABLES)))
            _SINUSOID_TABLES[key] = table
    return table


class PatchEmbed(nn.Module):
    """Tubelet embedding: Conv3d with kernel = stride = (tubelet, patch, patch); tokens t-major."""

    def __init__(self, patch_size: int, tubelet_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.proj = nn.Conv3d(
            in_chans, embed_dim, kernel_size=(tubelet_size, patch_size, patch_size),
            stride=(tubelet_size, patch_size, patch_size),
        )

    def grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        return num_frames // self.tubelet_size, height // self.patch_size, width // self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, t, h, w = x.shape
        if t % self.tubelet_size or h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"clip of {t} frames x {h}x{w} px does not divide into tubelets of "
                f"{self.tubelet_size} frames x {self.patch_size}x{self.patch_size} px"
            )
        # contiguous tokens: a transposed view here would make every residual add and norm of every block
        # strided (elementwise ops keep their first operand's layout); measured 10-15% of a CPU forward
        return self.proj(x).flatten(2).transpose(1, 2).contiguous()


# V2 clamps the log-scale at 4.6052 (its comment: log(1 / 0.01)), V2:models/modeling_finetune.py:127-128
COS_ATTN_MAX_LOG_SCALE = 4.6052


class Attention(nn.Module):
    """Multi-head self-attention through SDPA, with VideoMAE's q/v biases and no k bias.

    `qkv` is called as a module (its own bias is None) and the biases are added after, so wrappers
    around `qkv` such as LoRA are not bypassed.

    `cos_attn=True` is VideoMAE V2's CosAttention (V2:models/modeling_finetune.py:74-139): logits are the
    cosine similarity of q and k times exp(min(scale, 4.6052)), with `scale` a learned log-scale per head
    (shape (heads, 1, 1), initialised to log 10). SDPA's `scale=` is one number, so the per-head factor is
    folded into the normalised q and SDPA runs with scale 1.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float = 0.0, cos_attn: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = None
            self.v_bias = None
        self.cos_attn = cos_attn
        if cos_attn:  # the name `scale` is V2's, so its checkpoints load as they are
            self.scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)

    def qkv_bias(self) -> torch.Tensor | None:
        if self.q_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = self.qkv_bias()
        if type(self.qkv) is nn.Linear:  # fast path: bias fused into the matmul
            qkv = F.linear(x, self.qkv.weight, bias)
        else:  # a wrapped projection (LoRA and the like) is called as a module, never bypassed
            qkv = self.qkv(x)
            if bias is not None:
                qkv = qkv + bias.to(qkv.dtype)
        q, k, v = qkv.view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        dropout = self.attn_drop if self.training else 0.0
        if self.cos_attn:
            # under autocast the norms come out in float32; the kernel gets one dtype, as the fused path does
            logit_scale = self.scale.clamp(max=COS_ATTN_MAX_LOG_SCALE).exp()
            q = (F.normalize(q, dim=-1) * logit_scale).to(v.dtype)
            k = F.normalize(k, dim=-1).to(v.dtype)
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=1.0)
        else:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block. Official layer-scale names are `gamma_1` / `gamma_2`."""

    def __init__(self, cfg: ViTConfig, drop_path: float):
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.cos_attn)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if cfg.init_values > 0:
            self.gamma_1 = nn.Parameter(cfg.init_values * torch.ones(dim))
            self.gamma_2 = nn.Parameter(cfg.init_values * torch.ones(dim))
        else:
            self.gamma_1 = None
            self.gamma_2 = None
        self.mlp_adapter: nn.Module | None = None
        self.pre_attn_adapter: nn.Module | None = None
        self.pre_mlp_adapter: nn.Module | None = None

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int] | None = None) -> torch.Tensor:
        if self.pre_attn_adapter is not None:
            x = self.pre_attn_adapter(x, grid)
        branch = self.attn(self.norm1(x))
        if self.gamma_1 is not None:
            branch = branch * self.gamma_1
        x = x + self.drop_path(branch)
        if self.pre_mlp_adapter is not None:
            x = self.pre_mlp_adapter(x, grid)
        normed = self.norm2(x)
        branch = self.mlp(normed)
        if self.gamma_2 is not None:
            branch = branch * self.gamma_2
        branch = self.drop_path(branch)
        if self.mlp_adapter is not None:
            branch = self.mlp_adapter(residual=x, normed=normed, mlp_out=branch)
        return x + branch


class VisionTransformer(nn.Module):
    """VideoMAE ViT: tubelets + sinusoid table -> blocks -> mean pool -> fc_norm -> (head_bn) -> head."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.embed_dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.tubelet_size, cfg.in_chans, cfg.embed_dim)
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth, device="cpu").tolist()  # also under a meta device
        self.blocks = nn.ModuleList([Block(cfg, rate) for rate in rates])
        if cfg.use_mean_pooling:
            self.norm = nn.Identity()
            self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        else:
            self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
            self.fc_norm = None
        self.head_bn = nn.BatchNorm1d(cfg.embed_dim, affine=False, eps=1e-6) if cfg.head_bn else None
        self.head_dropout = nn.Dropout(cfg.head_dropout)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.token_prompts: nn.Module | None = None
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        self.apply(self._init_weights)
        if isinstance(self.head, nn.Linear):
            self._init_head(self.head)

    def _init_head(self, head: nn.Linear) -> None:
        """trunc-normal(head_init_std) times init_scale, zero bias: VideoMAE's 0.02 x 0.001
        (VM:modeling_finetune.py:276-285) or AdaptFormer's re-drawn 0.01 (AF:main_video.py:334)."""
        trunc_normal_(head.weight, std=self.cfg.head_init_std)
        nn.init.zeros_(head.bias)
        with torch.no_grad():
            head.weight.mul_(self.cfg.init_scale)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        init_linear_and_norm(m, functools.partial(trunc_normal_, std=0.02))

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layer ids for timm's layer-wise lr decay: stem, then one group per block (adapters included)."""
        return {"stem": r"^patch_embed", "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))]}

    def no_weight_decay(self) -> set[str]:
        """Cosine attention's log-scales skip weight decay as in V2 (V2:optim_factory.py:67-68 skips `*.scale`);
        timm's optimizer factory already skips 1-D tensors and biases."""
        return {name for name, _ in self.named_parameters() if name.endswith(".attn.scale")}

    def position_table(self, num_tokens: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (num_tokens, device, dtype)
        table = self._pos_cache.get(key)
        if table is None:
            table = sinusoid_position_table(num_tokens, self.embed_dim).to(device=device, dtype=dtype)
            # torch.export traces with fake tensors: one cached here would replace the table in every later eager call
            if not torch.compiler.is_exporting():
                self._pos_cache[key] = table
        return table

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clips (B, 3, T, H, W) -> tokens (B, N, D) with the position table added."""
        if x.ndim != 5 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"expected clips of shape (B, {self.cfg.in_chans}, T, H, W), got {tuple(x.shape)}")
        tokens = self.patch_embed(x)
        return tokens + self.position_table(tokens.shape[1], tokens.device, tokens.dtype)

    def forward_tokens(self, tokens: torch.Tensor, grid: tuple[int, int, int] | None = None,
                       blocks: int | None = None) -> torch.Tensor:
        """Run the blocks (with prompt tokens when a prompt method is attached); `grid` = (t, h, w) tokens.
        `blocks` = n runs only the first n: the output of block n-1 (prompts removed), the final norm only after the
        last block."""
        prompts = self.token_prompts
        depth = len(self.blocks) if blocks is None else blocks
        for i, block in enumerate(self.blocks[:depth]):
            if prompts is not None:
                tokens = prompts.before_block(tokens, i)
            if self.cfg.use_checkpoint and self.training and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, grid, use_reentrant=False)
            else:
                tokens = block(tokens, grid)
            if prompts is not None:
                tokens = prompts.after_block(tokens, i)
        return self.norm(tokens) if depth == len(self.blocks) else tokens

    def forward_layer(self, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Tokens (B, N, D) after block `layer` (negative counts from the end; -1 = the last block, then the final
        norm, what `forward_pooled` pools): intermediate features without a forward hook. Tokens are t-major over
        the grid `patch_embed.grid(T, H, W)`."""
        depth = len(self.blocks)
        if not -depth <= layer < depth:
            raise ValueError(f"layer {layer} is not a block of this {depth}-block model (0..{depth - 1}, or -1..-{depth})")
        return self.forward_tokens(self.embed(x), self.patch_embed.grid(*x.shape[2:]), blocks=layer % depth + 1)

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, D): the mean token (or the first one, for models without mean pooling)."""
        return tokens.mean(1) if self.fc_norm is not None else tokens[:, 0]

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled clip feature (B, D) before `fc_norm`: the mean token (or the first one). `fc_norm`
        trains in every method, so this is the last thing a frozen backbone fixes (what `train.feature_cache`
        stores)."""
        return self.pool_tokens(self.forward_layer(x))

    def norm_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc_norm(pooled) if self.fc_norm is not None else pooled

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, normed clip feature (B, D): what the head sees."""
        return self.norm_pooled(self.forward_pooled(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if self.head_bn is not None:
            features = self.head_bn(features)
        return self.head(self.head_dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

