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

import contextlib
import heapq
import math
import threading
import weakref
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


class KVPool:
    """Keys and values of many sequences, one *slot* each, in one tensor.

    ``kv`` has shape (n_layer, 2, slots, H, block_size, D): keys at ``[:, 0]`` (``k``, a view)
    and values at ``[:, 1]`` (``v``). A decode step writes the new keys and values of all its
    rows with one assignment per layer and runs one attention call per layer over the pool's
    leading slots, with a mask for each row's length, instead of one call per row. ``mask``
    (slots, H, block_size) is that mask, kept up to date as keys are written (``set_length``
    after a prefill, the decode step for its new key): 0 at a slot's valid positions, -inf
    elsewhere. Position 0 always counts as valid, so that no row of scores is all -inf (a slot
    in the attended range but not in the batch gets a dummy query). Slots are handed out lowest
    first, so the slots in use stay a prefix of the pool; when none is free the pool doubles
    (its contents are copied), and a freed slot is reused. Memory is that of the most sequences
    alive at once, rounded up to a power of two.

    ``lock`` (reentrant) guards the free list and growth; ``GPT.prefill``/``decode`` hold it
    around a model call on pooled caches, so growth never moves a tensor under a running call:
    model calls on one pool run one at a time, from any thread.
    """

    def __init__(
        self, config: GPTConfig, *, device: torch.device, dtype: torch.dtype, slots: int = 1
    ) -> None:
        if slots < 1:
            raise ValueError(f"a KVPool needs at least one slot, got {slots}")
        self.config = config
        self.lock = threading.RLock()
        self.kv = self._zeros(slots, device, dtype)
        self.mask = self._mask(slots, device, dtype)
        self._free = list(range(slots))  # a heap: the lowest free slot first

    def _zeros(self, slots: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        c = self.config
        shape = (c.n_layer, 2, slots, c.n_head, c.block_size, c.head_size)
        # zeros, not empty: masked positions of unused slots must be finite (0 * NaN is NaN)
        return torch.zeros(shape, device=device, dtype=dtype)

    def _mask(self, slots: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        c = self.config
        mask = torch.full(
            (slots, c.n_head, c.block_size), float("-inf"), device=device, dtype=dtype
        )
        mask[:, :, 0] = 0.0
        return mask

    def set_length(self, slot: int, length: int) -> None:
        """Mark positions ``[0, length)`` of ``slot`` valid (and 0) and the others not."""
        with torch.inference_mode():  # the mask may be an inference tensor (grown in a call)
            self.mask[slot, :, : max(length, 1)] = 0.0
            self.mask[slot, :, max(length, 1) :] = float("-inf")

    @property
    def k(self) -> Tensor:
        """Keys, (n_layer, slots, H, block_size, D): a view of ``kv``."""
        return self.kv[:, 0]

    @property
    def v(self) -> Tensor:
        """Values, (n_layer, slots, H, block_size, D): a view of ``kv``."""
        return self.kv[:, 1]

    @property
    def capacity(self) -> int:
        """Slots allocated (in use or free)."""
        return self.kv.shape[2]

    @property
    def num_used(self) -> int:
        with self.lock:
            return self.capacity - len(self._free)

    def allocate(self) -> int:
        """A free slot (the lowest); the pool doubles when none is free."""
        with self.lock:
            if not self._free:
                n = self.capacity
                kv = self._zeros(2 * n, self.kv.device, self.kv.dtype)
                mask = self._mask(2 * n, self.mask.device, self.mask.dtype)
                kv[:, :, :n] = self.kv
                mask[:n] = self.mask
                self.kv, self.mask = kv, mask
                self._free = list(range(n, 2 * n))
            slot = heapq.heappop(self._free)
            self.set_length(slot, 0)  # nothing of the slot's last sequence stays valid
            return slot

    def release(self, slot: int) -> None:
        with self.lock:
            heapq.heappush(self._free, slot)


class KVCache:
    """Keys and values of one sequence for every layer: one slot of a ``KVPool``.

    ``k`` and ``v`` are views of shape (n_layer, H, block_size, D); positions ``[0, length)``
    are valid. Without ``pool`` the cache gets a pool of its own. The slot goes back to the pool
    when ``release()`` is called or, failing that, when the cache is garbage collected, so
    sequences can join or leave a decode batch at any step.
    """

    def __init__(
        self,
        config: GPTConfig,
        *,
        device: torch.device,
        dtype: torch.dtype,
        pool: KVPool | None = None,
    ) -> None:
        if pool is None:
            pool = KVPool(config, device=device, dtype=dtype)
        self.pool = pool
        self.slot = pool.allocate()
        self.length = 0
        self._finalizer = weakref.finalize(self, pool.release, self.slot)

    @property
    def released(self) -> bool:
        return not self._finalizer.alive

    def release(self) -> None:
        """Give the slot back now (idempotent); the cache is unusable afterwards."""
        self._finalizer()

    def _check(self) -> None:
        if self.released:
            raise ValueError("this KV cache was released")

    @property
    def k(self) -> Tensor:
        self._check()
        return self.pool.k[:, self.slot]

    @property
    def v(self) -> Tensor:
        self._check()
        return self.pool.v[:, self.slot]

    @property
    def capacity(self) -> int:
        return self.pool.config.block_size


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

    def decode(self, x: Tensor, layer: int, groups: Sequence[_PoolRows]) -> Tensor:
        """x: (B, 1, C); each group's rows attend over their slots of one pool at ``layer``.

        One attention call per group (in practice one pool: one call for the whole batch) over
        the pool's slots ``[0, max slot]`` and positions ``[0, max position]``, with a mask
        that keeps, for each row, exactly its own valid keys; slots of the range that are not
        in the batch get a dummy query, whose output is dropped.
        """
        B, _, C = x.shape
        H = self.n_head
        qkv = self.c_attn(x)  # (B, 1, 3C)
        q = qkv[..., :C].view(B, 1, H, C // H).transpose(1, 2)  # (B, H, 1, D)
        kv = qkv[:, 0, C:].view(B, 2, H, C // H)  # (B, 2, H, D): new keys and values, a view
        if len(groups) == 1:  # all rows in one pool (an engine's): no gather/scatter of rows
            return self._out(groups[0].attend(q, kv, layer))  # (B, 1, C)
        y = torch.empty_like(q)
        for group in groups:
            rows = torch.tensor(group.rows, device=q.device)
            y[rows] = group.attend(q[rows], kv[rows], layer)
        return self._out(y)  # (B, 1, C)


class _PoolRows:
    """The rows of one decode batch whose caches are slots of the same ``KVPool``.

    Attention runs over the slots ``[lo, hi)`` spanned by the rows. Usual case (sequences
    decoded in the order they joined, as many as are alive): the rows are exactly those slots in
    order, so queries and outputs need no scatter/gather, and when every row also sits at the
    same position the new keys/values are written with plain slicing and no mask is needed.
    """

    def __init__(self, pool: KVPool, rows: list[int], slots: list[int], pos: list[int]) -> None:
        device = pool.kv.device
        self.pool = pool
        self.rows = rows  # rows of the batch
        self.lo, self.hi = min(slots), max(slots) + 1
        self.length = max(pos) + 1  # L: the positions attention runs over
        self.in_order = slots == list(range(self.lo, self.hi))
        self.same_pos = min(pos) == max(pos)
        self.at: int | None = pos[0] if self.in_order and self.same_pos else None
        # (b,) each row's slot in the span; only needed when other slots lie between them
        self.slots = (
            None if self.in_order else torch.tensor([s - self.lo for s in slots], device=device)
        )
        S, H, block = pool.kv.shape[2:5]
        mask = pool.mask[self.lo : self.hi]  # (P, H, block), a view
        # Rows at different positions (requests that joined in different steps: the usual case
        # under continuous batching) cost two torch calls here, once per step, so that each
        # layer costs fewer torch calls than when they are aligned: `index` says where each
        # row's new key, then its new value, goes in the layer's flattened (2, S, H, block) rows
        # of D (its first half is also where each row turns valid in the pool's mask), and
        # `bias`, a view of that mask, is added by the scores' matmul itself.
        self.index: Tensor | None = None  # (2 * b * H,): keys' rows, then values'
        self.bias: Tensor | None = None  # (P * H, 1, L)
        if self.at is not None:
            mask[:, :, self.at] = 0.0
        else:
            keys = [
                (s * H + h) * block + p for s, p in zip(slots, pos, strict=True) for h in range(H)
            ]
            values = S * H * block  # where a layer's values start
            self.index = torch.tensor(keys + [i + values for i in keys], device=device)
            pool.mask.view(-1).index_fill_(0, self.index[: len(keys)], 0.0)
            self.bias = mask[:, :, : self.length].reshape(-1, 1, self.length)  # a view

    def attend(self, q: Tensor, kv: Tensor, layer: int) -> Tensor:
        """q: (b, H, 1, D) and the new keys and values kv: (b, 2, H, D) of these rows; writes
        kv at the rows' positions and returns the attention's output y: (b, H, 1, D)."""
        layer_kv = self.pool.kv[layer]  # (2, S, H, block, D), a view
        k_pool = layer_kv[0, self.lo : self.hi]  # (P, H, block, D), a view
        v_pool = layer_kv[1, self.lo : self.hi]
        if self.at is not None:  # one strided copy: (2, P, H, D) at position `at`
            layer_kv[:, self.lo : self.hi, :, self.at] = kv.transpose(0, 1)
        else:  # one copy to contiguous (2 * b * H, D), one indexed write
            assert self.index is not None
            D = kv.shape[-1]
            layer_kv.view(-1, D).index_copy_(0, self.index, kv.transpose(0, 1).reshape(-1, D))
        if self.in_order:
            q_p = q
        else:
            q_p = q.new_zeros((self.hi - self.lo, *q.shape[1:]))
            q_p[self.slots] = q
        L = self.length
        if self.hi - self.lo == 1:  # one row (alone): torch's kernel, as before the pool
            return F.scaled_dot_product_attention(q_p, k_pool[:, :, :L], v_pool[:, :, :L])
        # Attention written out: torch's CPU SDPA kernel tiles the query dimension, so with one
        # query per row it runs several times slower than these two batched matmuls.
        scale = 1.0 / math.sqrt(q.shape[-1])
        if self.bias is None:  # aligned rows: every key up to L is valid
            scores = q_p @ k_pool[:, :, :L].transpose(-1, -2)  # (P, H, 1, L), no copy of the pool
            y = torch.softmax(scores * scale, dim=-1) @ v_pool[:, :, :L]  # (P, H, 1, D)
        else:  # bias + scale * q k^T in one call, over (P * H) views of the pool
            P, H, _, D = q_p.shape
            keys = k_pool[:, :, :L].reshape(P * H, L, D)  # a view: the slots are contiguous
            scores = torch.baddbmm(
                self.bias, q_p.reshape(P * H, 1, D), keys.transpose(1, 2), alpha=scale
            )
            values = v_pool[:, :, :L].reshape(P * H, L, D)
            y = torch.bmm(torch.softmax(scores, dim=-1), values).view(P, H, 1, D)
        return y if self.in_order else y[self.slots]


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

    def decode(self, x: Tensor, layer: int, groups: Sequence[_PoolRows]) -> Tensor:
        x = x + self.attn.decode(self.ln_1(x), layer, groups)
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
        with cache.pool.lock:
            for layer, block in enumerate(self.blocks):
                x = block.prefill(x, cache.k[layer], cache.v[layer])
            cache.pool.set_length(cache.slot, T)
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
        by_pool: dict[int, tuple[KVPool, list[int]]] = {}
        for b, c in enumerate(caches):
            c._check()
            by_pool.setdefault(id(c.pool), (c.pool, []))[1].append(b)
        with contextlib.ExitStack() as stack:
            for pool, _ in by_pool.values():
                stack.enter_context(pool.lock)
            groups = [
                _PoolRows(pool, rows, [caches[b].slot for b in rows], [pos[b] for b in rows])
                for pool, rows in by_pool.values()
            ]
            positions = torch.tensor(pos, device=tokens.device)  # (B,)
            x = (self.wte(tokens) + self.wpe(positions))[:, None]  # (B, 1, C)
            for layer, block in enumerate(self.blocks):
                x = block.decode(x, layer, groups)
        for c in caches:
            c.length += 1
        logits: Tensor = self.lm_head(self.ln_f(x[:, 0]))  # (B, V)
        return logits
