"""File inputs are only what the server downloaded; downloads a cancel stops (cog 0.23 workaround).

The upstream behaviour worked around, read in replicate/cog at 6110c91 (0.22.0; the 0.23.1 wheel
behaves the same, measured on the real server), ``crates/coglet-python/src/input.rs``:

- ``coerce_typed_inputs`` hands a ``cog.Path`` (or ``list[Path]``) input to ``Path.validate``
  only when its string starts with ``http://``, ``https://`` or ``data:``. Any other string
  reaches ``run()`` as it was sent, and coglet's HTTP edge does not check the schema's
  ``format: uri``. A model that opens its input then reads a file of the server:
  ``{"image": "/etc/hostname"}``, ``"/proc/self/environ"``, ``"weights/model.safetensors"``
  (the build context, ``/src`` in the image). cog 0.16's Python server does the same
  (``cog.types.Path.validate`` returns ``Path(value)`` for anything that is not a URL).
- ``download_url_paths_into_dict`` downloads every URL input in ``prepare_input``, before the
  prediction's slot has anything to cancel: a cancel or a dropped client during a download does
  nothing until it ends (then the prediction ends ``failed``, its error empty), the slot stays
  taken, nothing tells the client that a download is under way, and a failed download leaves the
  temp files of that request behind (the failing one's, 0 bytes, and its siblings').

What :func:`install` does instead, in the model's process:

1. ``cog.types.Path.validate`` (which coglet looks up on each request) turns a URL or data URI
   into a :class:`PendingFile` without reading it. It is not a ``cog.types.URLPath``, so
   coglet's ``prepare_input`` neither downloads it nor starts its download pool (where a
   cancel as the prediction starts can lose the prediction and its slot for good:
   ``PendingFile``'s docstring).
2. The predictor's ``run()`` (or ``predict()``) is wrapped on the instance. Before the model's
   code runs, every file input is checked: a :class:`PendingFile` is downloaded into a temp file
   and the model receives a ``cog.Path`` to it; anything else — a path on the server — fails the
   prediction with a message that names the input and says what to send instead. The download
   runs inside the prediction: a cancel stops it within one read (:data:`CHUNK` bytes), a failed
   or cancelled download leaves no file, and its time and size reach the client as a log line
   (for an http(s) URL) and the metrics ``input_download_time`` and ``input_bytes``. The files
   are deleted when the prediction is done with them: a result that is a stream once coglet has
   iterated and freed it (a producer thread reads them meanwhile), any other result when
   ``run()`` returns, and on an error or a cancel at once.

Opting out: ``install(self, allow_local_paths=True)`` lets server-local paths through (a model
served only to trusted callers, reading a mounted volume); downloads stay as above. Not calling
:func:`install` leaves coglet's behaviour as it is.

When to remove it: ``tests/test_coglet_inputs.py`` serves a predictor that opens its ``Path``
input without this module and sends it ``/etc/hostname``
(``test_without_the_guard_coglet_hands_a_server_path_to_run``). The day that test fails, coglet
refuses server paths itself; ``test_without_the_guard_a_cancel_waits_for_the_download`` does
the same for downloads. When both fail, delete this module, its ``install()`` lines and those
tests.

Call :func:`install` in ``setup()``, never at import: it changes ``cog.types.Path.validate`` for
the whole process, which only the process that serves the model should do. In-process tests
call :func:`uninstall` (tests/conftest.py does, after every test).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import pathlib
import tempfile
import threading
import time
import types
import typing
import urllib.parse
import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, cast

import cog
import cog.types

__all__ = [
    "CHUNK",
    "METRICS",
    "DownloadError",
    "PendingFile",
    "ServerPathError",
    "install",
    "installed",
    "uninstall",
]

CHUNK = 1 << 20  # bytes read between two checks for a cancel
WAIT_SLICE = 0.05  # seconds: how soon a sync run() sees its cancel while a file downloads
TIMEOUT = 30.0  # seconds without a byte from an http(s) server before its download fails
METRICS = ("input_download_time", "input_bytes")  # what a prediction with file inputs records
_URL_PREFIXES = ("http://", "https://", "data:")

_lock = threading.Lock()
_original_validate: Any = None  # cog.types.Path.validate as it was before install()


class _Scope(Protocol):
    def record_metric(self, name: str, value: float) -> None: ...


class ServerPathError(ValueError):
    """A file input that is not a file the server downloaded: a path on the server."""


class DownloadError(ValueError):
    """A file input that could not be read: its URL failed, or it exceeds ``max_bytes``."""


class PendingFile(cog.types.Path):
    """A file input sent as a URL or data URI, not yet read; downloaded when ``run()`` starts.

    Deliberately not a ``cog.types.URLPath``: coglet downloads those in ``prepare_input`` on a
    thread pool of its own, where a cancel that lands as the prediction starts can kill a pool
    thread and leave the prediction unanswered and its slot taken for good (cancels sent as
    their predictions started took all 4 slots of a server within the first 5, before this
    module stopped handing coglet URLPaths; 40 such cancels since left every slot free:
    tests/test_coglet_inputs.py, ``test_cancels_as_predictions_start_*``).
    coglet passes anything else through untouched, so the download and the clean-up are this
    module's: the wrapper downloads, and deletes the files once the prediction's result is
    done with (see ``_Downloads.release_after``).
    """

    source: str
    filename: str

    @classmethod
    def of(cls, source: str) -> PendingFile:
        filename = cog.types.get_filename(source)
        pending = cls(filename)
        pending.source, pending.filename = source, filename
        return pending

    def __fspath__(self) -> str:  # never opened as the relative path of its file name
        raise RuntimeError(
            f"{self!r} was not downloaded: coglet_inputs.install(predictor) wraps the "
            f"predictor that receives it"
        )

    def __repr__(self) -> str:
        return f"PendingFile({_redacted(self.source)!r})"


def install(
    predictor: object,
    *,
    allow_local_paths: bool = False,
    max_bytes: int | None = None,
) -> None:
    """Guard and download ``predictor``'s file inputs (see the module docstring).

    ``predictor`` is the instance whose ``run()`` (else ``predict()``) coglet calls: pass
    ``self`` from ``setup()``. ``max_bytes`` bounds each file input (a larger one fails its
    prediction, and its partial file is deleted); None: no bound beyond the disk.

    Idempotent per instance; the ``Path.validate`` patch is installed once per process.
    """
    global _original_validate
    with _lock:
        if _original_validate is None:
            _original_validate = cog.types.Path.__dict__["validate"]
            cog.types.Path.validate = classmethod(_validate)  # type: ignore[assignment,method-assign]
    name = "run" if callable(getattr(type(predictor), "run", None)) else "predict"
    method = getattr(predictor, name)
    if getattr(method, "__coglet_inputs__", False) or not _file_params(method):
        return  # wrapped already, or no file inputs: nothing to check
    guarded = _guard(method, allow_local_paths=allow_local_paths, max_bytes=max_bytes)
    setattr(predictor, name, guarded)


def uninstall() -> bool:
    """Restore ``cog.types.Path.validate``; True if it was patched. For tests.

    Instances that :func:`install` wrapped keep their wrapper, which then lets every input
    through unchecked, as coglet hands it over (install() again to guard them).
    """
    global _original_validate
    with _lock:
        if _original_validate is None:
            return False
        cog.types.Path.validate = _original_validate  # type: ignore[method-assign]
        _original_validate = None
        return True


def installed() -> bool:
    """Whether :func:`install` has patched ``cog.types.Path.validate`` in this process."""
    return _original_validate is not None


def _validate(cls: type, value: Any) -> Any:
    """``cog.types.Path.validate`` under :func:`install`: URLs become pending, not downloaded."""
    if isinstance(value, str) and value.startswith(_URL_PREFIXES):
        return PendingFile.of(value)
    return _original_validate.__func__(cls, value)


# ── the wrapper ────────────────────────────────────────────────────────────────────────────────


def _file_params(fn: Callable[..., Any]) -> frozenset[str]:
    """The parameters of ``fn`` annotated ``cog.Path`` / ``cog.File``, alone, in a list, or
    optional — the ones coglet coerces (``classify_fields`` in input.rs)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: coglet then coerces nothing either
        return frozenset()

    def is_file(tp: Any) -> bool:
        if tp in (cog.types.Path, cog.types.File):
            return True
        origin = typing.get_origin(tp)
        if origin is list:
            return any(is_file(arg) for arg in typing.get_args(tp)[:1])
        if origin in (typing.Union, types.UnionType):
            return any(is_file(arg) for arg in typing.get_args(tp) if arg is not type(None))
        return False

    return frozenset(name for name, tp in hints.items() if name != "return" and is_file(tp))


class _Downloads:
    """One prediction's file inputs: checked, then downloaded in the caller's thread.

    ``stop`` is set by the async wrapper when the prediction is cancelled (the download then
    ends at its next read); a sync ``run()`` is cancelled by coglet raising in its thread, which
    unwinds the same ``try``. Either way every file this prediction downloaded is deleted.
    """

    def __init__(self, params: frozenset[str], *, allow_local: bool, max_bytes: int | None) -> None:
        self.params, self.allow_local, self.max_bytes = params, allow_local, max_bytes
        self.stop = threading.Event()
        self.local: dict[int, cog.types.Path] = {}  # id(PendingFile) -> its downloaded file
        self.made: list[pathlib.Path] = []  # every file this prediction downloaded
        self.lines: list[str] = []
        self.seconds = 0.0
        self.bytes = 0

    def check(self, kwargs: dict[str, Any]) -> list[tuple[str, PendingFile]]:
        """Refuse server paths (before anything is read); the pending files, by input name."""
        pending: list[tuple[str, PendingFile]] = []
        if not installed():  # uninstall()ed (in-process tests): coglet's inputs as they are
            return pending
        for name in self.params & kwargs.keys():
            value = kwargs[name]
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, PendingFile):
                    pending.append((name, item))
                elif item is not None and not self.allow_local and not _received(item):
                    raise ServerPathError(
                        f"{name}: {_shown(item)} is not a file this server received: send the "
                        f"file itself, as a data: URI or an http(s):// URL (server paths are "
                        f"refused)"
                    )
        return pending

    def fetch(self, kwargs: dict[str, Any], pending: list[tuple[str, PendingFile]]) -> None:
        """Download every pending file; replace each in ``kwargs`` by a ``cog.Path`` to it."""
        started = time.perf_counter()
        try:
            for name, item in pending:
                self._fetch_one(name, item)
        except BaseException:
            self.discard()
            raise
        self.seconds = time.perf_counter() - started
        for name in {name for name, _ in pending}:
            value = kwargs[name]
            kwargs[name] = (
                [self._local(item) for item in value]
                if isinstance(value, list)
                else self._local(value)
            )

    def _local(self, item: Any) -> Any:
        """What the model receives for a downloaded input: a ``cog.Path`` to its file."""
        return self.local.get(id(item), item) if isinstance(item, PendingFile) else item

    def _fetch_one(self, name: str, item: PendingFile) -> None:
        remote = not item.source.startswith("data:")
        if remote:
            print(f"{name}: downloading {_redacted(item.source)}")
        started = time.perf_counter()
        if self.stop.is_set():
            raise asyncio.CancelledError(f"{name}: download cancelled")
        fd, tmp = tempfile.mkstemp(suffix=f"-{item.filename[-100:]}", prefix="cog-input-")
        self.made.append(pathlib.Path(tmp))
        self.local[id(item)] = cog.types.Path(tmp)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, _open(item.source) as source:
                # read1: what the socket has (up to CHUNK), so a cancel is seen between packets
                read = getattr(source, "read1", source.read)
                while chunk := read(CHUNK):
                    if self.stop.is_set():
                        raise asyncio.CancelledError(f"{name}: download cancelled")
                    size += len(chunk)
                    if self.max_bytes is not None and size > self.max_bytes:
                        raise DownloadError(
                            f"{name}: the file is larger than {self.max_bytes:,} bytes"
                        )
                    out.write(chunk)
        except (OSError, ValueError) as exc:  # urllib's URLError and HTTPError are OSErrors
            if isinstance(exc, DownloadError):
                raise
            raise DownloadError(f"{name}: could not read {_redacted(item.source)}: {exc}") from exc
        self.bytes += size
        if remote:
            seconds = time.perf_counter() - started
            print(f"{name}: downloaded {size:,} bytes in {seconds:.2f}s")

    def discard(self) -> None:
        """Delete every file this prediction downloaded (idempotent, any thread)."""
        while self.made:
            self.made.pop().unlink(missing_ok=True)

    def release_after(self, result: Any) -> Any:
        """Delete the files once ``result`` is done with: a stream (coglet iterates it after
        run() returned; a producer reads the files meanwhile) when it is freed, once coglet has
        finished with it; any other result at once."""
        if self.made:
            try:
                weakref.finalize(result, self.discard)
            except TypeError:  # no weak references (str, list, ...): nothing reads them later
                self.discard()
        return result

    def report(self) -> None:
        """The metrics, in the prediction's scope (a thread of coglet's, or its event loop)."""
        scope = cast(_Scope, cog.current_scope())
        scope.record_metric("input_download_time", self.seconds)
        scope.record_metric("input_bytes", self.bytes)


def _guard(
    method: Callable[..., Any], *, allow_local_paths: bool, max_bytes: int | None
) -> Callable[..., Any]:
    params = _file_params(method)

    def downloads() -> _Downloads:
        return _Downloads(params, allow_local=allow_local_paths, max_bytes=max_bytes)

    def prepare_sync(kwargs: dict[str, Any]) -> _Downloads:
        job = downloads()
        pending = job.check(kwargs)
        if not pending:
            return job
        # On a thread of its own: coglet cancels a sync run() by raising in its thread
        # (PyThreadState_SetAsyncExc, crates/coglet-python/src/cancel.rs), which takes effect
        # only between bytecodes, never inside a blocking read; this thread waits in slices.
        failure: list[BaseException] = []

        def fetch() -> None:
            try:
                job.fetch(kwargs, pending)
            except BaseException as exc:
                failure.append(exc)

        worker = threading.Thread(
            target=contextvars.copy_context().run, args=(fetch,), name="coglet-inputs"
        )
        worker.start()
        try:
            while worker.is_alive():
                worker.join(WAIT_SLICE)
        except BaseException:
            job.stop.set()  # the download stops at its next read and deletes its files;
            job.discard()  # those written so far go now (a read may wait for the network)
            raise
        if failure:
            raise failure[0]
        job.report()
        return job

    async def prepare_async(kwargs: dict[str, Any]) -> _Downloads:
        job = downloads()
        pending = job.check(kwargs)
        if not pending:
            return job
        # Off the event loop; to_thread copies the context (the prediction's log routing).
        task = asyncio.ensure_future(asyncio.to_thread(job.fetch, kwargs, pending))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            job.stop.set()  # the download thread stops at its next read and deletes its files;
            job.discard()  # those written so far go now (a read may wait for the network)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise
        job.report()
        return job

    wrapper: Callable[..., Any]
    if inspect.isasyncgenfunction(method):

        async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            job = await prepare_async(kwargs)
            try:
                inner = method(*args, **kwargs)
                try:
                    async for item in inner:
                        yield item
                finally:
                    await inner.aclose()
            finally:
                job.discard()

        wrapper = agen_wrapper
    elif inspect.iscoroutinefunction(method):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            job = await prepare_async(kwargs)
            try:
                result = await method(*args, **kwargs)
            except BaseException:
                job.discard()
                raise
            return job.release_after(result)

        wrapper = async_wrapper
    else:

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            job = prepare_sync(kwargs)
            try:
                result = method(*args, **kwargs)
            except BaseException:
                job.discard()
                raise
            return job.release_after(result)

        wrapper = sync_wrapper
    functools.update_wrapper(wrapper, method)
    setattr(wrapper, "__coglet_inputs__", True)  # noqa: B010 (a marker for install())
    return wrapper


# ── helpers ────────────────────────────────────────────────────────────────────────────────────


def _open(source: str) -> Any:
    """A readable response for a data URI or an http(s) URL (urllib: both stream in chunks)."""
    return urllib.request.urlopen(source, timeout=TIMEOUT)  # schemes checked by the caller


def _received(item: object) -> bool:
    """Whether a file input that is not a :class:`PendingFile` is still one the server received.

    - A ``cog.File`` input coglet already turned into a readable object (never a path).
    - On cog <= 0.16's Python server (no coglet), a ``pathlib.Path``: that server validates
      file inputs in its parent process, where ``cog.types.Path.validate`` hands every string to
      ``File.validate``, which refuses all but data:, http: and https: (a server path gets 422),
      and downloads them there before run() is called (``cog/server/worker.py``,
      ``_start_prediction``); install() in the model's process cannot change either.
    """
    if hasattr(item, "read") and not isinstance(item, str | os.PathLike):
        return True
    return _LEGACY_SERVER and isinstance(item, pathlib.Path)


def _cog_version() -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in cog.__version__.split(".")[:2])
    except (AttributeError, ValueError):
        return (0, 0)


_LEGACY_SERVER = _cog_version() < (0, 17)  # cog's Python server, before coglet


def _redacted(url: str) -> str:
    """A URL without its query and credentials (signed URLs carry tokens there); a data URI's
    media type only."""
    if url.startswith("data:"):
        return url[: min(len(url), url.find(",") + 1 or 40, 60)] + "…"
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"[:200]


def _shown(value: object) -> str:
    text = repr(str(value))
    return text if len(text) <= 80 else f"{text[:77]}…'"
