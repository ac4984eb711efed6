"""The DDiT: the bidirectional diffusion transformer shared by Duo, UDLM, SEDD and MDLM.

One readable module. Parameter names match the Duo/UDLM backbones exactly
(research/ecosystem.md §A.0), so their state dicts load by name after stripping `backbone.`:

    vocab_embed.embedding                 [V, d]
    sigma_map.mlp.{0,2}.{weight,bias}     sinusoidal(σ) → cond_dim → cond_dim
    rotary_emb.inv_freq                   buffer
    blocks.N.{norm1.weight, attn_qkv.weight, attn_out.weight, norm2.weight,
              mlp.0.{weight,bias}, mlp.2.{weight,bias}, adaLN_modulation.{weight,bias}}
    output_layer.{norm_final.weight, linear.{weight,bias}, adaLN_modulation.{weight,bias}}

Shapes: B batch, L sequence length, d hidden size, H heads, V vocabulary.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class DDiTConfig:
    vocab_size: int = 32
    seq_len: int = 32
    hidden_size: int = 128
    cond_dim: int = 64
    n_blocks: int = 3
    n_heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    time_conditioning: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DDiTConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# Presets. nano/micro are sized for 2 CPU cores; tiny/small/medium are the paper's (Duo/MDLM yamls).
PRESETS: dict[str, dict] = {
    "nano": dict(hidden_size=128, cond_dim=64, n_blocks=3, n_heads=4),
    "micro": dict(hidden_size=192, cond_dim=96, n_blocks=4, n_heads=6),
    "tiny": dict(hidden_size=256, cond_dim=128, n_blocks=8, n_heads=8),
    "small": dict(hidden_size=768, cond_dim=128, n_blocks=12, n_heads=12),
    "medium": dict(hidden_size=1024, cond_dim=128, n_blocks=24, n_heads=16),
}


def preset_config(name: str, vocab_size: int, seq_len: int, **overrides) -> DDiTConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return DDiTConfig(vocab_size=vocab_size, seq_len=seq_len, **{**PRESETS[name], **overrides})


class LayerNorm(nn.Module):
    """Non-affine LayerNorm computed in float32, then a learned weight (no bias)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.dim = dim

    def forward(self, x):
        x = F.layer_norm(x.float(), (self.dim,))
        return x * self.weight[None, None, :]


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """σ [B] → sinusoidal features (256) → MLP → [B, cond_dim]."""

    def __init__(self, cond_dim: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    @staticmethod
    def sinusoidal(t, dim, max_period=10000):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, sigma):
        return self.mlp(self.sinusoidal(sigma, self.frequency_dim))


class Rotary(nn.Module):
    """Rotary position embedding (non-interleaved rotate_half layout) for q and k; v untouched."""

    def __init__(self, head_dim: int, base: float = 10_000):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq)

    def forward(self, seq_len: int, device):
        positions = torch.arange(seq_len, device=device, dtype=self.inv_freq.dtype)
        freqs = torch.outer(positions, self.inv_freq)       # [L, hd/2]
        emb = torch.cat([freqs, freqs], dim=-1)              # [L, hd]
        return emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]  # [1, L, 1, hd]


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x, cos, sin):
    return x * cos + rotate_half(x) * sin


class DDiTBlock(nn.Module):
    def __init__(self, cfg: DDiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.norm1 = LayerNorm(d)
        self.attn_qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.norm2 = LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.mlp_ratio * d, d))
        self.adaLN_modulation = nn.Linear(cfg.cond_dim, 6 * d)
        nn.init.zeros_(self.adaLN_modulation.weight)  # every block starts as the identity
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(self, x, c, cos, sin):
        B, L, d = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = \
            self.adaLN_modulation(c)[:, None].chunk(6, dim=2)            # each [B, 1, d]

        h = modulate(self.norm1(x), shift_msa, scale_msa).to(x.dtype)
        qkv = self.attn_qkv(h).view(B, L, 3, self.n_heads, d // self.n_heads)   # [B, L, 3, H, hd]
        q, k, v = qkv.unbind(dim=2)                                               # [B, L, H, hd]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))                         # [B, H, L, hd]
        attn = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        attn = attn.transpose(1, 2).reshape(B, L, d)
        x = x + gate_msa * F.dropout(self.attn_out(attn), self.dropout, self.training)

        h = modulate(self.norm2(x), shift_mlp, scale_mlp).to(x.dtype)
        x = x + gate_mlp * F.dropout(self.mlp(h), self.dropout, self.training)
        return x


class EmbeddingLayer(nn.Module):
    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, dim))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, tokens):
        # F.embedding, not self.embedding[tokens]: the indexing backward accumulates with
        # multithreaded scatter on CPU and is not bitwise reproducible.
        return F.embedding(tokens, self.embedding)


class DDiTFinalLayer(nn.Module):
    def __init__(self, cfg: DDiTConfig):
        super().__init__()
        self.norm_final = LayerNorm(cfg.hidden_size)
        self.linear = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        self.adaLN_modulation = nn.Linear(cfg.cond_dim, 2 * cfg.hidden_size)
        for layer in (self.linear, self.adaLN_modulation):  # start from uniform predictions
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=2)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DDiT(nn.Module):
    """(tokens [B, L] int64, sigma [B]) → logits [B, L, V] float32."""

    def __init__(self, cfg: DDiTConfig):
        super().__init__()
        if cfg.hidden_size % cfg.n_heads:
            raise ValueError(f"hidden_size {cfg.hidden_size} is not divisible by n_heads {cfg.n_heads}")
        self.config = cfg
        self.vocab_embed = EmbeddingLayer(cfg.hidden_size, cfg.vocab_size)
        self.sigma_map = TimestepEmbedder(cfg.cond_dim)
        self.rotary_emb = Rotary(cfg.hidden_size // cfg.n_heads)
        self.blocks = nn.ModuleList([DDiTBlock(cfg) for _ in range(cfg.n_blocks)])
        self.output_layer = DDiTFinalLayer(cfg)

    def forward(self, tokens, sigma):
        if not self.config.time_conditioning:
            sigma = torch.zeros_like(sigma)
        x = self.vocab_embed(tokens)                       # [B, L, d]
        c = F.silu(self.sigma_map(sigma))                  # [B, cond_dim]
        cos, sin = self.rotary_emb(tokens.shape[1], tokens.device)
        for block in self.blocks:
            x = block(x, c, cos, sin)
        return self.output_layer(x, c).float()            # [B, L, V]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
