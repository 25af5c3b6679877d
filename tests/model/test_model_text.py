"""The byte-level tokenizer: streaming UTF-8 decoding never splits a character, never raises."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from model import Utf8StreamDecoder, encode

utf8_text = st.text(alphabet=st.characters(codec="utf-8"))


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(utf8_text, st.lists(st.integers(min_value=0), max_size=20))
def test_split_text_reassembles_and_no_piece_holds_half_a_character(
    text: str, cuts: list[int]
) -> None:
    decoder = Utf8StreamDecoder()
    chunks = split_at(text.encode("utf-8"), cuts)
    pieces = [decoder.feed(chunk) for chunk in chunks]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    for piece in pieces:
        piece.encode("utf-8")  # a half character would have become a surrogate or U+FFFD
    if "\ufffd" not in text:
        assert all("\ufffd" not in p for p in pieces)


@given(utf8_text)
def test_byte_by_byte_pieces_are_whole_characters(text: str) -> None:
    decoder = Utf8StreamDecoder()
    data = text.encode("utf-8")
    pieces = [decoder.feed(b, final=i == len(data) - 1) for i, b in enumerate(data)]
    assert len(pieces) == len(data)  # one piece per byte token
    assert "".join(pieces) == text
    # every non-empty piece is exactly the characters completed by that byte
    position = 0
    for i, piece in enumerate(pieces):
        position += len(piece.encode("utf-8"))
        if piece:
            assert position == i + 1
    assert not decoder.pending


@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=20))
def test_arbitrary_bytes_never_raise_and_match_replace_decoding(
    data: bytes, cuts: list[int]
) -> None:
    decoder = Utf8StreamDecoder()
    out = "".join(decoder.feed(chunk) for chunk in split_at(data, cuts)) + decoder.flush()
    assert out == data.decode("utf-8", errors="replace")


@given(st.binary(min_size=1, max_size=200))
def test_arbitrary_bytes_fed_as_tokens_match_replace_decoding(data: bytes) -> None:
    """One int token at a time, as the scheduler feeds them, ASCII fast path included."""
    decoder = Utf8StreamDecoder()
    pieces = [decoder.feed(b, final=i == len(data) - 1) for i, b in enumerate(data)]
    assert "".join(pieces) == data.decode("utf-8", errors="replace")
    assert not decoder.pending


def test_incomplete_tail_is_flushed_as_replacement() -> None:
    decoder = Utf8StreamDecoder()
    assert decoder.feed(b"a\xe2\x82") == "a"
    assert decoder.pending
    assert decoder.feed(0xAC) == "€"
    assert decoder.feed(b"\xf0\x9f") == ""
    assert decoder.flush() == "\ufffd"
    assert decoder.feed(b"\xff", final=True) == "\ufffd"


def test_encode_is_utf8_bytes_and_survives_lone_surrogates() -> None:
    assert encode("aé€") == list("aé€".encode())
    assert encode("x\ud800y") == [ord("x"), ord("?"), ord("y")]
