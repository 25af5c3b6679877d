"""A Hugging Face `transformers` model streamed the usual way, `generate(streamer=...)`, on Cog.

`model.generate()` never yields: it *pushes* every new token into a streamer, from the thread
that called it. `generator_from_callback` turns that push into the generator Cog streams:
`generate()` runs in a worker thread under the prediction's context (its `print`s and metrics
land on this prediction, also with 8 at once), the streamer's `put()` decodes the new tokens
and hands their text to `emit`, and a consumer that leaves stops it — a `StoppingCriteria` polls
`stop_requested()`, and `emit` raises `StreamClosed`.

`setup()` loads the model and its tokenizer with `from_pretrained` from `weights/tiny-llama`
beside this file, as a fork loads its own model's folder: here a tiny Llama with seeded random
weights and a byte-level tokenizer that examples/transformers_weights.py makes in code (nothing
is downloaded; its text is noise). For a real model, put its folder there and keep the rest.

The shape is predict.py's (see the README's table): an `async def run()` that returns the
stream, `@concurrent(max=8)`: it streams live and serves 8 predictions at once, and with
`coglet_cancel.install()` in `setup()` a cancel or a dropped client stops `generate()` at its next
step (without it, coglet 0.23 would iterate the stream to its end). A sync `run()` would be
cancellable without the hook but serve one prediction at a time; an async generator `run()` does
not stream live on coglet 0.23.

    COG_PREDICT_TYPE_STUB=examples/transformers_predict.py:Predictor COG_MAX_CONCURRENCY=8 \\
        python -m cog.server.http
"""

from __future__ import annotations

import os
import random
import time
from typing import Protocol, cast

import cog
import torch
from cog import BaseRunner, ConcatenateIterator, Input, Path, current_scope, streaming
from transformers import (
    AutoModelForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

import coglet_cancel
import coglet_inputs
from threading_utils import Emit, generator_from_callback, stop_requested

# The model's folder (`save_pretrained`'s output), found from this file's own place: in the
# image, /src/weights/tiny-llama beside /src/predict.py. examples/transformers_weights.py makes it.
WEIGHTS = Path(__file__).resolve().parent / "weights" / "tiny-llama"
MAX_PROMPT_TOKENS = 512  # the model reads the last 512 tokens (bytes) of a longer prompt
PRINTABLE = [*range(32, 127), 10]  # the bytes it may generate: printable ASCII and newline


class _Scope(Protocol):
    def record_metric(self, name: str, value: float) -> None: ...


class SeededSampler(LogitsProcessor):
    """Sampling from a generator of this prediction's own (Gumbel-max: argmax of noisy logits).

    `generate(do_sample=True)` draws from torch's global RNG, which concurrent predictions share:
    a seed would not reproduce its text. With this processor and `do_sample=False`, it does.
    """

    def __init__(self, seed: int, temperature: float) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.temperature = temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.temperature == 0:  # greedy
            return scores
        uniform = torch.rand(scores.shape, generator=self.generator).clamp_(min=1e-20)
        gumbel = -torch.log(-torch.log(uniform)).to(scores.device)
        return cast(torch.FloatTensor, scores / self.temperature + gumbel)


class StopWhenRequested(StoppingCriteria):
    """Ends `generate()` after the current step once the prediction's consumer has gone."""

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object
    ) -> torch.BoolTensor:
        stop = stop_requested()  # in generate's thread: the bridge's worker
        return cast(
            torch.BoolTensor,
            torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device),
        )


class TextEmitter(BaseStreamer):
    """`generate()`'s streamer: decodes each new token and emits its text (in generate's thread).

    It skips the sequence generate() starts from (its first `put`: the prompt, or an
    encoder-decoder model's decoder start token) and remembers its length, holds back the bytes of
    a character split over several tokens until it is complete, and counts the new tokens.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast, emit: Emit[str], started: float) -> None:
        self.tokenizer = tokenizer
        self.emit = emit
        self.started = started
        self.prompt_seen = False
        self.start_tokens = 0  # the length of the sequence generate() started from
        self.pending: list[int] = []
        self.tokens = 0

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            self.start_tokens = value.shape[-1]
            return
        if self.tokens == 0:
            elapsed = time.perf_counter() - self.started
            cast(_Scope, current_scope()).record_metric("time_to_first_token", elapsed)
        ids = value.reshape(-1).tolist()  # batch size 1
        self.tokens += len(ids)
        self.pending += ids
        text = self.decode()
        if not text.endswith("\ufffd"):  # else: an incomplete UTF-8 character, wait for the rest
            self.pending.clear()
            if text:
                self.emit(text)  # blocks while the consumer is behind; raises once it has gone

    def end(self) -> None:
        text = self.decode()
        self.pending.clear()
        if text:
            self.emit(text)

    def decode(self) -> str:
        return cast(str, self.tokenizer.decode(self.pending, skip_special_tokens=True))


@generator_from_callback()
def generate_text(
    emit: Emit[str],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    prompt: str,
    max_new_tokens: int,
    temperature: float,
    seed: int | None,
    started: float,
) -> None:
    """Runs in the bridge's worker thread, under the context of the prediction that called it."""
    scope = cast(_Scope, current_scope())  # this prediction's
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
        scope.record_metric("seed", seed)
    inputs = tokenizer(prompt, truncation=True, max_length=MAX_PROMPT_TOKENS, return_tensors="pt")
    prompt_tokens = inputs["input_ids"].shape[-1]
    scope.record_metric("input_token_count", prompt_tokens)
    print(f"generating up to {max_new_tokens} tokens (seed {seed})")
    streamer = TextEmitter(tokenizer, emit, started)
    # (transformers annotates PreTrainedModel.generate for another type checker than mypy)
    output = model.generate(  # type: ignore[operator]
        **inputs.to(model.device),
        max_new_tokens=max_new_tokens,
        do_sample=False,  # SeededSampler samples
        logits_processor=LogitsProcessorList([SeededSampler(seed, temperature)]),
        stopping_criteria=StoppingCriteriaList([StopWhenRequested()]),
        suppress_tokens=[b for b in range(256) if b not in PRINTABLE],
        streamer=streamer,
    )
    assert isinstance(output, torch.Tensor)  # the ids: no return_dict_in_generate
    # The tokens generated, the end-of-text one included. generate() returns the sequence it
    # started from, then them: the prompt for a decoder-only model, but the decoder's start token
    # for an encoder-decoder one (its prompt went to the encoder), so not `- prompt_tokens`.
    count = output.shape[-1] - streamer.start_tokens
    seconds = time.perf_counter() - started
    scope.record_metric("output_token_count", count)
    scope.record_metric("tokens_per_second", count / seconds)
    print(f"generated {count} tokens in {seconds:.2f}s ({count / seconds:.1f} tok/s)")


class Predictor(BaseRunner):
    def setup(self, weights: Path | str | None = None) -> None:  # weights: WEIGHTS, in the image
        coglet_cancel.install()  # a cancel or a dropped client stops generate() at once
        coglet_inputs.install(self)  # file inputs: only what the server received
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":  # one intra-op thread per stream when 8 share the cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // 8))
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(WEIGHTS)
        self.model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(WEIGHTS)
        self.model.to(device)  # type: ignore[arg-type]  # transformers annotates `to` wrongly
        self.model.eval()  # type: ignore[no-untyped-call]
        warm_up = self.tokenizer("warm up", return_tensors="pt").to(device)
        self.model.generate(**warm_up, max_new_tokens=4)  # type: ignore[misc]
        print(f"model ready on {device}")

    @streaming
    @cog.concurrent(max=8)  # an integer literal: cog build reads it statically
    async def run(
        self,
        prompt: str = Input(
            description="Text to continue", default="Once upon a time", max_length=65536
        ),
        max_new_tokens: int = Input(description="Tokens to generate", default=128, ge=1, le=1024),
        temperature: float = Input(description="0 = greedy", default=0.8, ge=0.0, le=2.0),
        seed: int | None = Input(
            description="Random seed; empty = random", default=None, ge=0, le=4294967295
        ),
    ) -> ConcatenateIterator[str]:
        # On the event loop: calling generate_text captures this prediction's context.
        started = time.perf_counter()
        stream = generate_text(
            self.model, self.tokenizer, prompt, max_new_tokens, temperature, seed, started
        )
        return cast(ConcatenateIterator[str], stream)
