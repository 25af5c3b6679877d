"""A worked example: an embeddings model whose concurrent predictions share forward passes.

The shape of an embeddings fork: a list of texts in, one normalised vector per text out, up to
32 predictions at once. A `Batcher` (threading_utils) started in `setup()` owns the model's one
thread: each prediction submits its texts and awaits their vectors, and the texts waiting at
that moment — one prediction's or thirty-two's — go through one forward pass. The file has no
scheduling code of its own: one line creates the batcher, one awaits it (docs/batching.md).

Context: the batch function reports each text under the context of the prediction that sent it
(`current_batch()`, `BatchItem.run`), so its log line (`text 2: 41 tokens, in a batch of 8`)
and its metrics (`tokens`, `batch_size`, `queue_ms`) land on that prediction, never on a batch
neighbour.

The model: a tiny byte-level encoder built in code (weights from a fixed seed; nothing is
downloaded): byte embeddings, one transformer layer attending within windows of 128 bytes, the
mean over a text's bytes, a projection, L2-normalised. A text's vector depends on its batch
only through float rounding (about 1e-7: other shapes, other kernels).

Output: one object, the vectors one after the other in a flat list. `cog build` and coglet
accept `list[list[float]]` and a list of models too, but cog's Python introspection refuses
both, and so does `make schema`, which is built on it (docs/shapes.md, "Nested numeric
outputs").

Cancel: run() returns its output (no stream), so coglet's cancel reaches its awaits: the
prediction's texts still queued are dropped at once; those in the running forward pass finish
with it, their vectors discarded, their batch neighbours' vectors unchanged. One exception is
coglet's: a cancel in a prediction's first milliseconds, before coglet has registered run()'s
future, is raised as `CancelationException` in coglet's worker thread (replicate/cog
`crates/coglet-python/src/worker_bridge.rs`, `cancel`: the slot is still a sync one), and the
prediction fails with it while run() goes on to its end.

Run it: `make predict PREDICTOR=examples/embed_predict.py:Predictor INPUT='texts=["a", "b"]'`,
or through tests/examples/test_embed_example.py and the contract (examples/embed_contract.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol, cast

import cog
import torch
import torch.nn.functional as F
from cog import BaseModel, BaseRunner, Input, Path, current_scope
from torch import nn

from threading_utils import Batcher, current_batch

MAX_TEXTS = 64  # per prediction; the schema cannot bound a list's length: run() checks it
MAX_CHARS = 2000  # per text; nor its items' lengths (coglet ignores maxLength on an array)
DIMS = 64  # the length of each vector
WINDOW = 128  # bytes that attend to each other
START, PAD = 2, 256  # token ids: a start byte before every text (an empty one too), padding


@dataclass
class Embeddings(BaseModel, auto_dataclass=False):  # docs/typing.md: mypy sees the fields
    dims: int  # the length of each vector
    vectors: list[float]  # text i's vector: vectors[i * dims : (i + 1) * dims]


class _Scope(Protocol):
    def record_metric(self, name: str, value: float, mode: str = ...) -> None: ...


class TinyEncoder(nn.Module):
    def __init__(self, dims: int = DIMS, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(PAD + 1, dims, padding_idx=PAD)
        self.position = nn.Embedding(WINDOW, dims)
        self.layer = nn.TransformerEncoderLayer(dims, heads, 2 * dims, 0.0, batch_first=True)
        self.out = nn.Linear(dims, dims)

    def forward(self, texts: list[bytes]) -> torch.Tensor:
        """One unit vector per text; the texts' windows form one batch, padded to the longest."""
        windows: list[list[int]] = []
        owner: list[int] = []  # the text each window belongs to
        for i, text in enumerate(texts):
            data = bytes([START]) + text
            for start in range(0, len(data), WINDOW):
                windows.append(list(data[start : start + WINDOW]))
                owner.append(i)
        width = max(map(len, windows))
        device = self.out.weight.device
        ids = torch.tensor([w + [PAD] * (width - len(w)) for w in windows], device=device)
        pad = ids == PAD
        h = self.layer(self.embed(ids) + self.position.weight[:width], src_key_padding_mask=pad)
        index = torch.tensor(owner, device=device)
        sums = h.new_zeros(len(texts), h.shape[-1]).index_add_(
            0, index, h.masked_fill(pad[..., None], 0.0).sum(1)
        )
        counts = h.new_zeros(len(texts)).index_add_(0, index, (~pad).sum(1).to(h.dtype))
        return F.normalize(self.out(sums / counts[:, None]), dim=-1)


def build_encoder() -> TinyEncoder:
    with torch.random.fork_rng(devices=[]):  # the same weights in every process
        torch.manual_seed(0)
        encoder = TinyEncoder()
    return encoder.eval()


def report(index: int, tokens: int, batch_size: int, queue_time: float) -> None:
    """In the batch thread, under the context of the prediction that sent text `index`."""
    print(f"text {index}: {tokens} tokens, in a batch of {batch_size}")  # -> its logs
    scope = cast(_Scope, current_scope())  # that prediction's
    scope.record_metric("tokens", tokens, mode="incr")
    scope.record_metric("batch_size", batch_size, mode="append")
    scope.record_metric("queue_ms", round(queue_time * 1000, 3), mode="append")


class Predictor(BaseRunner):
    # Texts per forward pass. On one CPU core a short text costs 0.28 ms alone, 0.11 in a batch
    # of 8, 0.10 in one of 32; a 2,000-character text 7.9, 10.5, 12.4 ms. Past 8, a batch only
    # makes each member wait for more others, and keeps a cancelled prediction's texts running
    # longer (docs/batching.md, "A worked example").
    max_batch_size = 8

    def setup(self, weights: Path | str | None = None) -> None:  # weights: built in code
        cuda = torch.cuda.is_available()
        self.encoder = build_encoder().to("cuda" if cuda else "cpu")
        with torch.inference_mode():
            self.encoder([b"warm up"])
        self.batcher = Batcher(
            self.embed_batch,
            max_batch_size=self.max_batch_size,
            max_queue=32 * MAX_TEXTS,  # every text of 32 predictions may wait at once
            num_threads=None if cuda else 1,  # one intra-op thread: 2 shared cores in the tests
            name="embed",
        ).start()
        print("model ready")

    def embed_batch(self, items: list[tuple[int, bytes]]) -> list[list[float]]:
        """The batch function, in the batcher's thread: one forward pass over the waiting texts."""
        for entry in current_batch():  # each text's report, under its own prediction's context
            index, text = entry.item
            entry.run(report, index, len(text) + 1, entry.batch_size, entry.queue_time)
        with torch.inference_mode():
            vectors = self.encoder([text for _, text in items])
        return cast(list[list[float]], vectors.cpu().tolist())

    @cog.concurrent(max=32)  # an integer literal: cog build reads it statically
    async def run(
        self,
        texts: list[str] = Input(
            description="1 to 64 texts of at most 2000 characters each",
            default=["The quick brown fox", "jumps over the lazy dog"],
        ),
    ) -> Embeddings:
        if not 1 <= len(texts) <= MAX_TEXTS:
            raise ValueError(f"texts: {len(texts)} given; send 1 to {MAX_TEXTS} per prediction")
        for i, text in enumerate(texts):
            if len(text) > MAX_CHARS:
                raise ValueError(f"texts[{i}]: {len(text)} characters; at most {MAX_CHARS}")
        data = [text.encode("utf-8", "surrogatepass") for text in texts]  # any JSON string
        async with asyncio.TaskGroup() as group:  # one item per text; a cancel drops them all
            tasks = [group.create_task(self.batcher.asubmit(item)) for item in enumerate(data)]
        return Embeddings(dims=DIMS, vectors=[x for task in tasks for x in task.result()])
