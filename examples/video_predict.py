"""A worked example: a video streamed frame by frame as JPEGs encoded on a pool, then an MP4.

The shape of a text-to-video model, and of any model that makes frames one after another and
post-processes each (encoded, checked, upscaled) while it makes the next: the model's loop
yields a frame at a time; each frame is JPEG-encoded on a thread pool while the next is made;
the frames stream to the client in order as soon as each one and those before it are encoded,
then one MP4 of them all. `OrderedStage` (threading_utils) does the ordering, the bound on work
in flight, the cancel and the errors (docs/bridge.md, "Work finished on a pool, sent in order").

The model: a tiny decoder built in code (weights from a fixed seed: nothing is downloaded). The
prompt's bytes are embedded and averaged into a text vector; the seed draws two latent vectors,
and frame i's latent turns between them at one revolution every few seconds of video (so `fps`
changes the sampling, not the motion); four transposed convolutions decode text + latent into a
64x64 RGB frame. It paints colour fields, not your prompt, with a video model's cost profile: a
few milliseconds of tensor work per frame, then encoding.

Encoding: JPEG frames and the MP4 with imageio (pillow writes the JPEGs; imageio-ffmpeg's own
ffmpeg binary, shipped in its wheel, the H.264 MP4).

Context: the producer runs in the bridge's worker thread and the encoder in a
`ContextThreadPoolExecutor` (the executor docs/bridge.md recommends for a stage), both under the
prediction's context, so their `print`s and `current_scope()` metrics land on this prediction,
4 predictions at once.

Closing work on cancel: the producer's summary (log line and `frames` metric) is in a `finally`.
A cancel ends the producer with an exception (`StreamClosed` from the stage, as `emit` raises
it; a generator producer gets `GeneratorExit` at its `yield`), so code after the loop never runs
then; the `finally` does, before the stream ends and coglet reports the prediction `canceled`,
so the line is in the cancelled prediction's logs (docs/bridge.md, "Closing work on cancel").

Files: `PredictionFiles` deletes every file once coglet has read it; a frame encoded but never
sent (a cancel) is deleted at once through the stage's `discard`. Names sort (`frame-00000.jpg`,
..., `video.mp4`), so a client that gets uploads in the order they finished sorts them back.

Run it: `make predict PREDICTOR=examples/video_predict.py:Predictor` (writes .jpg files and the
.mp4 to outputs/), or through tests/examples/test_video_example.py and the contract
(examples/video_contract.py).
"""

from __future__ import annotations

import math
import pathlib
import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, cast

import cog
import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
import numpy.typing as npt
import torch
from cog import BaseRunner, Input, Path, current_scope, streaming
from torch import nn

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

SIZE = 64  # pixels, square (a multiple of 16: H.264's macro block)
LATENT = 32
SECONDS_PER_TURN = 4.0  # the latent's revolution: the motion's speed, whatever the fps
ENCODERS = 2  # pool threads per prediction
MAX_PENDING = 8  # frames handed to the pool and not yet sent, per prediction
JPEG_QUALITY = 90

Pixels = npt.NDArray[np.uint8]  # HxWx3


class _Scope(Protocol):
    def record_metric(self, name: str, value: float, mode: str = ...) -> None: ...


class TinyVideoDecoder(nn.Module):
    """(text vector, latent, time) -> a 3xSIZExSIZE frame in [0, 1]: 8x8 up to 64x64."""

    def __init__(self, channels: int = 48) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(256, LATENT, mode="mean")  # the prompt's bytes
        self.project = nn.Linear(2 * LATENT + 2, channels * 8 * 8)
        self.up = nn.ModuleList(_conv(channels, channels) for _ in range(3))
        self.refine = _conv(channels, channels)
        self.out = _conv(channels, 3)
        self.act = nn.SiLU()
        self.channels = channels

    def text(self, prompt: str) -> torch.Tensor:
        data = prompt.encode()[:4096] or b" "
        return cast(torch.Tensor, self.embed(torch.tensor([list(data)])))  # (1, LATENT)

    def forward(self, text: torch.Tensor, latent: torch.Tensor, t: float) -> torch.Tensor:
        clock = torch.tensor([[math.sin(t), math.cos(t)]])
        h = self.project(torch.cat([text, latent, clock], dim=1)).view(1, self.channels, 8, 8)
        for conv in self.up:  # 8 -> 16 -> 32 -> 64: a smooth upsampling, then a conv
            h = nn.functional.interpolate(h, scale_factor=2.0, mode="bilinear")
            h = self.act(_standardise(conv(h)))
        h = self.act(self.refine(h)) + h
        return torch.sigmoid(2.0 * _standardise(self.out(h)))[0]


def _conv(into: int, out: int) -> nn.Conv2d:
    return nn.Conv2d(into, out, 3, padding=1, padding_mode="reflect")


def _standardise(h: torch.Tensor) -> torch.Tensor:
    """Each channel to mean 0, deviation 1 (an instance norm without weights): colour and
    contrast survive four random layers."""
    mean = h.mean(dim=(2, 3), keepdim=True)
    return (h - mean) / (h.std(dim=(2, 3), keepdim=True) + 1e-5)


def build_decoder() -> TinyVideoDecoder:
    with torch.random.fork_rng(devices=[]):  # the same weights in every process
        torch.manual_seed(0)
        decoder = TinyVideoDecoder()
    return decoder.eval()


def render(
    decoder: TinyVideoDecoder,
    prompt: str,
    seed: int,
    frames: int,
    fps: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[torch.Tensor]:
    """Yield `frames` frames (3xSIZExSIZE in [0, 1]) of `prompt`, in order: the model's API.

    Deterministic per seed (its own generator); stops before the next frame once
    `should_stop()`.
    """
    generator = torch.Generator().manual_seed(seed)
    start, end = torch.randn(2, 1, LATENT, generator=generator)
    text = decoder.text(prompt)
    for i in range(frames):
        if should_stop():
            return
        angle = 2 * math.pi * i / (fps * SECONDS_PER_TURN)
        latent = math.cos(angle) * start + math.sin(angle) * end
        yield decoder(text, latent, angle)


def to_pixels(frame: torch.Tensor) -> Pixels:
    """A 3xHxW tensor in [0, 1] as HxWx3 8-bit RGB."""
    scaled = (frame.clamp(0, 1) * 255).round().to(torch.uint8)
    return cast(Pixels, scaled.permute(1, 2, 0).contiguous().numpy())


class _VideoWriter(Protocol):  # what imageio's stubs leave out of its Writer
    def append_data(self, im: Pixels) -> None: ...
    def close(self) -> None: ...


def write_mp4(
    path: pathlib.Path, frames: Iterable[Pixels], fps: int, should_stop: Callable[[], bool]
) -> bool:
    """An H.264 MP4 of `frames` (imageio-ffmpeg's ffmpeg, fed frame by frame through a pipe);
    False if stopped part-way (the part-written file is left to its PredictionFiles)."""
    writer = cast(
        _VideoWriter,
        imageio_v2.get_writer(
            path, format="FFMPEG", mode="I", fps=fps, codec="libx264", macro_block_size=16
        ),
    )
    try:
        for pixels in frames:
            if should_stop():
                return False
            writer.append_data(pixels)
    finally:
        writer.close()  # ffmpeg finishes the file and exits
    return True


class Predictor(BaseRunner):
    def setup(self, weights: Path | str | None = None) -> None:  # weights: built in code
        coglet_cancel.install()  # a cancel or a dropped client stops the loop within a frame
        coglet_inputs.install(self)  # file inputs: only what the server received
        if not torch.cuda.is_available():
            torch.set_num_threads(1)  # one intra-op thread per stream when 4 share the cores
        self.decoder = build_decoder()
        with torch.inference_mode():  # warm up: the model, pillow's JPEG and ffmpeg's MP4
            frames = [to_pixels(f) for f in render(self.decoder, "warm up", 0, 2, 8)]
        with PredictionFiles() as files:  # never handed to coglet: deleted at the block's end
            iio.imwrite(files.path("warm.jpg"), frames[0], extension=".jpg")
            write_mp4(files.path("warm.mp4"), frames, 8, lambda: False)
        print("model ready")

    @generator_from_callback(max_queue_size=8)
    def _film(
        self, emit: Emit[object], prompt: str, frames: int, fps: int, seed: int | None
    ) -> None:
        """The bridge's worker thread, under the context of the prediction that called it."""
        started = time.perf_counter()
        scope = cast(_Scope, current_scope())  # this prediction's
        if seed is None:
            seed = random.SystemRandom().randrange(2**32)
            scope.record_metric("seed", seed)
        print(f"rendering {frames} frames at {fps} fps (seed {seed})")
        made = 0
        outcome = "failed"
        try:
            with (
                PredictionFiles() as files,
                ContextThreadPoolExecutor(ENCODERS, thread_name_prefix="jpeg") as pool,
                OrderedStage(emit, pool, max_pending=MAX_PENDING, discard=files.discard) as stage,
                torch.inference_mode(),
            ):
                pixels: dict[int, Pixels] = {}  # frame -> its pixels, for the MP4

                def encode(i: int, frame: torch.Tensor) -> OutputPath:
                    """A pool thread, under this prediction's context (metrics land here)."""
                    began = time.perf_counter()
                    pixels[i] = data = to_pixels(frame)
                    path = files.path(f"frame-{i:05d}.jpg")
                    iio.imwrite(path, data, extension=".jpg", quality=JPEG_QUALITY)
                    ms = (time.perf_counter() - began) * 1000
                    cast(_Scope, current_scope()).record_metric("encode_ms", ms, mode="incr")
                    return files.output(path)

                for i, frame in enumerate(
                    render(self.decoder, prompt, seed, frames, fps, should_stop=stop_requested)
                ):
                    stage.submit(encode, i, frame)  # blocks while MAX_PENDING are unsent
                    made = i + 1
                if stop_requested():
                    return  # the closing work below runs all the same
                stage.join()  # every frame sent: every frame's pixels are in `pixels`
                path = files.path("video.mp4")
                if not write_mp4(path, (pixels[i] for i in range(made)), fps, stop_requested):
                    return
                stage.send(files.output(path))  # after the last frame
            outcome = "done"
        finally:
            # Closing work: runs however the producer ends, also on a cancel, where the stage
            # raises StreamClosed out of the loop (code after it never runs then) or the loop
            # ends early; it runs before the stream ends, so the line reaches this prediction.
            if outcome != "done" and stop_requested():
                outcome = "cancelled"
            seconds = time.perf_counter() - started
            scope.record_metric("frames", made)
            print(f"video {outcome}: {made} frames in {seconds:.2f}s")

    @streaming
    @cog.concurrent(max=4)  # an integer literal: cog build reads it statically
    async def run(
        self,
        prompt: str = Input(
            description="What the video shows", default="a red kite over the sea", max_length=4096
        ),
        frames: int = Input(description="Frames to render", default=48, ge=1, le=1000),
        fps: int = Input(description="Frames per second of the MP4", default=12, ge=1, le=60),
        seed: int | None = Input(
            description="Random seed; empty = random", default=None, ge=0, le=4294967295
        ),
    ) -> Iterator[Path]:
        # On the event loop: calling _film captures this prediction's context.
        return cast(Iterator[Path], self._film(prompt, frames, fps, seed))
