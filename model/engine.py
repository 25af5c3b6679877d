"""Inference engine: loading, device choice, prefill / batched decode, and text streaming.

The engine is built from two calls that a continuous-batching scheduler can drive directly:

    seq = engine.prefill(prompt, SamplingParams(...))  # new sequence; samples its first token
    tokens = engine.decode([seq_a, seq_b, ...])        # one more token for each sequence

Sequences may have different lengths, and may join or leave the batch between any two steps.
``Engine.generate`` is the per-sequence iterator built on exactly those calls.

Context window (``config.block_size`` tokens):

- a prompt longer than the window keeps its last ``block_size`` tokens (bytes);
- generation past the window *slides*: when a sequence's cache is full, its next step re-prefills
  the last ``window_keep`` tokens (3/4 of the window by default) and continues from there, so the
  model always sees at least ``window_keep`` tokens of recent context and generation never stops
  because of the window.

Every model call runs under ``torch.inference_mode()`` entered around that one call, never held
across a ``yield``, so a generator can be advanced from any thread without leaking torch's
thread-local mode into code that runs between its steps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from .gpt import GPT, GPTConfig, KVCache, KVPool
from .sampling import SamplingParams, random_seed, resolve_seed, sample, sample_batch
from .text import Utf8StreamDecoder, encode

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_ENV = "COG_WEIGHTS"
EMPTY_PROMPT = "\n"  # what the model is fed when the prompt is empty (there is no BOS token)


class WeightsError(ValueError):
    """The weights or their config are missing, unreadable, or do not match each other."""


def default_weights_dir() -> Path:
    """The repository's ``weights/`` directory (found from this file, not from the cwd)."""
    return Path(__file__).resolve().parent.parent / "weights"


def resolve_weights_path(weights: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """(config.json, model.safetensors) for ``weights``, else ``$COG_WEIGHTS``, else ``weights/``.

    The path may be a directory holding both files, or the .safetensors file itself with
    config.json beside it.
    """
    if weights is not None:
        path = Path(weights)
    elif os.environ.get(WEIGHTS_ENV):
        path = Path(os.environ[WEIGHTS_ENV])
    else:
        path = default_weights_dir()
    expected = (
        f"a directory holding {CONFIG_NAME} and {WEIGHTS_NAME}, "
        f"or a .safetensors file with {CONFIG_NAME} beside it"
    )
    if path.is_dir():
        weights_file = path / WEIGHTS_NAME
    elif path.is_file():
        weights_file = path
    else:
        raise WeightsError(f"weights not found: {path} does not exist (expected {expected})")
    config_file = weights_file.parent / CONFIG_NAME
    for f in (weights_file, config_file):
        if not f.is_file():
            raise WeightsError(f"weights incomplete: {f} does not exist (expected {expected})")
    return config_file, weights_file


def load_config(path: Path) -> GPTConfig:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"cannot read model config {path}: {e}") from e
    try:
        return GPTConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"bad model config {path}: {e}") from e


def load_state_dict(path: Path, model: GPT) -> dict[str, torch.Tensor]:
    """Tensors of ``path``, checked against ``model``'s parameter names and shapes."""
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise WeightsError(f"cannot read safetensors file {path}: {e}") from e
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    problems = []
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    for name in sorted(set(expected) & set(tensors)):
        t = tensors[name]
        if tuple(t.shape) != expected[name]:
            problems.append(f"{name} has shape {tuple(t.shape)}, expected {expected[name]}")
        elif not t.is_floating_point():
            problems.append(f"{name} has dtype {t.dtype}, expected a floating-point dtype")
    if problems:
        raise WeightsError(
            f"weights {path} do not match {model.config} from config.json: " + "; ".join(problems)
        )
    return tensors


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA if available, else MPS, else CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA devices that support it, fp32 everywhere else."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


class SequenceState:
    """One sequence being generated: its KV cache, sampling state and tokens so far.

    ``context`` holds the tokens in the cache (the current window); ``last_token`` is the most
    recently sampled token, which the next ``decode`` feeds to the model. A sequence belongs to
    one thread at a time.
    """

    def __init__(self, prompt_tokens: list[int], params: SamplingParams, cache: KVCache) -> None:
        self.params = params
        self.generator = params.make_generator()
        self.cache = cache
        self.prompt_tokens = prompt_tokens
        self.context: list[int] = []
        self.generated: list[int] = []

    @property
    def last_token(self) -> int:
        if not self.generated:
            raise RuntimeError("sequence has not been prefilled")
        return self.generated[-1]

    @property
    def num_generated(self) -> int:
        return len(self.generated)


class Engine:
    """A loaded model on a device, ready to prefill, decode and generate text."""

    def __init__(
        self,
        model: GPT,
        *,
        device: torch.device,
        dtype: torch.dtype,
        window_keep: int | None = None,
        kv_slots: int = 8,
    ) -> None:
        self.config: GPTConfig = model.config
        self.device = device
        self.dtype = dtype
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        keep = self.config.block_size * 3 // 4 if window_keep is None else window_keep
        if not 1 <= keep <= self.config.block_size:
            raise ValueError(f"window_keep must be in 1..{self.config.block_size}, got {keep}")
        self.window_keep = keep
        # every sequence's KV cache is a slot of this pool (see KVPool); it grows as needed
        self.kv_pool = KVPool(self.config, device=device, dtype=dtype, slots=kv_slots)

    # ---- prompts and seeds -------------------------------------------------------------------

    def prompt_tokens(self, prompt: str) -> list[int]:
        """Token ids fed for ``prompt``: its UTF-8 bytes, the last ``block_size`` of them.

        An empty prompt is fed as a single newline (the model has no start token).
        """
        tokens = encode(prompt or EMPTY_PROMPT)
        return tokens[-self.config.block_size :]

    def count_prompt_tokens(self, prompt: str) -> int:
        """How many prompt tokens are actually fed, after truncation to the window."""
        return len(self.prompt_tokens(prompt))

    @staticmethod
    def resolve_seed(seed: int | None) -> int:
        """``seed``, or a fresh random one when None (what ``generate`` uses; report it)."""
        return resolve_seed(seed)

    @staticmethod
    def random_seed() -> int:
        return random_seed()

    # ---- the two model calls a scheduler drives ----------------------------------------------

    def prefill(self, prompt: str | Sequence[int], params: SamplingParams) -> SequenceState:
        """Start a sequence: run its prompt, sample its first token (``seq.last_token``)."""
        tokens = self.prompt_tokens(prompt) if isinstance(prompt, str) else list(prompt)
        tokens = tokens[-self.config.block_size :]
        if not tokens:
            raise ValueError("prefill needs at least one token")
        if not all(0 <= t < self.config.vocab_size for t in tokens):
            raise ValueError(f"token ids must be in [0, {self.config.vocab_size})")
        with torch.inference_mode():
            cache = KVCache(self.config, device=self.device, dtype=self.dtype, pool=self.kv_pool)
            seq = SequenceState(tokens, params, cache)
            logits = self._prefill_window(seq, tokens)
            seq.generated.append(sample(logits, params, seq.generator))
        return seq

    def decode(self, seqs: Sequence[SequenceState]) -> list[int]:
        """One step for a batch: feed each sequence its last token, sample one more for each.

        Sequences may sit at different positions. A sequence whose window is full re-prefills
        its last ``window_keep`` tokens instead (see the module docstring). Returns the new
        token of each sequence, in order.
        """
        if len({id(s) for s in seqs}) != len(seqs):
            raise ValueError("a sequence appears twice in one decode batch")
        if not seqs:
            return []
        with torch.inference_mode():
            rows: list[torch.Tensor | None] = [None] * len(seqs)
            batch = []
            for i, seq in enumerate(seqs):
                if seq.cache.length >= self.config.block_size:  # window full: slide it
                    window = [*seq.context, seq.last_token][-self.window_keep :]
                    rows[i] = self._prefill_window(seq, window)[None]
                else:
                    batch.append(i)
            logits: torch.Tensor | None = None
            if batch:
                tokens = torch.tensor([seqs[i].last_token for i in batch], device=self.device)
                out = self.model.decode(tokens, [seqs[i].cache for i in batch])  # (B, V)
                logits = out.to(device="cpu", dtype=torch.float32)  # one transfer for the batch
                for i in batch:
                    seqs[i].context.append(seqs[i].last_token)
            if len(batch) < len(seqs):  # some rows re-prefilled: assemble the rows in order
                for row, i in enumerate(batch):
                    assert logits is not None
                    rows[i] = logits[row : row + 1]
                logits = torch.cat(
                    [r.to(device="cpu", dtype=torch.float32) for r in rows if r is not None]
                )
            assert logits is not None
            new_tokens = sample_batch(logits, [s.params for s in seqs], [s.generator for s in seqs])
            for seq, token in zip(seqs, new_tokens, strict=True):
                seq.generated.append(token)
        return new_tokens

    def release(self, seq: SequenceState) -> None:
        """Free ``seq``'s KV cache slot now (idempotent); ``seq`` cannot be decoded afterwards.

        Optional: a sequence that is garbage collected frees its slot too.
        """
        seq.cache.release()

    def _prefill_window(self, seq: SequenceState, window: list[int]) -> torch.Tensor:
        idx = torch.tensor(window, device=self.device)  # (T,)
        logits = self.model.prefill(idx, seq.cache)  # (V,)
        seq.context = list(window)
        return logits

    # ---- per-sequence iterators --------------------------------------------------------------

    def generate_tokens(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[int]:
        """Yield generated token ids (bytes), one per model step. See ``generate``."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        params = SamplingParams(temperature, top_k, top_p, self.resolve_seed(seed))
        return self._token_steps(self.prompt_tokens(prompt), params, max_new_tokens, should_stop)

    def _token_steps(
        self,
        prompt_tokens: list[int],
        params: SamplingParams,
        max_new_tokens: int,
        should_stop: Callable[[], bool] | None,
    ) -> Iterator[int]:
        seq: SequenceState | None = None
        for _ in range(max_new_tokens):
            if should_stop is not None and should_stop():
                return
            if seq is None:
                seq = self.prefill(prompt_tokens, params)
                yield seq.last_token
            else:
                yield self.decode([seq])[0]

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """Stream the continuation of ``prompt``: exactly one str per generated token.

        A piece is "" while a byte completes no character; no piece holds half a character.
        Generation stops after ``max_new_tokens`` tokens (the last piece then flushes any
        incomplete trailing bytes as U+FFFD), or when ``should_stop()`` returns True; it is
        checked before every model step, the prefill included, and an incomplete character
        pending at that point is dropped. There is no end-of-text token. ``seed=None`` picks a
        random seed; call ``resolve_seed`` first to know it. Arguments are checked here, when
        the iterator is created, not at the first ``next``.
        """
        tokens = self.generate_tokens(
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            should_stop=should_stop,
        )
        return self._text_pieces(tokens, max_new_tokens)

    @staticmethod
    def _text_pieces(tokens: Iterator[int], max_new_tokens: int) -> Iterator[str]:
        decoder = Utf8StreamDecoder()
        for n, token in enumerate(tokens, start=1):
            yield decoder.feed(token, final=n == max_new_tokens)

    def warmup(self) -> None:
        """One short prefill and decode step, so the first real request is not the slow one."""
        seq = self.prefill("def warmup():\n", SamplingParams(temperature=0.0))
        self.decode([seq])


def load_model(
    weights: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Engine:
    """Load config.json + model.safetensors into an ``Engine``.

    ``weights``: a directory, or the .safetensors file (config.json beside it); default
    ``$COG_WEIGHTS``, else the repository's ``weights/``. ``device``: default CUDA, else MPS,
    else CPU; ``dtype``: default bf16 on CUDA where supported, else fp32. Raises
    ``WeightsError`` naming the file and what was expected when anything does not match.
    """
    config_file, weights_file = resolve_weights_path(weights)
    config = load_config(config_file)
    with torch.device("meta"):
        shapes = GPT(config)  # parameter names and shapes only, no memory or init cost
    state = load_state_dict(weights_file, shapes)
    model = GPT(config)
    model.load_state_dict(state)
    target = select_device(device)
    return Engine(model, device=target, dtype=dtype or default_dtype(target))
