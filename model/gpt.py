"""A byte-level decoder-only transformer (GPT) with a per-sequence KV cache.

One readable file, in the spirit of nanoGPT: a `GPTConfig` dataclass, a pre-LayerNorm transformer
with learned absolute position embeddings, and three ways to run it:

- `GPT.forward(idx)`: the whole causal sequence at once (training, evaluation, reference);
- `GPT.prefill(idx, cache)`: one new sequence, filling its `KVCache`, logits of the last position;
- `GPT.decode(tokens, caches)`: one step for a batch of sequences whose lengths differ.

Shapes use B = batch, T = time (sequence length), C = n_embd, H = n_head, D = head size,
V = vocab size (256: one token per byte value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class GPTConfig:
    """Model hyperparameters; saved next to the weights as ``config.json``."""

    block_size: int = 256  # context window, in bytes
    vocab_size: int = 256  # one token per byte value
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTConfig.{f.name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> GPTConfig:
        """Build a config from parsed JSON; unknown or missing keys raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(names - set(data))
        if unknown or missing:
            raise ValueError(
                f"unknown keys {unknown}, missing keys {missing}; expected {sorted(names)}"
            )
        return cls(**data)


class KVCache:
    """Keys and values of one sequence for every layer, preallocated to the context window.

    ``k`` and ``v`` have shape (n_layer, H, block_size, D); positions ``[0, length)`` are valid.
    Each sequence owns its cache, so sequences can join or leave a decode batch at any step and
    different threads can run different sequences without sharing mutable state.
    """

    def __init__(self, config: GPTConfig, *, device: torch.device, dtype: torch.dtype) -> None:
        shape = (config.n_layer, config.n_head, config.block_size, config.head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.k.shape[2]


class LayerNorm(nn.Module):
    """LayerNorm with a weight and no bias."""

    def __init__(self, ndim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, None, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        shape = (B, T, self.n_head, C // self.n_head)
        q = q.view(shape).transpose(1, 2)  # (B, H, T, D)
        k = k.view(shape).transpose(1, 2)  # (B, H, T, D)
        v = v.view(shape).transpose(1, 2)  # (B, H, T, D)
        return q, k, v

    def _out(self, y: Tensor) -> Tensor:
        B, H, T, D = y.shape
        y = y.transpose(1, 2).contiguous().view(B, T, H * D)  # (B, T, C)
        out: Tensor = self.c_proj(y)  # (B, T, C)
        return out

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self._qkv(x)  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        return self._out(y)

    def prefill(self, x: Tensor, k_cache: Tensor, v_cache: Tensor) -> Tensor:
        """x: (1, T, C); writes this layer's keys/values into caches of shape (H, block, D)."""
        q, k, v = self._qkv(x)  # (1, H, T, D)
        T = x.shape[1]
        k_cache[:, :T] = k[0]
        v_cache[:, :T] = v[0]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (1, H, T, D)
        return self._out(y)

    def decode(
        self, x: Tensor, caches: Sequence[tuple[Tensor, Tensor]], pos: Sequence[int]
    ) -> Tensor:
        """x: (B, 1, C), row b at position pos[b]; caches[b] = (k, v) of shape (H, block, D).

        The projections run batched; attention runs per row over that row's own valid keys, so
        rows of different lengths need no padding or mask, and each row's attention is exactly
        the computation it would get alone.
        """
        q, k, v = self._qkv(x)  # (B, H, 1, D)
        rows = []
        for b, ((k_cache, v_cache), p) in enumerate(zip(caches, pos, strict=True)):
            k_cache[:, p] = k[b, :, 0]
            v_cache[:, p] = v[b, :, 0]
            keys = k_cache[None, :, : p + 1]  # (1, H, p+1, D)
            values = v_cache[None, :, : p + 1]  # (1, H, p+1, D)
            rows.append(F.scaled_dot_product_attention(q[b : b + 1], keys, values))  # (1, H, 1, D)
        return self._out(torch.cat(rows))  # (B, 1, C)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.c_proj(F.gelu(self.c_fc(x)))  # (B, T, C)
        return out


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        out: Tensor = x + self.mlp(self.ln_2(x))
        return out

    def prefill(self, x: Tensor, k_cache: Tensor, v_cache: Tensor) -> Tensor:
        x = x + self.attn.prefill(self.ln_1(x), k_cache, v_cache)
        out: Tensor = x + self.mlp(self.ln_2(x))
        return out

    def decode(
        self, x: Tensor, caches: Sequence[tuple[Tensor, Tensor]], pos: Sequence[int]
    ) -> Tensor:
        x = x + self.attn.decode(self.ln_1(x), caches, pos)
        out: Tensor = x + self.mlp(self.ln_2(x))
        return out


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2 style: scale the residual projections by 1/sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def blocks(self) -> list[Block]:
        return [cast(Block, block) for block in self.h]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: Tensor) -> Tensor:
        """idx: (B, T) byte values, T <= block_size. Returns logits (B, T, V)."""
        t = idx.shape[1]
        if t > self.config.block_size:
            raise ValueError(f"sequence of {t} tokens exceeds block_size {self.config.block_size}")
        positions = torch.arange(t, device=idx.device)  # (T,)
        x = self.wte(idx) + self.wpe(positions)  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits: Tensor = self.lm_head(self.ln_f(x))  # (B, T, V)
        return logits

    def prefill(self, idx: Tensor, cache: KVCache) -> Tensor:
        """Run a new sequence idx: (T,), 1 <= T <= block_size, from position 0.

        Overwrites ``cache`` (its length becomes T) and returns the logits (V,) of the last
        position, i.e. the distribution of the next token.
        """
        (T,) = idx.shape
        if not 1 <= T <= cache.capacity:
            raise ValueError(f"prefill needs 1..{cache.capacity} tokens, got {T}")
        positions = torch.arange(T, device=idx.device)  # (T,)
        x = (self.wte(idx) + self.wpe(positions))[None]  # (1, T, C)
        for layer, block in enumerate(self.blocks):
            x = block.prefill(x, cache.k[layer], cache.v[layer])
        cache.length = T
        logits: Tensor = self.lm_head(self.ln_f(x[0, -1]))  # (V,)
        return logits

    def decode(self, tokens: Tensor, caches: Sequence[KVCache]) -> Tensor:
        """One step for a batch: tokens (B,) where row b is appended to caches[b].

        Each row sits at its own position ``caches[b].length`` (rows may differ); every cache
        must have room for one more token. Returns the next-token logits (B, V).
        """
        if tokens.shape != (len(caches),):
            raise ValueError(f"tokens of shape {tuple(tokens.shape)} for {len(caches)} caches")
        pos = [c.length for c in caches]
        for c in caches:
            if c.length >= c.capacity:
                raise ValueError(
                    f"KV cache is full ({c.capacity} tokens); re-prefill a shorter window"
                )
        positions = torch.tensor(pos, device=tokens.device)  # (B,)
        x = (self.wte(tokens) + self.wpe(positions))[:, None]  # (B, 1, C)
        for layer, block in enumerate(self.blocks):
            x = block.decode(x, [(c.k[layer], c.v[layer]) for c in caches], pos)
        for c in caches:
            c.length += 1
        logits: Tensor = self.lm_head(self.ln_f(x[:, 0]))  # (B, V)
        return logits
