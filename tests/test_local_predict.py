"""scripts/local_predict.py (`make predict`): how file outputs are named and where they go."""

from __future__ import annotations

import base64
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cog_server import REPO_ROOT
from local_predict import OUTPUT_DIR, default_output_dir, file_extension, save_file_output

# Every media type a model commonly outputs, and the extension its file gets.
NAMES = {
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/mpeg": ".mp3",
    "audio/flac": ".flac",
    "audio/ogg": ".ogg",
    "video/mp4": ".mp4",
    "image/webp": ".webp",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "application/json": ".json",
    "text/plain": ".txt",
}


@pytest.mark.parametrize(("media_type", "ext"), NAMES.items(), ids=NAMES.keys())
def test_a_data_uri_is_saved_with_the_extension_of_its_media_type(
    tmp_path: Path, media_type: str, ext: str
) -> None:
    content = f"the bytes of a {media_type} file".encode()
    uri = f"data:{media_type};base64,{base64.b64encode(content).decode()}"
    saved = save_file_output(uri, 3, tmp_path)
    assert saved == tmp_path / f"output.3{ext}"
    assert saved.read_bytes() == content


def test_media_type_parameters_and_case_do_not_change_the_extension() -> None:
    assert file_extension("text/plain; charset=utf-8") == ".txt"
    assert file_extension("Audio/WAV") == ".wav"


def test_an_unknown_media_type_falls_back_to_mimetypes_then_the_name_then_bin() -> None:
    assert file_extension("image/gif") == ".gif"
    assert file_extension("application/pdf") == ".pdf"  # not in the table: mimetypes knows it
    assert file_extension("application/x-made-up", "/files/result.npz") == ".npz"
    assert file_extension("application/octet-stream", "/files/result.npz") == ".npz"
    assert file_extension("application/x-made-up", "/files/result") == ".bin"
    assert file_extension("application/octet-stream") == ".bin"
    assert file_extension("") == ".bin"


def test_text_that_is_not_a_file_is_not_saved(tmp_path: Path) -> None:
    assert save_file_output("def f():", 0, tmp_path) is None
    assert save_file_output({"chunk": 1}, 0, tmp_path) is None
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def file_server() -> Iterator[str]:
    """Serves GET /files/<name>?type=<media type> with that Content-Type, as an upload URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path, _, query = self.path.partition("?type=")
            body = f"GET {path}".encode()
            self.send_response(200)
            self.send_header("Content-Type", query.replace("%2F", "/"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_an_uploaded_file_takes_its_extension_from_its_content_type(
    tmp_path: Path, file_server: str
) -> None:
    saved = save_file_output(f"{file_server}/files/a1b2c3?type=audio%2Fwav", 0, tmp_path)
    assert saved == tmp_path / "output.0.wav"
    assert saved.read_bytes() == b"GET /files/a1b2c3"
    # Content-Type wins over the URL's suffix; with none that says more, the suffix is kept.
    saved = save_file_output(f"{file_server}/files/x.png?type=image%2Fwebp", 1, tmp_path)
    assert saved == tmp_path / "output.1.webp"
    saved = save_file_output(f"{file_server}/files/x.npz?type=", 2, tmp_path)
    assert saved == tmp_path / "output.2.npz"


def test_outputs_go_to_a_git_ignored_folder_unless_output_dir_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OUTPUT_DIR", raising=False)
    assert default_output_dir() == OUTPUT_DIR == REPO_ROOT / "outputs"
    monkeypatch.setenv("OUTPUT_DIR", "elsewhere")
    assert default_output_dir() == Path("elsewhere")
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "outputs/output.0.png"], cwd=REPO_ROOT, check=False
    )
    assert ignored.returncode == 0, "outputs/ is not in .gitignore"
