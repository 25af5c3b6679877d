"""Bytes in, text out: the byte-level "tokenizer" of the model.

Tokens are byte values 0..255, so encoding is UTF-8 and decoding must cope with a stream that can
stop in the middle of a multi-byte character, or contain bytes that are not valid UTF-8 at all.
"""

from __future__ import annotations

import codecs


def encode(text: str) -> list[int]:
    """UTF-8 bytes of ``text`` as token ids (0..255). Lone surrogates become ``?``."""
    return list(text.encode("utf-8", errors="replace"))


class Utf8StreamDecoder:
    """Incremental bytes -> str that never emits half a character and never raises.

    ``feed`` returns the text completed by the new bytes ("" while a character is incomplete).
    Invalid sequences become U+FFFD. ``final=True`` (or ``flush()``) ends the stream: incomplete
    trailing bytes are emitted as U+FFFD.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = False  # bytes of an incomplete character are buffered

    def feed(self, data: bytes | int, *, final: bool = False) -> str:
        if isinstance(data, int):
            if data < 0x80 and not self._pending:  # ASCII between characters: itself
                return _ASCII[data]
            data = bytes((data,))
        text: str = self._decoder.decode(data, final)
        self._pending = bool(self._decoder.getstate()[0])
        return text

    def flush(self) -> str:
        self._pending = False
        return self._decoder.decode(b"", True)

    @property
    def pending(self) -> bool:
        """True while bytes of an incomplete character are buffered."""
        return self._pending


_ASCII = [chr(b) for b in range(0x80)]  # what an ASCII byte decodes to, whatever ``final`` is
