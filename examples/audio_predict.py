"""A worked example: speech streamed as WAV chunks, each encoded on a pool, sent in order.

The shape of a streaming text-to-speech model, and of any model whose outputs are
post-processed (frames encoded, images checked or upscaled) while it makes the next one: the
model's own loop calls `on_chunk(i, samples)` for every chunk of audio; each chunk is
normalised and encoded to WAV on a thread pool while the model synthesises the next; the
chunks stream to the client in order as soon as each one and those before it are encoded,
then the full file. `OrderedStage` (threading_utils) does the ordering, the bound on work in
flight, the cancel and the errors: one object instead of a hand-written sender thread
(docs/bridge.md, "Work finished on a pool, sent in order").

The model: a small additive synthesiser built in code (nothing is downloaded). Each letter of
the text is a sound with three formants (vowels from a table, other letters from their code
point), spaces and punctuation are pauses; a glottal pitch contour drawn from the seed drives
up to 96 harmonics, each weighted by the formants' resonance, computed in torch per chunk. It
does not speak English, but it has the cost profile of a vocoder: a few milliseconds of tensor
work per chunk, then encoding.

Context: the producer runs in the bridge's worker thread and the encoder in a
`ContextThreadPoolExecutor`, both under the prediction's context, so the producer's `print`
and the pool threads' `current_scope()` metrics land on this prediction, 4 predictions at once.

Files: `PredictionFiles` (prediction_files.py) gives each prediction a directory and deletes
every file once coglet has read it; a chunk encoded but never sent (a cancel) is deleted at
once through the stage's `discard` hook. Chunk names sort (`speech-00000.wav`, ...,
`speech-full.wav`), so a client that gets uploads in the order they finished can sort them
back (docs/files.md, "Order").

Cancel: `coglet_cancel.install()` in setup; the synthesis loop stops at the next chunk once
`stop_requested()`, queued encodes are cancelled, and running ones are dropped.

Run it: `make predict PREDICTOR=examples/audio_predict.py:Predictor` (writes .wav files to
outputs/), or through tests/examples/test_audio_example.py and the contract
(examples/audio_contract.py).
"""

from __future__ import annotations

import array
import io
import math
import random
import sys
import time
import wave
from collections.abc import Callable, Iterator
from typing import Protocol, cast

import cog
import torch
from cog import BaseRunner, Input, Path, current_scope, streaming

import coglet_cancel
import coglet_inputs
from prediction_files import OutputPath, PredictionFiles
from threading_utils import (
    ContextThreadPoolExecutor,
    Emit,
    OrderedStage,
    generator_from_callback,
    stop_requested,
)

SAMPLE_RATE = 22050  # Hz, 16-bit mono
MAX_HARMONICS = 96
ENCODERS = 2  # pool threads per prediction
MAX_PENDING = 8  # chunks handed to the pool and not yet sent, per prediction

# on_chunk(i, samples): chunk i (from 0) of the audio, a 1-D float tensor
ChunkCallback = Callable[[int, torch.Tensor], None]

# Formants (Hz) of the vowels; other letters get theirs from their code point.
_VOWELS = {
    "a": (730.0, 1090.0, 2440.0),
    "e": (530.0, 1840.0, 2480.0),
    "i": (270.0, 2290.0, 3010.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (300.0, 870.0, 2240.0),
    "y": (400.0, 1900.0, 2600.0),
}
_PAUSES = {" ": 0.06, ",": 0.15, ";": 0.18, ":": 0.18, ".": 0.3, "!": 0.3, "?": 0.3, "\n": 0.3}
_BANDWIDTHS = (90.0, 110.0, 170.0)  # Hz, of the three formants
_GAINS = (1.0, 0.6, 0.3)


class _Scope(Protocol):
    def record_metric(self, name: str, value: float, mode: str = ...) -> None: ...


def _sound(char: str) -> tuple[float, float, float, float, float]:
    """(F1, F2, F3, voiced amplitude, noise amplitude) of one character."""
    lower = char.lower()
    if lower in _VOWELS:
        return (*_VOWELS[lower], 1.0, 0.0)
    code = ord(lower)
    f1 = 250.0 + (code * 37) % 400
    f2 = 900.0 + (code * 91) % 1400
    f3 = 2200.0 + (code * 53) % 900
    if lower in "sfhcxkqtpz":  # unvoiced-ish: mostly noise
        return (f1, f2, f3, 0.15, 0.35)
    return (f1, f2, f3, 0.6, 0.05)


class Utterance:
    """The timeline of one text: per-sample parameters, interpolated between letter centres."""

    def __init__(self, text: str, seed: int) -> None:
        rng = random.Random(seed)
        self.f0 = rng.uniform(95.0, 210.0)  # the voice's pitch
        self.wobble = rng.uniform(0.0, 2 * math.pi)
        letter = rng.uniform(0.065, 0.085)  # seconds per letter: the voice's rate
        centres: list[float] = []
        values: list[tuple[float, float, float, float, float]] = []
        position = 0.0
        for char in text:
            seconds = _PAUSES.get(char, letter)
            sound = (0.0, 0.0, 0.0, 0.0, 0.0) if char in _PAUSES else _sound(char)
            if char in _PAUSES and values:  # a pause keeps the formants, silences the voice
                sound = (*values[-1][:3], 0.0, 0.0)
            centres.append((position + seconds / 2) * SAMPLE_RATE)
            values.append(sound)
            position += seconds
        self.samples = max(1, round(position * SAMPLE_RATE))
        self.centres = torch.tensor(centres or [0.0], dtype=torch.float64)
        self.values = torch.tensor(values or [(0.0,) * 5], dtype=torch.float32)

    def parameters(self, start: int, stop: int) -> torch.Tensor:
        """(5, stop - start): F1, F2, F3, voiced and noise amplitude at each sample."""
        t = torch.arange(start, stop, dtype=torch.float64)
        upper = torch.searchsorted(self.centres, t).clamp(1, max(1, len(self.centres) - 1))
        lower = upper - 1
        if len(self.centres) == 1:
            return self.values[0].unsqueeze(1).expand(5, stop - start)
        left, right = self.centres[lower], self.centres[upper]
        weight = ((t - left) / (right - left)).clamp(0.0, 1.0).to(torch.float32)
        return (self.values[lower] * (1 - weight[:, None]) + self.values[upper] * weight[:, None]).T

    def pitch(self, start: int, stop: int) -> torch.Tensor:
        """f0 (Hz) at each sample: a slow intonation and a faster wobble around the voice's."""
        seconds = torch.arange(start, stop, dtype=torch.float64) / SAMPLE_RATE
        contour = 0.06 * torch.sin(2 * math.pi * 0.4 * seconds)
        contour += 0.02 * torch.sin(2 * math.pi * 5.5 * seconds + self.wobble)
        return self.f0 * (1.0 + contour)


def synthesise(
    text: str,
    seed: int,
    chunk_samples: int,
    on_chunk: ChunkCallback,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Speak `text`, calling `on_chunk(i, samples)` for every chunk; the number of chunks.

    The model's API, as a streaming TTS library has it. Deterministic per seed (its own
    generator); stops before the next chunk once `should_stop()`.
    """
    utterance = Utterance(text, seed)
    noise = torch.Generator().manual_seed(seed)
    harmonics = torch.arange(1, MAX_HARMONICS + 1, dtype=torch.float64)[:, None]
    phase = 0.0  # the glottal phase (radians) at the start of the next chunk
    chunks = math.ceil(utterance.samples / chunk_samples)
    for i in range(chunks):
        if should_stop():
            return i
        start, stop = i * chunk_samples, min(utterance.samples, (i + 1) * chunk_samples)
        f0 = utterance.pitch(start, stop)
        phases = phase + torch.cumsum(2 * math.pi * f0 / SAMPLE_RATE, 0)
        phase = float(phases[-1]) % (2 * math.pi)
        params = utterance.parameters(start, stop)
        frequencies = (harmonics * f0).to(torch.float32)  # (H, n)
        gain = torch.zeros_like(frequencies)
        for k in range(3):
            detune = (frequencies - params[k]) / _BANDWIDTHS[k]
            gain += _GAINS[k] / (1.0 + detune * detune)
        gain *= (frequencies < 0.45 * SAMPLE_RATE) / harmonics.to(torch.float32)
        waves = torch.sin(torch.remainder(harmonics * phases, 2 * math.pi).to(torch.float32))
        voiced = (gain * waves).sum(0)
        hiss = torch.randn(stop - start, generator=noise)
        on_chunk(i, params[3] * voiced + 0.3 * params[4] * hiss)
    return chunks


def pcm16(samples: torch.Tensor) -> bytes:
    """Normalise (a soft limit to [-1, 1]) and quantise to 16-bit little-endian PCM."""
    quantised = (torch.tanh(samples) * 32767.0).round().to(torch.int16)
    data = array.array("h", quantised.tolist())
    if sys.byteorder == "big":
        data.byteswap()
    return data.tobytes()


def wav_bytes(pcm: bytes) -> bytes:
    """A mono 16-bit WAV file of `pcm` at SAMPLE_RATE, with the standard library's `wave`."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm)
    return buffer.getvalue()


class Predictor(BaseRunner):
    def setup(self, weights: Path | str | None = None) -> None:  # nothing to load
        coglet_cancel.install()  # a cancel or a dropped client stops the loop within a chunk
        coglet_inputs.install(self)  # file inputs: only what the server received
        if not torch.cuda.is_available():
            torch.set_num_threads(1)  # one intra-op thread per stream when 4 share the cores
        with torch.inference_mode():  # warm up
            synthesise("warm up", 0, 4096, lambda i, samples: None)
        print("model ready")

    @generator_from_callback(max_queue_size=8)
    def _speak(self, emit: Emit[object], text: str, chunk_ms: int, seed: int | None) -> None:
        """The bridge's worker thread, under the context of the prediction that called it."""
        started = time.perf_counter()
        scope = cast(_Scope, current_scope())  # this prediction's
        if seed is None:
            seed = random.SystemRandom().randrange(2**32)
            scope.record_metric("seed", seed)
        print(f"speaking {len(text)} characters in {chunk_ms} ms chunks (seed {seed})")
        pcm: dict[int, bytes] = {}  # chunk -> its PCM, for the full file

        with (
            PredictionFiles() as files,
            ContextThreadPoolExecutor(ENCODERS, thread_name_prefix="wav") as pool,
            OrderedStage(emit, pool, max_pending=MAX_PENDING, discard=files.discard) as stage,
            torch.inference_mode(),
        ):

            def encode(i: int, samples: torch.Tensor) -> OutputPath:
                """A pool thread, under this prediction's context (metrics land here)."""
                pcm[i] = data = pcm16(samples)
                path = files.path(f"speech-{i:05d}.wav")
                path.write_bytes(wav_bytes(data))
                cast(_Scope, current_scope()).record_metric("encoded_chunks", 1, mode="incr")
                return files.output(path)

            def on_chunk(i: int, samples: torch.Tensor) -> None:  # the model's callback
                stage.submit(encode, i, samples)  # blocks while MAX_PENDING are unsent

            chunk_samples = max(1, round(SAMPLE_RATE * chunk_ms / 1000))
            chunks = synthesise(text, seed, chunk_samples, on_chunk, should_stop=stop_requested)
            if stop_requested():
                print(f"stopped after {chunks} chunks")
                return
            stage.join()  # every chunk sent: every chunk's PCM is in `pcm`
            full = b"".join(pcm[i] for i in range(chunks))
            path = files.path("speech-full.wav")
            path.write_bytes(wav_bytes(full))
            stage.send(files.output(path))  # after the last chunk
        seconds = time.perf_counter() - started
        audio = len(full) / 2 / SAMPLE_RATE
        scope.record_metric("chunks", chunks)
        scope.record_metric("audio_seconds", round(audio, 3))
        scope.record_metric("real_time_factor", audio / seconds)
        print(f"spoke {audio:.2f}s of audio in {chunks} chunks in {seconds:.2f}s")

    @streaming
    @cog.concurrent(max=4)  # an integer literal: cog build reads it statically
    async def run(
        self,
        text: str = Input(
            description="Text to speak",
            default="Hello from a tiny synthesiser, streamed chunk by chunk.",
            max_length=20000,
        ),
        chunk_ms: int = Input(
            description="Audio per streamed chunk, in milliseconds", default=250, ge=20, le=5000
        ),
        seed: int | None = Input(
            description="Random seed (the voice); empty = random", default=None, ge=0, le=4294967295
        ),
    ) -> Iterator[Path]:
        # On the event loop: calling _speak captures this prediction's context.
        return cast(Iterator[Path], self._speak(text, chunk_ms, seed))
