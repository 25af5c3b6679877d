"""A place for each prediction's output files, removed once coglet has read them (coglet 0.23).

Use it in the code that makes the files (the bridge's producer thread, for a streamed model)::

    with PredictionFiles() as files:               # a new directory for this prediction
        path = files.path("preview-5.png")         # write the file there
        write_png(path, image)
        emit(files.output(path))                   # hand it to coglet: yield or emit this

and annotate ``run()`` as ``-> Iterator[Path]``. Every file is gone from disk once coglet no
longer needs it, however the prediction ends (succeeded, failed, canceled, client gone), with
an upload URL (Replicate) or without one (local runs: data URIs); the directory goes with its
last file after the ``with`` block has ended.

Why not simply delete a file once the generator has moved past it, or when the prediction's
code returns? Because coglet has not read it yet then. What coglet does with a yielded path, read
in replicate/cog at 6110c91 (0.22.0; the 0.23.1 wheel behaves the same on this path:
tests/examples/test_image_example.py):

- ``send_output_item`` (``crates/coglet-python/src/predictor.rs``), called in the worker's slot
  thread for each item it takes from the generator, calls ``__fspath__()`` on an ``os.PathLike``
  item and sends only that path to coglet's parent process (``SlotSender.send_file_output`` in
  ``crates/coglet/src/worker.rs``) — over a queue, so the generator runs on at once.
- The parent reads the file when its event loop handles that message, later
  (``crates/coglet/src/orchestrator.rs``, the ``SlotResponse::FileOutput`` arm:
  ``std::fs::read(&filename)``; a file it cannot read is logged, "Failed to read FileOutput", and
  the output is lost). Only then does it upload the bytes it read (``upload_file``, in a spawned
  task kept in ``pending_uploads``: awaited before the prediction succeeds, aborted on failure or
  cancel) or inline them as a ``data:`` URI. After that read the file is never opened again —
  uploads and data URIs use the bytes in memory.
- A yielded file object (``io.IOBase``) is copied by the worker into coglet's own
  ``/tmp/coglet/predictions/<id>/outputs/`` (``SlotSender.write_file_output``, worker.rs), which
  coglet never deletes (``crates/coglet/src/service.rs`` creates it; nothing removes it): the
  pile-up would only move there. So outputs are yielded as paths.

Nothing tells the worker process when the parent has read a file, but the file system does: the
parent's read (open, read, close) raises an ``IN_CLOSE_NOWRITE`` inotify event on the file's
directory. This module watches each prediction's directory (one watcher thread per process) and
deletes an output file at that event, once the file has been handed to coglet. The object that
:meth:`PredictionFiles.output` returns marks that moment: coglet calls its ``__fspath__`` as it
sends the path. One that is dropped without having been sent — left in a cancelled stream's
queue — deletes its file when it is garbage-collected (its finalizer hands the deletion to the
watcher thread, which does it within milliseconds: a finalizer runs wherever the collector does,
so it takes no lock), or at once when passed to :meth:`PredictionFiles.discard` (an ordered
stage's ``discard`` hook). Files written in the directory but never passed to ``output()`` are
deleted when the ``with`` block ends.

Limits:

- Hand each file to coglet once, and do not call ``os.fspath()`` on what ``output()`` returns or
  open the file for reading yourself after that: either can make the helper take your read for
  coglet's. Write files with their final name (not write-then-rename within the directory).
- A file sent but not read within ``READ_TIMEOUT`` seconds (coglet's parent died, or the inotify
  event queue overflowed) is deleted then, with a warning. Without inotify (not Linux) a sent
  file is deleted ``READ_TIMEOUT`` seconds after it was sent: coglet reads it within
  milliseconds, but that is then a delay, not an observation.
- Files of a worker that is killed stay behind; coglet restarts none of its workers' files either.

Where: ``$PREDICTION_FILES_DIR`` if set, else ``<tempdir>/cog-prediction-files``; one
``prediction-*`` directory per :class:`PredictionFiles`. This module imports neither cog nor
the model: only the standard library.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import queue
import select
import shutil
import struct
import tempfile
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType

__all__ = ["READ_TIMEOUT", "OutputPath", "PredictionFiles", "files_root", "inotify_available"]

READ_TIMEOUT = 120.0
"""Seconds a file handed to coglet may wait for coglet's read before it is deleted anyway."""

_log = logging.getLogger(__name__)

_IN_CLOSE_NOWRITE = 0x00000010
_IN_Q_OVERFLOW = 0x00004000
_IN_ONLYDIR = 0x01000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name


def files_root() -> Path:
    """The directory that holds every prediction's directory (created on first use)."""
    configured = os.environ.get("PREDICTION_FILES_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "cog-prediction-files"


class OutputPath(os.PathLike[str]):
    """A file handed to coglet: yield it (``-> Iterator[Path]``); coglet sends its path.

    Its ``__fspath__`` is what coglet calls when it takes the item (``send_output_item``), so
    the file counts as sent from then on and is deleted after coglet's read.
    """

    __slots__ = ("_files", "_name", "_path")

    def __init__(self, files: PredictionFiles, name: str) -> None:
        self._files = files
        self._name = name
        self._path = str(files.directory / name)
        weakref.finalize(self, _watcher().dropped, files, name)

    def __fspath__(self) -> str:
        self._files._sent(self._name)
        return self._path

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"OutputPath({self._path!r})"


class PredictionFiles:
    """One prediction's directory of output files; see the module docstring.

    Thread-safe. Create it in the prediction's code (any thread), use it as a context manager
    around the code that writes the files.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        base = Path(root) if root is not None else files_root()
        base.mkdir(parents=True, exist_ok=True)
        self.directory = Path(tempfile.mkdtemp(prefix="prediction-", dir=base))
        self._lock = threading.Lock()
        self._outputs: dict[str, float | None] = {}  # name -> when sent (None: not yet)
        self._closed = False
        self._watch: _Watch | None = _watcher().watch(self)

    def path(self, name: str) -> Path:
        """Where to write the file ``name`` (a plain file name, no directories)."""
        if not name or Path(name).name != name or name in {".", ".."}:
            raise ValueError(f"not a plain file name: {name!r}")
        return self.directory / name

    def output(self, path: str | os.PathLike[str]) -> OutputPath:
        """Hand a file of this directory to coglet: yield (or emit) what this returns."""
        file = Path(path)
        if file.parent != self.directory:
            raise ValueError(f"{file} is not in {self.directory}")
        if not file.is_file():
            raise FileNotFoundError(errno.ENOENT, "no such output file", str(file))
        with self._lock:
            if file.name in self._outputs:
                raise ValueError(f"{file.name} was already handed to coglet")
            self._outputs[file.name] = None
        return OutputPath(self, file.name)

    def discard(self, item: object) -> None:
        """``item`` will never be sent: if it is an unsent output of this directory, delete its
        file now; anything else is ignored (a file already sent waits for coglet's read).

        Pass it where results can be dropped before they reach coglet: an ordered stage's
        ``discard`` (``OrderedStage(emit, pool, max_pending=8, discard=files.discard)``).
        Without it such a file goes when its :class:`OutputPath` is garbage-collected.
        """
        if isinstance(item, OutputPath) and item._files is self:
            self._dropped(item.name)

    def close(self) -> None:
        """The prediction's code is done with the directory (the ``with`` block's end).

        Deletes the files never passed to :meth:`output`; the directory goes with the last output.
        """
        with self._lock:
            if self._closed:
                return
            keep = set(self._outputs)
        # Not closed yet, so the directory stays while it is scanned (the watcher removes it
        # only once closed and empty).
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name not in keep:
                    _remove(Path(entry.path))
        with self._lock:
            self._closed = True
        self._remove_directory_if_done()

    def __enter__(self) -> PredictionFiles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Outputs not yet deleted (handed to coglet, or waiting to be)."""
        with self._lock:
            return len(self._outputs)

    # ── called by OutputPath and the watcher ─────────────────────────────────────────────────

    def _sent(self, name: str) -> None:
        # A read of the file before this moment (the model's own, a check's) raised its close
        # event already; the watcher thread may not have handled it yet (a loaded machine). Take
        # the events queued so far first, while the file is still unsent: only a close after
        # this one counts as coglet's read.
        _watcher().drain()
        with self._lock:
            if name in self._outputs and self._outputs[name] is None:
                self._outputs[name] = time.monotonic()

    def _dropped(self, name: str) -> None:
        """An output will never be sent (discarded, or its OutputPath garbage-collected): if it
        was not sent, coglet will never read it. Never called from a finalizer (it blocks)."""
        with self._lock:
            if name not in self._outputs or self._outputs[name] is not None:
                return
            del self._outputs[name]
        _remove(self.directory / name)
        self._remove_directory_if_done()

    def _read(self, name: str) -> None:
        """Someone closed ``name`` after reading it: coglet's parent, if it was sent."""
        with self._lock:
            if self._outputs.get(name) is None:
                return
            del self._outputs[name]
        _remove(self.directory / name)
        self._remove_directory_if_done()

    def _expire(self, now: float, timeout: float) -> None:
        """Delete sent files that waited for their read longer than ``timeout``."""
        with self._lock:
            late = [n for n, t in self._outputs.items() if t is not None and now - t >= timeout]
            for name in late:
                del self._outputs[name]
        for name in late:
            if _watcher().inotify:
                _log.warning(
                    "%s: not read by coglet %.0fs after it was sent; deleted", name, timeout
                )
            _remove(self.directory / name)
        if late:
            self._remove_directory_if_done()

    def _remove_directory_if_done(self) -> None:
        with self._lock:
            if not self._closed or self._outputs or self._watch is None:
                return
            watch, self._watch = self._watch, None
        _watcher().unwatch(watch)
        shutil.rmtree(self.directory, ignore_errors=True)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        _log.exception("could not delete %s", path)


class _Watch:
    __slots__ = ("files", "wd")

    def __init__(self, files: PredictionFiles, wd: int) -> None:
        self.files = files
        self.wd = wd


class _Watcher:
    """One thread per process: inotify events of every prediction directory, and timeouts.

    Events are taken from the inotify descriptor and handled under one lock (``drain``), by
    this thread or by a thread marking a file sent: so an event is handled in the order the
    kernel queued it relative to a send.
    """

    def __init__(self, *, start: bool = True) -> None:
        self._lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._watches: dict[int, _Watch] = {}
        # OutputPaths collected unsent, queued by their finalizers for this thread; the pipe
        # wakes it. A finalizer runs wherever the garbage collector does — possibly in a thread
        # that holds one of the locks deleting the file takes — so it only queues.
        self._drops: queue.SimpleQueue[tuple[PredictionFiles, str]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._next_key = -1  # keys for directories watched without inotify
        self._libc: ctypes.CDLL | None = None
        self.inotify = False
        self._fd = -1
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
            if fd >= 0:
                self._libc, self._fd, self.inotify = libc, fd, True
        except (OSError, AttributeError):
            pass
        self._thread = threading.Thread(target=self._run, name="prediction-files", daemon=True)
        if start:  # not started: a test hands out events itself (``drain``), as a late thread
            self._thread.start()

    def watch(self, files: PredictionFiles) -> _Watch:
        with self._lock:
            if self._libc is not None:
                wd = int(
                    self._libc.inotify_add_watch(
                        self._fd, os.fsencode(files.directory), _IN_CLOSE_NOWRITE | _IN_ONLYDIR
                    )
                )
                if wd < 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"inotify_add_watch: {os.strerror(err)}", files.directory)
            else:
                wd, self._next_key = self._next_key, self._next_key - 1
            watch = _Watch(files, wd)
            self._watches[wd] = watch
            return watch

    def unwatch(self, watch: _Watch | None) -> None:
        if watch is None:
            return
        with self._lock:
            if self._watches.get(watch.wd) is watch:
                del self._watches[watch.wd]
            # removing the directory ends its inotify watch (the kernel sends IN_IGNORED)

    def dropped(self, files: PredictionFiles, name: str) -> None:
        """An OutputPath's finalizer (any thread, any moment): queue its file for deletion.

        Takes no lock (``SimpleQueue.put`` and a pipe write are safe in a finalizer), so a
        collection that runs while its thread holds a lock of this module cannot deadlock.
        """
        self._drops.put((files, name))
        with contextlib.suppress(OSError):  # a full pipe: a wake-up is pending anyway
            os.write(self._wake_w, b"\0")

    def _take_drops(self) -> None:
        while True:
            try:
                files, name = self._drops.get_nowait()
            except queue.Empty:
                return
            files._dropped(name)

    def _run(self) -> None:
        while True:
            try:
                watched = [self._wake_r] + ([self._fd] if self._fd >= 0 else [])
                ready, _, _ = select.select(watched, [], [], 1.0)
                if self._wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wake_r, 4096):
                            pass
                self._take_drops()
                if self._fd in ready:
                    self.drain()
                with self._lock:
                    watches = list(self._watches.values())
                now = time.monotonic()
                for watch in watches:
                    watch.files._expire(now, READ_TIMEOUT)
            except Exception:  # keep watching whatever one event did
                _log.exception("prediction files watcher")

    def drain(self) -> None:
        """Handle every inotify event queued so far (any thread; returns at once without)."""
        if self._fd < 0:
            return
        with self._events_lock:
            while True:
                try:
                    data = os.read(self._fd, 65536)
                except BlockingIOError:
                    return
                self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
            offset += _EVENT.size + length
            if mask & _IN_Q_OVERFLOW:
                _log.warning("inotify queue overflow: unread files wait for READ_TIMEOUT")
                continue
            if not mask & _IN_CLOSE_NOWRITE or not raw:
                continue
            with self._lock:
                watch = self._watches.get(wd)
            if watch is not None:
                watch.files._read(os.fsdecode(raw.rstrip(b"\0")))


_watcher_lock = threading.Lock()
_the_watcher: _Watcher | None = None


def _watcher() -> _Watcher:
    global _the_watcher
    if _the_watcher is None:
        with _watcher_lock:
            if _the_watcher is None:
                _the_watcher = _Watcher()
    return _the_watcher


def inotify_available() -> bool:
    """Whether deletions follow coglet's reads (Linux), not only ``READ_TIMEOUT``."""
    return _watcher().inotify
