"""prediction_files.PredictionFiles, without a server: when its files go (another process reads)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import wait_until

import prediction_files
from prediction_files import PredictionFiles, inotify_available

pytestmark = pytest.mark.timeout(30)

needs_inotify = pytest.mark.skipif(not inotify_available(), reason="needs Linux inotify")


def read_in_another_process(path: str) -> bytes:
    """What coglet's parent does with a yielded path: open, read, close (std::fs::read)."""
    code = "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())"
    return subprocess.run(
        [sys.executable, "-c", code, path], capture_output=True, check=True, timeout=20
    ).stdout


@needs_inotify
def test_a_sent_file_goes_once_read_and_the_directory_with_it(tmp_path: Path) -> None:
    with PredictionFiles(tmp_path) as files:
        path = files.path("a.png")
        path.write_bytes(b"image")
        out = files.output(path)
        assert read_in_another_process(str(path)) == b"image"  # read before it was sent
        assert path.exists()  # ... is not coglet's read: kept
        sent = os.fspath(out)  # what coglet does when it takes the item
        assert sent == str(path)
        assert read_in_another_process(sent) == b"image"
        wait_until(lambda: not path.exists(), timeout=5, what="the read file to be deleted")
        assert files.directory.exists()  # still in use
    wait_until(lambda: not files.directory.exists(), timeout=5, what="the directory to go")


@needs_inotify
def test_a_read_before_the_send_handled_late_is_not_taken_for_coglets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A loaded machine: the watcher thread handles the close events only after the send. Its
    # place is taken here by a watcher without a thread, whose events the test hands out.
    late = prediction_files._Watcher(start=False)
    monkeypatch.setattr(prediction_files, "_the_watcher", late)
    with PredictionFiles(tmp_path) as files:
        path = files.path("a.png")
        path.write_bytes(b"image")
        out = files.output(path)
        assert read_in_another_process(str(path)) == b"image"  # its close event is queued
        sent = os.fspath(out)
        late.drain()  # the thread, late: the event of the read before the send
        assert path.exists(), "a read before the send was taken for coglet's"
        assert read_in_another_process(sent) == b"image"  # coglet's read
        late.drain()
        assert not path.exists()
    assert not files.directory.exists()


@needs_inotify
def test_an_output_still_unread_when_the_block_ends_stays_until_read(tmp_path: Path) -> None:
    with PredictionFiles(tmp_path) as files:
        path = files.path("final.png")
        path.write_bytes(b"final")
        out = files.output(path)
        files.path("scratch.bin").write_bytes(b"tmp")  # never handed to coglet
    assert not (files.directory / "scratch.bin").exists()  # gone with the block
    assert path.exists()  # not read yet: coglet still needs it
    assert read_in_another_process(os.fspath(out)) == b"final"
    wait_until(lambda: not files.directory.exists(), timeout=5, what="the directory to go")
    assert files.pending == 0


def test_an_output_dropped_without_being_sent_is_deleted(tmp_path: Path) -> None:
    files = PredictionFiles(tmp_path)
    path = files.path("never-sent.png")
    path.write_bytes(b"x")
    queue = [files.output(path)]  # e.g. left in a cancelled stream's queue
    files.close()
    assert path.exists()
    queue.clear()
    gc.collect()
    wait_until(
        lambda: not path.exists() and not files.directory.exists(),
        timeout=5,
        what="the dropped output and the directory to go",
    )


def test_a_collection_while_its_thread_holds_the_lock_does_not_deadlock(tmp_path: Path) -> None:
    """An OutputPath in a reference cycle (a future's done callback refers back to it, say) is
    freed by the cyclic collector, which runs its finalizer in whichever thread allocated at
    that moment: here, one holding the directory's lock (close() allocates under it)."""
    files = PredictionFiles(tmp_path)
    path = files.path("in-a-cycle.wav")
    path.write_bytes(b"x")
    cycle: list[object] = [files.output(path)]
    cycle.append(cycle)  # only the cyclic collector frees it
    del cycle
    done = threading.Event()

    def collect_holding_the_lock() -> None:
        with files._lock:
            gc.collect()
        done.set()

    threading.Thread(target=collect_holding_the_lock, daemon=True).start()
    assert done.wait(10), "the finalizer waits for the lock its own thread holds"
    wait_until(lambda: not path.exists(), timeout=5, what="the dropped output to be deleted")
    files.close()
    wait_until(lambda: not files.directory.exists(), timeout=5, what="the directory to go")


def test_discard_deletes_an_unsent_output_at_once_and_ignores_anything_else(
    tmp_path: Path,
) -> None:
    with PredictionFiles(tmp_path) as files, PredictionFiles(tmp_path) as other:
        path = files.path("dropped.wav")
        path.write_bytes(b"x")
        kept = files.output(path)  # still referenced: the GC would not delete it
        other.discard(kept)  # another directory's: ignored
        files.discard("not an output")
        assert path.exists()
        files.discard(kept)
        assert not path.exists()
        assert files.pending == 0
        sent_path = files.path("sent.wav")
        sent_path.write_bytes(b"y")
        sent = files.output(sent_path)
        os.fspath(sent)  # taken by coglet: it will read it
        files.discard(sent)
        assert sent_path.exists()
        del kept
        if inotify_available():  # coglet's read, which deletes it
            assert read_in_another_process(os.fspath(sent)) == b"y"
            wait_until(lambda: not sent_path.exists(), timeout=5, what="the read file to go")


def test_names_and_paths_are_checked(tmp_path: Path) -> None:
    with PredictionFiles(tmp_path) as files:
        for bad in ("", ".", "..", "a/b", "/etc/passwd"):
            with pytest.raises(ValueError, match="plain file name"):
                files.path(bad)
        outside = tmp_path / "outside.png"
        outside.write_bytes(b"x")
        with pytest.raises(ValueError, match="is not in"):
            files.output(outside)
        with pytest.raises(FileNotFoundError):
            files.output(files.path("missing.png"))
        path = files.path("once.png")
        path.write_bytes(b"x")
        kept = files.output(path)
        with pytest.raises(ValueError, match="already handed"):
            files.output(path)
        del kept
    gc.collect()
    wait_until(lambda: not files.directory.exists(), timeout=5, what="the directory to go")


def test_each_prediction_gets_its_own_directory_under_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREDICTION_FILES_DIR", str(tmp_path / "root"))
    with PredictionFiles() as one, PredictionFiles() as two:
        assert one.directory.parent == two.directory.parent == tmp_path / "root"
        assert one.directory != two.directory
    assert list((tmp_path / "root").iterdir()) == []
