"""coglet_inputs in this process: the wrapper's shapes, checks, downloads and clean-up.

The real-server behaviour is in tests/test_coglet_inputs.py; here each run() shape coglet can
call (a coroutine, an async generator, a sync function returning a stream) gets the same
checks, with data URIs (no network) and `cog.types.Path.validate` as coglet calls it.
"""

from __future__ import annotations

import asyncio
import base64
import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path as StdPath
from typing import Any

import cog.types
import pytest
from cog import Path

import coglet_inputs

pytestmark = [pytest.mark.timeout(30)]

DATA = b"some bytes\n" * 100


def uri(data: bytes = DATA) -> str:
    return f"data:text/plain;base64,{base64.b64encode(data).decode()}"


def pending(value: str) -> Any:
    """What coglet hands run() for a file input sent as `value`."""
    return cog.types.Path.validate(value)


class Shapes:
    """One method per run() shape; each reads its files when it runs (or streams)."""

    async def coroutine(self, image: Path, images: list[Path] | None = None) -> list[bytes]:
        return [StdPath(p).read_bytes() for p in [image, *(images or [])]]

    async def agen(self, image: Path) -> AsyncIterator[bytes]:
        yield StdPath(image).read_bytes()

    def stream(self, image: Path) -> Iterator[bytes]:
        def read() -> Iterator[bytes]:
            yield StdPath(image).read_bytes()

        return read()


class _Predictor:
    async def run(self, image: Path) -> None:
        pass


@pytest.fixture
def installed() -> None:
    coglet_inputs.install(_Predictor())  # patches Path.validate (conftest undoes it)


def wrap(method: Any, **options: Any) -> Any:
    return coglet_inputs._guard(method, allow_local_paths=False, max_bytes=None, **options)


async def collect(agen: AsyncIterator[bytes]) -> list[bytes]:
    return [item async for item in agen]


def test_a_url_or_data_uri_becomes_a_pending_file_that_cannot_be_opened(installed: None) -> None:
    item = pending(uri())
    assert isinstance(item, coglet_inputs.PendingFile)
    assert not isinstance(item, cog.types.URLPath)  # coglet must not download it (see module)
    assert repr(item) == "PendingFile('data:text/plain;base64,…')"
    with pytest.raises(RuntimeError, match="was not downloaded"):
        open(item)  # noqa: SIM115
    assert pending("/etc/hostname") == cog.types.Path("/etc/hostname")  # the original's way


def test_every_shape_gets_the_bytes_sent_and_leaves_no_file(
    installed: None, tmp_path: StdPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    shapes = Shapes()
    out = asyncio.run(wrap(shapes.coroutine)(image=pending(uri()), images=[pending(uri(b"x"))]))
    assert out == [DATA, b"x"]
    assert list(tmp_path.iterdir()) == []  # a result that is no stream: deleted at once
    assert asyncio.run(collect(wrap(shapes.agen)(image=pending(uri())))) == [DATA]
    assert list(tmp_path.iterdir()) == []
    stream = wrap(shapes.stream)(image=pending(uri()))
    assert len(list(tmp_path.iterdir())) == 1  # kept while the stream may still read it
    assert list(stream) == [DATA]
    del stream
    gc.collect()
    assert list(tmp_path.iterdir()) == []  # gone once the stream is


@pytest.mark.parametrize("path", ["/etc/hostname", "predict.py", "/proc/self/environ"])
def test_a_server_path_is_refused_by_name_in_every_shape(installed: None, path: str) -> None:
    shapes = Shapes()
    message = f"image: {path!r} is not a file this server received"
    with pytest.raises(coglet_inputs.ServerPathError, match=message):
        asyncio.run(wrap(shapes.coroutine)(image=path))
    with pytest.raises(coglet_inputs.ServerPathError, match=message):
        asyncio.run(collect(wrap(shapes.agen)(image=path)))
    with pytest.raises(coglet_inputs.ServerPathError, match=message):
        wrap(shapes.stream)(image=path)
    with pytest.raises(coglet_inputs.ServerPathError, match="images: "):
        asyncio.run(wrap(shapes.coroutine)(image=pending(uri()), images=[pending(uri()), path]))


def test_opting_out_lets_server_paths_through(installed: None, tmp_path: StdPath) -> None:
    local = tmp_path / "local.txt"
    local.write_bytes(b"local")
    guarded = coglet_inputs._guard(Shapes().coroutine, allow_local_paths=True, max_bytes=None)
    assert asyncio.run(guarded(image=str(local))) == [b"local"]


def test_a_file_over_max_bytes_fails_by_name_and_leaves_no_file(
    installed: None, tmp_path: StdPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    guarded = coglet_inputs._guard(Shapes().coroutine, allow_local_paths=False, max_bytes=100)
    with pytest.raises(coglet_inputs.DownloadError, match="image: the file is larger than 100"):
        asyncio.run(guarded(image=pending(uri())))
    assert list(tmp_path.iterdir()) == []


def test_install_wraps_once_and_only_a_predictor_with_file_inputs() -> None:
    class NoFiles:
        async def run(self, prompt: str) -> str:
            return prompt

    class Files:
        async def run(self, image: Path) -> str:
            return str(image)

    plain, files = NoFiles(), Files()
    coglet_inputs.install(plain)
    coglet_inputs.install(files)
    coglet_inputs.install(files)
    assert "run" not in vars(plain)  # nothing to check: left as it is
    assert getattr(files.run, "__coglet_inputs__", False)
    assert files.run.__wrapped__.__func__ is Files.run  # once, not twice
    assert coglet_inputs.installed()
    assert coglet_inputs.uninstall()
    assert not coglet_inputs.uninstall()
    # uninstalled: the wrapper hands over what coglet gives, unchecked
    assert asyncio.run(files.run(image="/etc/hostname")) == "/etc/hostname"
