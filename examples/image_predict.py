"""A worked example: an image model that streams previews as `Iterator[Path]`, files cleaned up.

The shape of a diffusion pipeline with a step callback (diffusers' `callback_on_step_end`), small
enough to run anywhere: a tiny UNet built in code (its weights drawn from a fixed seed: nothing
is downloaded) denoises a 64x64 image from seeded noise, and its own loop calls
`callback(step, image)` after every step. `generator_from_callback` runs that loop in a worker
thread under the prediction's context, so the callback's `print` and `current_scope()` metrics
land on this prediction even at 4 at once, and turns the callback's `emit` calls into the
generator `run()` returns: a PNG preview every `preview_every` steps, then the final image.

Files: `PredictionFiles` (prediction_files.py) gives each prediction its own directory and
deletes every file once coglet has read it — after success, failure or cancel, uploaded or
inlined. Why not delete them yourself after the `yield`: docs/files.md.

Cancel: `coglet_cancel.install()` in setup; the callback returns True ("interrupt", as diffusers'
pipelines have) once `stop_requested()`, so a cancel or a dropped client stops the loop after the
current step. PNGs are written with the standard library (zlib): no image dependency.

Run it: `make serve`-style with COG_PREDICT_TYPE_STUB=examples/image_predict.py:Predictor, or
through the tests in tests/examples/test_image_example.py.
"""

from __future__ import annotations

import random
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Protocol, cast

import cog
import torch
from cog import BaseRunner, Input, Path, current_scope, streaming
from torch import nn

import coglet_cancel
import coglet_inputs
from prediction_files import PredictionFiles
from threading_utils import Emit, generator_from_callback, stop_requested

SIZE = 64  # pixels, square

# callback(step, image) -> True to stop the loop (step counts from 1; image: 3xHxW in [0, 1])
StepCallback = Callable[[int, torch.Tensor], bool]


class _Scope(Protocol):
    def record_metric(self, name: str, value: float) -> None: ...


class TinyUNet(nn.Module):
    """One down block, one middle block, one up block with a skip: a UNet's shape, 13k weights."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.inp = nn.Conv2d(4, channels, 3, padding=1)  # RGB + the noise level as a 4th plane
        self.down = nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1)
        self.up = nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1)
        self.out = nn.Conv2d(2 * channels, 3, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, noise_level: float) -> torch.Tensor:
        level = torch.full_like(x[:, :1], noise_level)
        h0 = self.act(self.inp(torch.cat([x, level], dim=1)))
        h1 = self.act(self.down(h0))
        h1 = self.act(self.mid(h1)) + h1
        h2 = self.act(self.up(h1))
        return cast(torch.Tensor, self.out(torch.cat([h2, h0], dim=1)))


def build_unet() -> TinyUNet:
    with torch.random.fork_rng(devices=[]):  # the same weights in every process
        torch.manual_seed(0)
        unet = TinyUNet()
    return unet.eval()


def denoise(unet: TinyUNet, steps: int, seed: int, callback: StepCallback) -> torch.Tensor:
    """A DDIM-style loop from seeded noise; calls `callback` after each step (the model's API).

    Deterministic per seed: its own generator, no global RNG.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, SIZE, SIZE, generator=generator)
    image = x[0]
    for step in range(1, steps + 1):
        level = 1.0 - (step - 1) / steps  # noise level now: 1 -> 1/steps
        next_level = 1.0 - step / steps
        out = unet(x, level)
        clean = torch.tanh((out - out.mean()) / (out.std() + 1e-6))  # its guess of the image
        noise = (x - (1.0 - level) * clean) / level
        x = (1.0 - next_level) * clean + next_level * noise
        image = (clean[0] + 1.0) / 2.0
        if callback(step, image):
            break
    return image


def png_bytes(image: torch.Tensor) -> bytes:
    """An 8-bit RGB PNG of a 3xHxW tensor in [0, 1], with the standard library's zlib."""
    _, height, width = image.shape
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    rows = pixels.numpy().tobytes()
    stride = width * 3
    raw = b"".join(b"\x00" + rows[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


@generator_from_callback(max_queue_size=8)
def generate_images(
    emit: Emit[object], unet: TinyUNet, steps: int, preview_every: int, seed: int | None
) -> None:
    """Runs in the bridge's worker thread, under the context of the prediction that called it."""
    started = time.perf_counter()
    scope = cast(_Scope, current_scope())  # this prediction's
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
        scope.record_metric("seed", seed)
    print(f"denoising {steps} steps (seed {seed})")
    done = 0

    with PredictionFiles() as files, torch.inference_mode():

        def save(name: str, image: torch.Tensor) -> None:
            path = files.path(name)
            path.write_bytes(png_bytes(image))
            emit(files.output(path))  # blocks while the consumer is behind

        def on_step(step: int, image: torch.Tensor) -> bool:
            nonlocal done
            done = step
            if stop_requested():  # cancelled, or the client left: stop after this step
                return True
            if preview_every and step % preview_every == 0 and step < steps:
                save(f"preview-{step:03d}.png", image)
                print(f"preview at step {step}")
            return False

        image = denoise(unet, steps, seed, on_step)
        if stop_requested():
            print(f"stopped after step {done}")
            return
        save("output.png", image)
    seconds = time.perf_counter() - started
    scope.record_metric("steps", done)
    scope.record_metric("steps_per_second", done / seconds)
    print(f"denoised {done} steps in {seconds:.2f}s")


class Predictor(BaseRunner):
    def setup(self, weights: Path | str | None = None) -> None:  # weights: built in code
        coglet_cancel.install()  # a cancel or a dropped client stops the loop within a step
        coglet_inputs.install(self)  # file inputs: only what the server received
        if not torch.cuda.is_available():
            torch.set_num_threads(1)  # one intra-op thread per stream when 4 share the cores
        self.unet = build_unet()
        with torch.inference_mode():  # warm up
            denoise(self.unet, 2, 0, lambda step, image: False)
        print("model ready")

    @streaming
    @cog.concurrent(max=4)  # an integer literal: cog build reads it statically
    async def run(
        self,
        steps: int = Input(description="Denoising steps", default=40, ge=1, le=1000),
        preview_every: int = Input(
            description="A preview image every N steps; 0 = only the final image",
            default=10,
            ge=0,
            le=1000,
        ),
        seed: int | None = Input(
            description="Random seed; empty = random", default=None, ge=0, le=4294967295
        ),
    ) -> Iterator[Path]:
        # On the event loop: calling generate_images captures this prediction's context.
        stream = generate_images(self.unet, steps, preview_every, seed)
        return cast(Iterator[Path], stream)  # yields PredictionFiles.output() paths
