"""Per-sequence sampling: temperature, top-k, top-p (nucleus), and a private random generator.

Every sequence owns a CPU ``torch.Generator`` seeded from its request, and the random draw for a
sequence only ever comes from that generator: one uniform number per sampled token. The rest of
sampling runs on the whole batch at once. A seed therefore gives the same
tokens whether the sequence is decoded alone or inside a batch with others.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed accepts [0, 2**64)
MIN_TEMPERATURE = 1e-6  # a lower temperature samples greedily (the limit as it goes to 0)


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
    return sample_batch(logits[None], [params], [generator])[0]


def sample_batch(
    logits: Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator]
) -> list[int]:
    """Pick the next token of every row of logits (B, V); row b draws only from generators[b].

    Temperature, top-k and top-p run on the whole batch at once. The only per-row work is one
    uniform number from the row's own generator (none for a greedy row), which picks the token
    by inverse CDF over the row's kept tokens, ranked by probability. Each row's result
    depends only on its own logits, parameters and generator.
    """
    logits = logits.detach().to(device="cpu", dtype=torch.float32)  # (B, V)
    B, V = logits.shape
    if len(params) != B or len(generators) != B:
        raise ValueError(
            f"{B} rows of logits for {len(params)} params, {len(generators)} generators"
        )
    # Below MIN_TEMPERATURE sampling is greedy (its limit): logits / T would overflow float32.
    greedy = [p.temperature < MIN_TEMPERATURE for p in params]
    if all(greedy):
        return [int(t) for t in torch.argmax(logits, dim=-1).tolist()]
    temperature = torch.tensor(
        [[1.0 if g else p.temperature] for p, g in zip(params, greedy, strict=True)]
    )  # (B, 1)
    top_k = torch.tensor([[p.top_k - 1 if 0 < p.top_k < V else V - 1] for p in params])  # (B, 1)
    top_p = torch.tensor([[p.top_p if p.top_p < 1.0 else math.inf] for p in params])  # (B, 1)
    uniform = torch.cat(
        [
            torch.zeros(1) if g else torch.rand(1, generator=gen)
            for g, gen in zip(greedy, generators, strict=True)
        ]
    )  # (B,)
    ranked, order = torch.sort(logits / temperature, dim=-1, descending=True, stable=True)
    kth = ranked.gather(1, top_k)  # (B, 1): the k-th largest (ties with it are kept)
    ranked = ranked.masked_fill(ranked < kth, float("-inf"))
    probs = torch.softmax(ranked, dim=-1)  # (B, V), ranked by probability
    cdf = torch.cumsum(probs, dim=-1)
    probs = probs.masked_fill(cdf - probs >= top_p, 0.0)  # mass ranked above >= p; keeps >= 1
    cdf = torch.cumsum(probs, dim=-1)
    kept = (probs > 0).sum(dim=-1, keepdim=True)  # kept tokens are a prefix of the ranking
    target = (uniform[:, None] * cdf[:, -1:]).contiguous()
    pick = torch.searchsorted(cdf, target, right=True)
    pick = torch.minimum(pick, kept - 1)  # guards rounding at the very top of the CDF
    tokens = order.gather(1, pick)[:, 0]
    if any(greedy):
        tokens = torch.where(torch.tensor(greedy), torch.argmax(logits, dim=-1), tokens)
    return [int(t) for t in tokens.tolist()]
