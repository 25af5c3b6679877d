"""A worked example: a model that takes files — images in, one caption streamed per image.

The shape of a batch captioning model: `image` (one file) and `images` (a list of files) arrive
as data URIs or http(s) URLs; each is decoded and resized on a thread pool while the model
captions the ones before it, and a `Caption` (a structured output) is streamed as soon as its
image is done. The model is a tiny CNN encoder and GRU decoder built in code (weights from a
fixed seed: nothing is downloaded), so its words are noise after the first few, which describe
the image's real colour and brightness.

Files in: `coglet_inputs.install(self)` makes every file input one the server received (a path
on the server fails the prediction before anything is opened), downloads URLs inside the
prediction (a cancel stops them; time and size are on the prediction's logs and metrics) and
deletes the files once the prediction is over (docs/files.md, "File inputs").

Threads: `generator_from_thread` runs `captions()` in a worker under this prediction's context;
its own `ContextThreadPoolExecutor` decodes images on pool threads under the same context, so
the pool's `print` lands on this prediction too, 4 predictions at once. Cancel: `coglet_cancel`
stops the generator at its next `yield`; the `finally` cancels the decodes not yet begun and
still writes the closing log line and metric, and the pool's threads end with the stream.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import cog
import torch
from cog import BaseModel, BaseRunner, Input, Path, current_scope, streaming
from PIL import Image, UnidentifiedImageError
from torch import nn

import coglet_cancel
import coglet_inputs
from threading_utils import ContextThreadPoolExecutor, generator_from_thread

MAX_IMAGES = 16  # per prediction (`image` + `images`); more fails with a clear message
MAX_PIXELS = 16_000_000  # per image, read from its header before it is decoded
DECODERS = 4  # pool threads decoding one prediction's images
SIZE = 128  # the model's input: SIZE x SIZE RGB
WORDS = "a photo of the small large bright dark red green blue grey sky tree cat dog house road"
VOCAB = tuple(f"{WORDS} water light shadow pattern with and in near".split())  # "a" starts
COLOURS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "grey": (0.5, 0.5, 0.5)}


class _Scope(Protocol):
    def record_metric(self, name: str, value: float) -> None: ...


@dataclass  # explicit for mypy --strict (cog.BaseModel makes it a dataclass at run time too)
class Caption(BaseModel, auto_dataclass=False):
    index: int  # 0 is `image`, then `images` in order
    width: int  # of the image as sent
    height: int
    caption: str


class TinyCaptioner(nn.Module):
    """A CNN encoder and a GRU decoder: (B, 3, SIZE, SIZE) -> up to max_words token ids each."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),  # (B, 16, 64, 64)
            nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),  # (B, 32, 32, 32)
            nn.SiLU(),
            nn.Conv2d(32, width, 3, stride=2, padding=1),  # (B, W, 16, 16)
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # (B, W)
        )
        self.embed = nn.Embedding(len(VOCAB), width)
        self.cell = nn.GRUCell(width, width)
        self.head = nn.Linear(width, len(VOCAB))

    def forward(self, pixels: torch.Tensor, max_words: int) -> torch.Tensor:
        h = self.encoder(pixels)  # (B, W)
        token = torch.zeros(pixels.shape[0], dtype=torch.long)  # "a"
        words = []
        for _ in range(max_words):
            h = self.cell(self.embed(token), h)  # (B, W)
            token = self.head(h).argmax(dim=-1)  # (B,)
            words.append(token)
        return torch.stack(words, dim=1)  # (B, max_words)


def build_captioner() -> TinyCaptioner:
    with torch.random.fork_rng(devices=[]):  # the same weights in every process
        torch.manual_seed(0)
        model = TinyCaptioner()
    return model.eval()


def load(index: int, path: Path) -> tuple[torch.Tensor, int, int]:
    """Decode and resize one image (a pool thread; Pillow releases the GIL while it decodes)."""
    where = "image" if index == 0 else f"images[{index - 1}]"
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ValueError(f"{where}: {width}x{height} is more than {MAX_PIXELS:,} pixels")
            rgb = image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{where}: not an image this model can read") from exc
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    pixels = pixels.view(SIZE, SIZE, 3).permute(2, 0, 1).float() / 255  # (3, SIZE, SIZE)
    print(f"decoded {where}: {width}x{height}")  # a pool thread: lands on this prediction
    return pixels, width, height


def describe(pixels: torch.Tensor) -> str:
    """The words a reader can check: brightness and the nearest of a few colours."""
    mean = pixels.mean(dim=(1, 2))  # (3,)
    colour = min(COLOURS, key=lambda c: float((mean - torch.tensor(COLOURS[c])).norm()))
    return f"a {'bright' if float(mean.mean()) > 0.5 else 'dark'} {colour} image"


@generator_from_thread(max_queue_size=4)
def captions(model: TinyCaptioner, paths: list[Path], max_words: int) -> Iterator[Caption]:
    """Runs in the bridge's worker thread, under the context of the prediction that called it."""
    scope = cast(_Scope, current_scope())  # this prediction's
    started, done = time.perf_counter(), 0
    print(f"captioning {len(paths)} images")
    # A pool per prediction (docs/bridge.md): its threads end with the stream.
    with ContextThreadPoolExecutor(DECODERS, thread_name_prefix="decode") as pool:
        decoded = pool.map(load, range(len(paths)), paths)  # all submitted, run 4 at a time
        try:
            with torch.inference_mode():
                for index, (pixels, width, height) in enumerate(decoded):
                    tokens = model(pixels[None], max_words)[0]  # (max_words,)
                    words = " ".join(VOCAB[t] for t in tokens.tolist())
                    caption = f"{describe(pixels)}: {words}"
                    yield Caption(index=index, width=width, height=height, caption=caption)
                    done += 1
        finally:  # also on cancel (GeneratorExit at the yield) and on a bad image
            cast(Generator[Any, None, None], decoded).close()  # cancels decodes not begun
            scope.record_metric("images_captioned", done)
            seconds = time.perf_counter() - started
            print(f"captioned {done} of {len(paths)} images in {seconds:.2f}s")


class Predictor(BaseRunner):
    def setup(self, weights: Path | str | None = None) -> None:  # weights: built in code
        coglet_cancel.install()  # a cancel or a dropped client stops the loop at its next image
        coglet_inputs.install(self)  # file inputs: only what the server received (see above)
        if not torch.cuda.is_available():
            torch.set_num_threads(1)  # one intra-op thread per stream when 4 share the cores
        self.model = build_captioner()
        with torch.inference_mode():  # warm up
            self.model(torch.zeros(1, 3, SIZE, SIZE), 2)
        print("model ready")

    @streaming
    @cog.concurrent(max=4)  # an integer literal: cog build reads it statically
    async def run(
        self,
        image: Path = Input(description="An image (PNG, JPEG, WebP, ...)"),
        images: list[Path] | None = Input(
            description="More images, captioned after `image` (up to 15)", default=None
        ),
        max_words: int = Input(description="Words per caption", default=8, ge=1, le=64),
    ) -> Iterator[Caption]:
        paths = [image, *(images or [])]
        if len(paths) > MAX_IMAGES:  # the schema cannot bound `image` + `images` together
            raise ValueError(f"give 1 to {MAX_IMAGES} images: got {len(paths)}")
        # On the event loop: calling captions() captures this prediction's context.
        return captions(self.model, paths, max_words)
