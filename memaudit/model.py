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


# The longest sequence a checkpoint may declare. Rotary position embeddings have no weights tied to
# the length, so seq_len is the one architecture field that cannot be checked against the weights;
# it must still be bounded before anything is allocated: one batch-1 forward pass needs an
# L × V logit matrix and, on CPU, L × L attention scores per head (at L = 65,536 that is 16 GiB per
# head). Published DDiT checkpoints (Duo, UDLM, SEDD, GIDD) use 1,024 tokens or fewer; 65,536 is 64
# times that. Memory for the declared length is checked separately (memaudit.adapters.common).
MAX_SEQ_LEN = 65_536

_INT_FIELDS = ("vocab_size", "seq_len", "hidden_size", "cond_dim", "n_blocks", "n_heads", "mlp_ratio")


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
    def from_dict(cls, d: dict, where: str = "model") -> "DDiTConfig":
        """A validated config from a plain dict; ValueError naming `where.field` on any bad value."""
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be a mapping of architecture fields, found {type(d).__name__} {d!r:.60}")
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "model") -> "DDiTConfig":
        """Types and ranges of every field, before anything is allocated. → self, or ValueError
        naming the field (`model.n_heads must be a positive integer, found 0`)."""
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{where}.{name} must be a positive integer, found {value!r:.60}")
        if self.vocab_size < 2:
            raise ValueError(f"{where}.vocab_size must be at least 2, found {self.vocab_size}")
        if self.seq_len > MAX_SEQ_LEN:
            raise ValueError(f"{where}.seq_len = {self.seq_len} is longer than the {MAX_SEQ_LEN} tokens memaudit "
                             f"accepts (rotary embeddings have no weights to check a length against)")
        if self.hidden_size % self.n_heads:
            raise ValueError(f"{where}.hidden_size {self.hidden_size} is not divisible by {where}.n_heads {self.n_heads}")
        if (self.hidden_size // self.n_heads) % 2:
            raise ValueError(f"{where}.n_heads {self.n_heads} gives an odd head size "
                             f"{self.hidden_size // self.n_heads}; rotary embeddings need an even one")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"{where}.dropout must be a number in [0, 1), found {self.dropout!r:.60}")
        if not isinstance(self.time_conditioning, bool):
            raise ValueError(f"{where}.time_conditioning must be true or false, found {self.time_conditioning!r:.60}")
        return self

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every tensor in DDiT(self).state_dict() but the rotary buffer, in
        state-dict order, computed without building the model (for checks before allocating)."""
        d, c, v, m = self.hidden_size, self.cond_dim, self.vocab_size, self.mlp_ratio * self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {
            "vocab_embed.embedding": (v, d), "sigma_map.mlp.0.weight": (c, 256), "sigma_map.mlp.0.bias": (c,),
            "sigma_map.mlp.2.weight": (c, c), "sigma_map.mlp.2.bias": (c,)}
        for i in range(self.n_blocks):
            p = f"blocks.{i}."
            shapes.update({p + "norm1.weight": (d,), p + "attn_qkv.weight": (3 * d, d), p + "attn_out.weight": (d, d),
                           p + "norm2.weight": (d,), p + "mlp.0.weight": (m, d), p + "mlp.0.bias": (m,),
                           p + "mlp.2.weight": (d, m), p + "mlp.2.bias": (d,),
                           p + "adaLN_modulation.weight": (6 * d, c), p + "adaLN_modulation.bias": (6 * d,)})
        shapes.update({"output_layer.norm_final.weight": (d,), "output_layer.linear.weight": (v, d),
                       "output_layer.linear.bias": (v,), "output_layer.adaLN_modulation.weight": (2 * d, c),
                       "output_layer.adaLN_modulation.bias": (2 * d,)})
        return shapes

    def num_parameters(self) -> int:
        """Parameters of DDiT(self), computed without building it."""
        d, c, v, m = self.hidden_size, self.cond_dim, self.vocab_size, self.mlp_ratio * self.hidden_size
        block = 2 * d + 3 * d * d + d * d + 2 * m * d + m + d + 6 * d * c + 6 * d
        return v * d + c * 256 + c + c * c + c + self.n_blocks * block + d + v * d + v + 2 * d * c + 2 * d


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


def per_sequence(rows, index):
    """Conditioning rows [U, k] → one per sequence [B, k] (index [B] into U; None: already per sequence)."""
    return rows if index is None else rows[index]


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

    def forward(self, x, c, cos, sin, c_index=None):
        B, L, d = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = \
            per_sequence(self.adaLN_modulation(c), c_index)[:, None].chunk(6, dim=2)   # each [B, 1, d]

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

    def forward(self, x, c, c_index=None):
        shift, scale = per_sequence(self.adaLN_modulation(c), c_index)[:, None].chunk(2, dim=2)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DDiT(nn.Module):
    """(tokens [B, L] int64, sigma [B]) → logits [B, L, V] float32."""

    def __init__(self, cfg: DDiTConfig):
        super().__init__()
        cfg.validate()  # ValueError naming the field, before any allocation
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
        if self.training:
            c_index = None                                 # every sequence has its own time
        else:
            # Inference evaluates one time for a whole batch. The conditioning is computed once per
            # distinct time (U rows, usually 1) and then indexed per sequence: a matrix product's
            # kernel depends on its row count, so B conditioning rows would make a sequence's output
            # depend on the size of the batch it is in, and reports on --batch-size.
            sigma, c_index = torch.unique(sigma, return_inverse=True)
        c = F.silu(self.sigma_map(sigma))                  # [B or U, cond_dim]
        cos, sin = self.rotary_emb(tokens.shape[1], tokens.device)
        for block in self.blocks:
            x = block(x, c, cos, sin, c_index)
        return self.output_layer(x, c, c_index).float()   # [B, L, V]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
