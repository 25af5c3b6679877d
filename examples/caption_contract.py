"""The contract's inputs for examples/caption_predict.py: tests/contract.py, for a model that
takes files.

A fork that serves the caption example copies this file over tests/contract.py. Its images are
made here, as data URIs of small PNGs (the standard library's zlib: no image library needed);
the contract also sends them as http URLs from a server of its own, and sends paths of the
server in their place, which must be refused.
"""

from __future__ import annotations

import base64
import re
import struct
import zlib
from typing import Any

PREDICTOR = "examples/caption_predict.py:Predictor"


def png(width: int, height: int, seed: int) -> str:
    """A data URI of an RGB PNG whose pixels follow from `seed` (a gradient, tinted)."""
    tint = (seed * 73 % 256, seed * 151 % 256, seed * 199 % 256)
    rows = b"".join(
        b"\x00" + bytes((x * 255 // width + t) % 256 for x in range(width) for t in tint)
        for _ in range(height)
    )

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
    data += chunk(b"IEND", b"")
    return f"data:image/png;base64,{base64.b64encode(data).decode()}"


def short_input(i: int) -> dict[str, Any]:
    """A valid input that finishes in well under a second; a different output for each `i`."""
    return {"image": png(32 + i, 24, i), "images": [png(16, 16, i + 100)], "max_words": 4}


def streaming_input(i: int) -> dict[str, Any]:
    """The most the bounds allow: 16 images, 64 words each (each caption streams when done)."""
    return {
        "image": png(256, 256, i),
        "images": [png(256, 192, 1000 * i + j) for j in range(15)],
        "max_words": 64,
    }


def long_input(i: int) -> dict[str, Any]:
    """The longest input there is: it streams about 0.1 s on 2 CPU cores (the cancel check
    measures whatever it is)."""
    return streaming_input(i)


# Each must be answered 422 (the schema's validation), never reach the model.
BAD_INPUTS: dict[str, dict[str, Any]] = {
    "no image": {"images": [png(8, 8, 0)]},
    "a number for an image": {"image": 7},
    "a string for a list": {"image": png(8, 8, 0), "images": png(8, 8, 1)},
    "null for the image": {"image": None},
    "too many words": {"image": png(8, 8, 0), "max_words": 1000},
    "1 MB string for a list": {"image": png(8, 8, 0), "images": "x" * 1_000_000},
}

# Errors a schema-valid input may fail with: what the schema cannot say (the schema fuzzer
# sends random files and lists).
ACCEPTABLE_ERRORS = (
    r"give 1 to 16 images",
    r"not an image this model can read",
    r"is more than [\d,]+ pixels",
)

# Metrics whose values differ between two runs of the same input; every other metric must match.
VOLATILE_METRICS = frozenset({"predict_time"})
# Parts of a log line that differ between two runs of the same input (timings).
VOLATILE_LOG = re.compile(r"\d+\.\d+")
