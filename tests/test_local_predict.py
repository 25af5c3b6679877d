"""scripts/local_predict.py (`make predict`): how inputs are read and echoed, how outputs are
printed, how file outputs are named and where they go; on the real server, predictors that stream
and predictors that return one value (tests/predictors/vectors_probe.py)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import local_predict
import pytest
from cog_server import REPO_ROOT, CogServer
from conftest import CogServers
from hypothesis import given
from hypothesis import strategies as st
from local_predict import (
    OUTPUT_DIR,
    InputError,
    Printer,
    default_output_dir,
    file_extension,
    new_run_dir,
    parse_inputs,
    save_file_output,
    shorten,
    split_inputs,
    streams,
)

pytestmark = pytest.mark.timeout(60)

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


# ── where files go ────────────────────────────────────────────────────────────────────────────


def test_each_run_gets_a_new_git_ignored_folder_unless_output_dir_is_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OUTPUT_DIR", raising=False)
    assert default_output_dir() is None  # a folder per run under outputs/
    assert REPO_ROOT / "outputs" == OUTPUT_DIR
    monkeypatch.setenv("OUTPUT_DIR", "elsewhere")
    assert default_output_dir() == Path("elsewhere")  # straight into it

    now = time.time()
    first, second = new_run_dir(tmp_path, now=now), new_run_dir(tmp_path, now=now)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    assert (first.name, second.name) == (stamp, f"{stamp}-2")  # two runs in one second
    assert list(first.iterdir()) == list(second.iterdir()) == []

    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", f"outputs/{stamp}/output.0.png"], cwd=REPO_ROOT, check=False
    )
    assert ignored.returncode == 0, "outputs/ is not in .gitignore"


def data_uri(media_type: str, content: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(content).decode()}"


def test_runs_never_mix_their_files_and_a_run_without_files_makes_no_folder(
    tmp_path: Path,
) -> None:
    out = io.StringIO()
    big = Printer(None, base=tmp_path, out=out)
    for i in range(32):
        big.item(data_uri("image/jpeg", f"frame {i}".encode()))
    small = Printer(None, base=tmp_path, out=out)
    for i in range(8):
        small.item(data_uri("image/jpeg", f"frame {i}".encode()))
    text_only = Printer(None, base=tmp_path, out=out)
    text_only.item("just text")

    first, second = sorted(tmp_path.iterdir())
    assert big.directory() == first
    assert small.directory() == second
    assert len(list(first.iterdir())) == 32
    assert sorted(p.name for p in second.iterdir()) == [f"output.{i}.jpg" for i in range(8)]
    assert (second / "output.7.jpg").read_bytes() == b"frame 7"
    assert f"wrote {second}/output.7.jpg (7 bytes)" in out.getvalue()

    given = tmp_path / "given"
    Printer(given, base=tmp_path, out=out).item(data_uri("image/png", b"png"))
    assert [p.name for p in given.iterdir()] == ["output.0.png"]  # OUTPUT_DIR: used as is


# ── how outputs are printed ───────────────────────────────────────────────────────────────────


def test_a_text_stream_is_printed_as_it_comes_and_objects_one_json_line_each(
    tmp_path: Path,
) -> None:
    out = io.StringIO()
    printer = Printer(None, base=tmp_path, out=out)
    for chunk in ["def f(", "):\n", "    return 1"]:
        printer.item(chunk)
    printer.item({"index": 0, "text": "caption 0", "score": 0.5})
    printer.item({"index": 1, "text": "caption 1", "file": data_uri("text/plain", b"one")})
    printer.item([0.1, 0.2])
    printer.end_line()
    lines = out.getvalue().splitlines()
    (run_dir,) = tmp_path.iterdir()
    saved = str(run_dir / "output.0.txt")
    assert lines == [
        "def f():",
        "    return 1",
        '{"index": 0, "text": "caption 0", "score": 0.5}',
        f"wrote {saved} (3 bytes)",
        json.dumps({"index": 1, "text": "caption 1", "file": saved}),  # the file by its path
        "[0.1, 0.2]",
    ]
    assert Path(saved).read_bytes() == b"one"


@pytest.mark.parametrize(
    ("output", "printed"),
    [
        ([0.3, 0.4, 0.5], ["[0.3, 0.4, 0.5]"]),  # -> list[float]: one line
        (["a", "b c"], ['["a", "b c"]']),  # -> list[str]
        ("you said: hi", ["you said: hi"]),  # -> str: as text
        ({"index": 3, "text": "é"}, ['{"index": 3, "text": "é"}']),  # -> SomeBaseModel
        ([{"i": 0}, {"i": 1}], ['{"i": 0}', '{"i": 1}']),  # -> list[SomeBaseModel]
        ([[1, 2], [3]], ["[1, 2]", "[3]"]),  # -> list[list[float]]: one vector a line
        (7, ["7"]),
        (None, []),
    ],
)
def test_a_single_result_is_printed_whole_one_json_line_per_object(
    tmp_path: Path, output: Any, printed: list[str]
) -> None:
    out = io.StringIO()
    Printer(None, base=tmp_path, out=out).result(output)
    assert out.getvalue().splitlines() == printed
    assert list(tmp_path.iterdir()) == []


def test_a_result_of_files_saves_each_in_order(tmp_path: Path) -> None:
    out = io.StringIO()
    printer = Printer(tmp_path, out=out)
    printer.result([data_uri("image/png", b"a"), data_uri("audio/wav", b"bb")])
    assert out.getvalue().splitlines() == [
        f"wrote {tmp_path}/output.0.png (1 bytes)",
        f"wrote {tmp_path}/output.1.wav (2 bytes)",
    ]
    printer.result(data_uri("image/png", b"ccc"))  # -> Path
    assert (tmp_path / "output.2.png").read_bytes() == b"ccc"


# ── inputs ────────────────────────────────────────────────────────────────────────────────────


def test_inputs_split_as_a_shell_would_but_json_values_stay_whole() -> None:
    assert split_inputs("""prompt="class Stack:" seed=7 x='a "b"' y=a\\ b""") == [
        "prompt=class Stack:",
        "seed=7",
        'x=a "b"',
        "y=a b",
    ]
    assert split_inputs('images=["data:a,b", "https://x/y z"] tags=[1, 2] o={"k": "v w"}') == [
        'images=["data:a,b", "https://x/y z"]',
        "tags=[1, 2]",
        'o={"k": "v w"}',
    ]
    # Not JSON: shell rules, as before.
    assert split_inputs("prompt=[INST] seed=1") == ["prompt=[INST]", "seed=1"]
    assert split_inputs('prompt="[a b]"') == ["prompt=[a b]"]
    # Empty: left out (seed=) or an empty string (label="").
    assert split_inputs("seed= label=\"\" other=''") == ["seed=", 'label=""', 'other=""']
    assert split_inputs("") == []
    with pytest.raises(ValueError, match="No closing quotation"):
        split_inputs('prompt="open')


def _shlex_or_error(text: str) -> list[str] | str:
    try:
        return shlex.split(text)
    except ValueError:
        return "ValueError"  # an unclosed quote, a backslash at the end


@given(st.text(alphabet="ab=é \t\n'\"\\", max_size=30))
def test_without_json_values_inputs_split_exactly_as_shlex_splits_them(text: str) -> None:
    try:
        words: list[str] | str = split_inputs(text)
    except ValueError:
        words = "ValueError"
    expected = _shlex_or_error(text)

    def empty(words: list[str] | str) -> list[str] | str:
        # The one difference: a quoted empty value (a="") stays a="" where shlex gives a=.
        if isinstance(words, str):
            return words
        return [w.removesuffix('""') if w.endswith('=""') else w for w in words]

    assert empty(words) == empty(expected)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@given(st.lists(json_values, max_size=4), st.dictionaries(st.text(max_size=4), json_values))
def test_a_json_array_or_object_value_stays_one_value(
    array: list[Any], obj: dict[str, Any]
) -> None:
    text = f"a={json.dumps(array)}  b={json.dumps(obj, ensure_ascii=False)} c='d e'"
    words = split_inputs(text)
    assert [w.partition("=")[0] for w in words] == ["a", "b", "c"]
    assert json.loads(words[0][2:]) == array
    assert json.loads(words[1][2:]) == obj
    assert words[2] == "c=d e"


# The Input schema of tests/predictors/vectors_probe.py's Echo, as make schema writes it.
ECHO_SCHEMA: dict[str, Any] = {
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "required": ["images"],
                "properties": {
                    "images": {"type": "array", "items": {"type": "string", "format": "uri"}},
                    "tags": {"type": "array", "items": {"type": "integer"}, "default": []},
                    "seed": {"type": "integer", "nullable": True, "default": None},
                    "label": {"type": "string", "default": "none"},
                    "audio": {"type": "string", "format": "uri"},
                },
            }
        }
    }
}


def test_files_lists_and_empty_values_become_the_input_a_list_input_takes(
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.txt"
    a.write_bytes(b"\x89PNG a")
    b.write_text("b")
    uri_a, uri_b = data_uri("image/png", b"\x89PNG a"), data_uri("text/plain", b"b")

    def parse(text: str) -> dict[str, Any]:
        return parse_inputs(split_inputs(text), ECHO_SCHEMA)

    assert parse(f"images=@{a}") == {"images": [uri_a]}  # one file: a list of one
    assert parse(f"audio=@{a}") == {"audio": uri_a}  # a Path input: the file itself
    assert parse(f"images=@{a} images=@{b} images=https://h/c.png") == {
        "images": [uri_a, uri_b, "https://h/c.png"]  # in the order given; a URL unchanged
    }
    assert parse(f'images=["{uri_b}", "https://h/c.png"] tags=[1, 2]') == {
        "images": [uri_b, "https://h/c.png"],
        "tags": [1, 2],
    }
    assert parse("images=https://h/c.png") == {"images": ["https://h/c.png"]}
    assert parse("images=https://h/c.png seed= label=") == {"images": ["https://h/c.png"]}
    assert parse('images=https://h/c.png label=""') == {
        "images": ["https://h/c.png"],
        "label": "",
    }
    assert parse("tags=3 tags=4 images=x") == {"tags": [3, 4], "images": ["x"]}
    with pytest.raises(InputError, match="seed is given 2 times, but it takes one value"):
        parse("seed=1 seed=2")
    with pytest.raises(InputError, match="unknown input"):
        parse("sead=")
    with pytest.raises(InputError, match="cannot read"):
        parse(f"images=@{tmp_path / 'missing.png'}")


def test_the_echoed_input_shortens_long_values() -> None:
    png = data_uri("image/png", b"\x89PNG\r\n\x1a\n" + bytes(19_200_000))
    prompt = "x" * 1_000_000
    shown = shorten({"images": [png], "prompt": prompt, "seed": 7, "tags": list(range(100))})
    assert shown == {
        "images": ["data:image/png;base64,iVBORw0K… (25.6 MB)"],
        "prompt": f"{'x' * 40}… (1.0 MB)",
        "seed": 7,
        "tags": [*range(16), "… (100 items)"],
    }
    assert shorten({"prompt": "short"}) == {"prompt": "short"}


def test_a_predictor_streams_where_its_schema_says_so() -> None:
    assert streams({"paths": {"/predictions": {"post": {"x-cog-streaming": True}}}})
    assert not streams({"paths": {"/predictions": {"post": {}}}})
    assert not streams({})


# ── on the real server ────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def probes(module_cog_servers: CogServers) -> dict[str, CogServer]:
    names = ("Vectors", "Text", "OneCaption", "Files", "Echo", "Streamed")
    return {name: module_cog_servers.shared(f"vectors_probe.py:{name}") for name in names}


def make_predict(
    server: CogServer, inputs: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str], str]:
    """`make predict INPUT=<inputs>` with `server` running (as `make serve`): its exit status,
    stdout lines before `status:` (the outputs), and stderr."""
    code = local_predict.main(["--url", server.url, "--inputs", inputs])
    out, err = capsys.readouterr()
    return code, out.split("\nstatus: ")[0].splitlines(), err


@pytest.mark.server
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("name", "inputs", "printed"),
    [
        ("Vectors", "dims=5", ["[0.3, 0.4, 0.5, 0.6, 0.7]"]),
        ("Text", "text='a b'", ["you said: a b"]),
        ("OneCaption", "index=3", ['{"index": 3, "text": "caption 3"}']),
        (
            "Streamed",
            "n=2",
            ['{"index": 0, "text": "caption 0"}', '{"index": 1, "text": "caption 1"}'],
        ),
    ],
)
def test_streaming_or_not_each_predictor_prints_its_output(
    probes: dict[str, CogServer],
    capsys: pytest.CaptureFixture[str],
    name: str,
    inputs: str,
    printed: list[str],
) -> None:
    code, lines, err = make_predict(probes[name], inputs, capsys)
    assert code == 0, err
    assert lines == printed
    # no 406 fallback: a predictor without @streaming is asked for one response at once (the
    # port in "using the server at" may contain "406": match the fallback's own line)
    assert "does not stream: asking for one response" not in err
    assert "answered 406" not in err


@pytest.mark.server
@pytest.mark.timeout(120)
def test_a_non_streaming_predictor_asked_for_sse_gets_one_response(
    probes: dict[str, CogServer], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The 406 fallback: a server whose schema said nothing true about streaming."""
    code = local_predict.predict(
        probes["Vectors"], {"dims": 2}, Printer(None, base=tmp_path), sse=True
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert out.startswith("[0.3, 0.4]\n")
    assert "does not stream" in err


@pytest.mark.server
@pytest.mark.timeout(120)
def test_files_given_listed_and_left_out_reach_the_predictor(
    probes: dict[str, CogServer],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    file_server: str,
) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.txt"
    a.write_bytes(b"\x89PNG" + bytes(300))
    b.write_text("b")

    def digest(data: bytes) -> str:
        return f"{hashlib.sha256(data).hexdigest()} {len(data)}"

    url = f"{file_server}/files/c.png?type=image%2Fpng"  # passed on unchanged: the server GETs it
    code, lines, err = make_predict(
        probes["Echo"], f"images=@{a} images=@{b} images={url} tags=[1, 2] seed= label=''", capsys
    )
    assert code == 0, err
    assert lines == [
        f"image 0: {digest(a.read_bytes())}",
        f"image 1: {digest(b'b')}",
        f"image 2: {digest(b'GET /files/c.png')}",
        "tags: [1, 2]",
        "seed: None",  # left out: its default, never an explicit null (422)
        "label: ",
    ]
    # The echo names the file by its start and size, never its whole data URI.
    size = len(data_uri("image/png", a.read_bytes()))
    assert f'input: {{"images": ["data:image/png;base64,iVBORwAA… ({size} bytes)", ' in err

    code, lines, err = make_predict(probes["Echo"], f'images=["{data_uri("a/b", b"x")}"]', capsys)
    assert code == 0, err
    assert lines[0] == f"image 0: {digest(b'x')}"


@pytest.mark.server
@pytest.mark.timeout(120)
def test_a_result_of_files_is_saved_in_a_folder_of_its_run(
    probes: dict[str, CogServer],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OUTPUT_DIR", raising=False)
    monkeypatch.setattr(local_predict, "OUTPUT_DIR", tmp_path)
    for n in (3, 2):
        code, lines, err = make_predict(probes["Files"], f"n={n}", capsys)
        assert code == 0, err
    first, second = sorted(tmp_path.iterdir())
    assert [p.read_text() for p in sorted(first.iterdir())] == ["file 0", "file 1", "file 2"]
    assert sorted(p.name for p in second.iterdir()) == ["output.0.txt", "output.1.txt"]
    assert lines == [f"wrote {second}/output.{i}.txt (6 bytes)" for i in range(2)]
