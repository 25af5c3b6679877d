"""Per-sequence sampling: temperature, top-k, top-p (nucleus), and a private random generator.

Every sequence owns a CPU ``torch.Generator`` seeded from its request, and the random draw for a
sequence only ever comes from that generator, one row at a time. A seed therefore gives the same
tokens whether the sequence is decoded alone or inside a batch with others.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import torch
from torch import Tensor

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed accepts [0, 2**64)


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 = greedy; top_k 0 = off; top_p 1.0 = off; seed fixes the random draws."""

    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be in [0, {MAX_SEED}], got {self.seed}")

    def make_generator(self) -> torch.Generator:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(self.seed)
        return generator


def random_seed() -> int:
    """A fresh 32-bit seed from the OS's random source."""
    return secrets.randbits(32)


def resolve_seed(seed: int | None) -> int:
    """``seed`` itself, or a fresh random seed when it is None."""
    return random_seed() if seed is None else int(seed)


def sample(logits: Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """Pick the next token from one row of logits (V,), drawing only from ``generator``."""
    logits = logits.detach().to(device="cpu", dtype=torch.float32)  # (V,)
    if params.temperature == 0.0:
        return int(torch.argmax(logits))
    logits = logits / params.temperature
    if 0 < params.top_k < logits.numel():
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (V,)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass ranked strictly above
        sorted_probs = sorted_probs.masked_fill(before >= params.top_p, 0.0)  # keeps at least 1
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
