"""A tiny byte-level GPT trained on the Python standard library, and its streaming engine.

Example::

    from model import load_model
    engine = load_model()          # argument, else $COG_WEIGHTS, else the repository's weights/
    engine.warmup()
    for piece in engine.generate("def fibonacci(n):", max_new_tokens=200, seed=1):
        print(piece, end="", flush=True)

    scheduler = Scheduler(engine).start()  # continuous batching on one thread (scheduler.py)
    for chunk in scheduler.submit("def f():", max_new_tokens=200, seed=1).stream():
        print(chunk, end="", flush=True)
"""

from .engine import (
    Engine,
    SequenceState,
    WeightsError,
    default_weights_dir,
    load_model,
    resolve_weights_path,
    select_device,
)
from .gpt import GPT, GPTConfig, KVCache
from .sampling import SamplingParams, random_seed, resolve_seed
from .scheduler import BatchEngine, RequestListener, Scheduler, SequenceError
from .text import Utf8StreamDecoder, encode

__all__ = [
    "GPT",
    "BatchEngine",
    "Engine",
    "GPTConfig",
    "KVCache",
    "RequestListener",
    "SamplingParams",
    "Scheduler",
    "SequenceError",
    "SequenceState",
    "Utf8StreamDecoder",
    "WeightsError",
    "default_weights_dir",
    "encode",
    "load_model",
    "random_seed",
    "resolve_seed",
    "resolve_weights_path",
    "select_device",
]
