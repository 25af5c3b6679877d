"""Send one prediction to the local Cog server and print it as it arrives (`make predict`).

Uses the server at --url when one answers there (`make serve`), with the schema it serves;
otherwise starts one for predict.py on a free 127.0.0.1 port (schema: .cog/openapi_schema.json),
and stops it afterwards.

A predictor whose `run()` is `@streaming` (the schema's `x-cog-streaming`) is asked for SSE and
its outputs are printed as the `output` events arrive; any other is asked for one synchronous
response (coglet answers SSE for it with HTTP 406, which also makes this fall back). Either way
the prediction's logs and metrics follow. Text is printed as it comes; a structured value (an
object from `Iterator[SomeBaseModel]`, a `-> list[float]` or `-> SomeBaseModel` result) as one
JSON line per object. File outputs (a `data:` URI, or an uploaded file's URL) are written to disk
as `cog predict` names them — `output.0.png`, `output.1.wav`, ..., the extension from the file's
media type (`file_extension`) — in a folder of this run's own, `outputs/<date>-<time>/` at the
repository root (git-ignored), or straight into `--output-dir` / `$OUTPUT_DIR`; their paths and
sizes are printed as they arrive, and a file inside a structured value is shown by its path.

Any input: `-i name=value` (repeatable), read as `cog predict -i` reads it (see `parse_inputs`);
`--inputs 'name=value name="a b"'` takes several at once, split as a shell would, except that a
JSON array or object value stays one value (`split_inputs`; `make predict INPUT=...`). Inputs
not given, or given empty (`seed=`), take the predictor's defaults; a required input left out is
named before any server starts. Works for whatever predictor `--predictor` names.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import math
import mimetypes
import os
import re
import shutil
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from cog_server import REPO_ROOT, CogServer, CogServerError, stage_server_dir
from cog_static import check

PREDICTOR = "predict.py:Predictor"
SCHEMA = Path(REPO_ROOT) / ".cog" / "openapi_schema.json"
# Where the server runs: a copy of the build context, as /src is in the image (git-ignored).
CONTEXT_DIR = Path(REPO_ROOT) / ".cog" / "context"
# File outputs go to a folder per run under this one (in .gitignore and .dockerignore).
OUTPUT_DIR = Path(REPO_ROOT) / "outputs"
SHOWN_CHARS = 80  # the echoed input shortens longer strings (data URIs, long prompts)
SHOWN_ITEMS = 16  # ... and longer lists
TIMEOUT = 600.0  # seconds, one prediction
Json = Any

# The extension of a file output, by its media type: what models output most. A table, not only
# `mimetypes`: Python 3.11's knows no audio/wav (the type coglet gives a .wav file) nor
# audio/wave, and its answers follow the machine's mime.types (audio/ogg can come back as .oga).
EXTENSIONS = {
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/vnd.wave": ".wav",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/flac": ".flac",
    "audio/x-flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/mp4": ".m4a",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "image/webp": ".webp",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "application/json": ".json",
    "text/plain": ".txt",
}


class InputError(ValueError):
    """An `-i` flag that cannot become an input (the message says why)."""


# ── inputs ────────────────────────────────────────────────────────────────────────────────────

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_BLANKS = " \t\r\n"  # what separates words (shlex's whitespace)


def split_inputs(text: str) -> list[str]:
    """`name=value ...` (`make predict INPUT=...`) -> one `name=value` string per input.

    Split and unquoted as `shlex.split` does ('single', "double" with `\\"` and `\\\\`, a
    backslash escaping the next character outside quotes), with two differences: a value that is
    a JSON array or object (`images=["data:...", "https://..."]`, `tags=[1, 2]`,
    `opts={"a": "b c"}`) stays one value, its quotes and spaces kept, so it needs no quoting of
    its own; and a value given as an empty quoted string (`label=""`) stays `label=""`, an empty
    string, where `seed=` is no value at all (`parse_inputs` leaves it out). Raises ValueError
    for an unclosed quote, as shlex does.
    """
    words: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _BLANKS:
            i += 1
        if i >= n:
            return words
        name = _NAME.match(text, i)
        if name is not None and text[name.end() : name.end() + 1] in ("[", "{"):
            end = _json_end(text, name.end())
            if end is not None and (end == n or text[end] in _BLANKS):
                with contextlib.suppress(ValueError):
                    json.loads(text[name.end() : end])
                    words.append(text[i:end])
                    i = end
                    continue
        word, i = _shell_word(text, i)
        words.append(word)


def _json_end(text: str, start: int) -> int | None:
    """The index just past the bracket that closes the one at `start`, skipping JSON strings."""
    depth, i, in_string = 0, start, False
    while i < len(text):
        char = text[i]
        if in_string:
            if char == "\\":
                i += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _shell_word(text: str, i: int) -> tuple[str, int]:
    """One word of `text` from `i`, as a POSIX shell reads it; (the word, where it ended)."""
    out: list[str] = []
    quoted = False
    n = len(text)
    while i < n and text[i] not in _BLANKS:
        char = text[i]
        if char == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ValueError("No closing quotation")
            out.append(text[i + 1 : end])
            quoted, i = True, end + 1
        elif char == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] in '"\\':
                    i += 1
                out.append(text[i])
                i += 1
            if i >= n:
                raise ValueError("No closing quotation")
            quoted, i = True, i + 1
        elif char == "\\":
            if i + 1 >= n:
                raise ValueError("No escaped character")
            out.append(text[i + 1])
            i += 2
        else:
            out.append(char)
            i += 1
    word = "".join(out)
    if quoted and word.endswith("=") and "=" not in word[:-1]:
        word += '""'  # name="": an explicit empty string, not a left-out value
    return word, i


def parse_inputs(flags: list[str], schema: Json) -> dict[str, Json]:
    """`name=value` flags -> the prediction's input, as the cog CLI's `cog predict -i` builds it.

    The cog CLI (pkg/cli/predict.go `parseInputFlags`, pkg/predict/input.go) reads values by the
    input's type in the OpenAPI schema, not by their look: a value in double quotes loses them;
    `@path` is the file as a data URL; `true`/`false` is a bool where the input takes one; an
    integer or a decimal number is a number where the input takes one (else it stays a string);
    an object input takes the value as JSON; an array input takes a JSON array, or the value as
    one item (`images=@a.png` is a list of one data URL, `images=https://...` of one URL, sent
    as given), and a name given several times makes an array of its values, in their order
    (`images=@a.png images=@b.png`). A name the model does not declare is an error, as in the
    CLI. Unlike the CLI: an empty value (`seed=`) leaves the input out, so that it takes its
    default (coglet answers 422 to an explicit null for an optional input: "null is not of type
    integer"; `name=""` is an empty string); a name given several times for an input that is not
    an array is an error here, not at the server; numbers keep full precision (the CLI narrows
    them to int32 / float32); and a union with `str` takes the number or bool whenever the value
    parses as one (the CLI first checks it against the schema's other constraints).
    """
    component = schema["components"]["schemas"]["Input"]
    declared: dict[str, Json] = component.get("properties") or {}
    values: dict[str, list[str]] = {}
    for flag in flags:
        name, sep, value = flag.partition("=")
        if not sep:
            raise InputError(f"Failed to parse input '{flag}', expected format is 'name=value'")
        values.setdefault(name, [])
        if not value:
            continue  # name=: left out, the input takes its default
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        values[name].append(value)
    unknown = sorted(set(values) - set(declared))
    if unknown:
        valid = ", ".join(sorted(declared)) or "none"
        raise InputError(f"unknown input(s) {', '.join(unknown)}; valid inputs are: {valid}")
    inputs: dict[str, Json] = {}
    for name, vals in values.items():
        node = _resolve(declared[name], schema)
        if len(vals) > 1 and not _accepts(node, schema, "array"):
            raise InputError(
                f"{name} is given {len(vals)} times, but it takes one value, not a list"
            )
        if vals:
            inputs[name] = _input_value(vals, node, schema)
    return inputs


def _resolve(node: Json, schema: Json) -> Json:
    """Follow a local `$ref` ("#/components/schemas/X")."""
    while isinstance(node, dict) and "$ref" in node:
        target: Json = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _accepts(node: Json, schema: Json, *types: str) -> bool:
    """Does the (possibly composed) schema `node` take a value of one of `types`?"""
    node = _resolve(node, schema)
    if not isinstance(node, dict):
        return False
    own = node.get("type")
    if (own in types) if isinstance(own, str) else any(t in types for t in own or ()):
        return True
    members = [*node.get("anyOf", ()), *node.get("allOf", ()), *node.get("oneOf", ())]
    return any(_accepts(member, schema, *types) for member in members)


def _items(node: Json, schema: Json) -> Json:
    node = _resolve(node, schema)
    if "items" in node:
        return _resolve(node["items"], schema)
    members = [*node.get("anyOf", ()), *node.get("allOf", ()), *node.get("oneOf", ())]
    items = [_items(m, schema) for m in members if _accepts(m, schema, "array")]
    return {"anyOf": items} if items else None


def _input_value(values: list[str], node: Json, schema: Json) -> Json:
    if len(values) > 1:  # -i name=a -i name=b: an array
        return [_scalar(v, _items(node, schema), schema) for v in values]
    value = values[0]
    if value.startswith("@"):
        url = _data_url(value[1:])
        takes_list = _accepts(node, schema, "array") and not _accepts(node, schema, "string")
        return [url] if takes_list else url
    if _accepts(node, schema, "object"):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise InputError(f"not a JSON object: {value!r} ({exc})") from None
    if _accepts(node, schema, "array"):
        with contextlib.suppress(ValueError):
            parsed = json.loads(value)
            if isinstance(parsed, list):
                return parsed
        if _accepts(node, schema, "string"):
            return value
        return [_scalar(value, _items(node, schema), schema)]
    return _scalar(value, node, schema)


def _scalar(value: str, node: Json, schema: Json) -> Json:
    if value.startswith("@"):
        return _data_url(value[1:])
    if node is None:
        return value
    if value in ("true", "false") and _accepts(node, schema, "boolean"):
        return value == "true"
    if not _accepts(node, schema, "integer", "number"):
        return value
    if re.fullmatch(r"[+-]?[0-9]+", value):
        return int(value)
    if _accepts(node, schema, "number") and re.fullmatch(r"[+-]?[0-9.eE+-]+", value):
        with contextlib.suppress(ValueError):
            number = float(value)
            if math.isfinite(number):
                return number
    return value


def _data_url(path: str) -> str:
    file = Path(path).expanduser()
    try:
        content = file.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    mime = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(content).decode()}"


def missing_required(inputs: dict[str, Json], schema: Json) -> list[str]:
    """The required inputs of `schema` that `inputs` leaves out."""
    required = schema["components"]["schemas"]["Input"].get("required") or []
    return [name for name in required if name not in inputs]


def human_size(size: int) -> str:
    """`size` bytes as people read it: 512 bytes, 1.5 kB, 25.6 MB (powers of 1000)."""
    if size < 1000:
        return f"{size} bytes"
    value = float(size)
    for unit in ("kB", "MB"):
        value /= 1000
        if value < 999.95:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} GB"


def shorten(value: Json) -> Json:
    """`value` for the echoed `input:` line: a string over SHOWN_CHARS cut to its start plus its
    size (`data:image/png;base64,iVBORw0K… (25.6 MB)`; a data URI keeps its media type), a
    list over SHOWN_ITEMS to its first items and its length; never the whole of either."""
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        comma = value.find(",", 0, 200) if value.startswith("data:") else -1
        keep = comma + 1 + 8 if comma >= 0 else SHOWN_CHARS // 2
        return f"{value[:keep]}… ({human_size(len(value.encode()))})"
    if isinstance(value, list):
        shown = [shorten(item) for item in value[:SHOWN_ITEMS]]
        if len(value) > SHOWN_ITEMS:
            shown.append(f"… ({len(value)} items)")
        return shown
    if isinstance(value, dict):
        return {key: shorten(item) for key, item in value.items()}
    return value


def streams(schema: Json) -> bool:
    """Does the predictor take SSE? coglet serves it only where the schema's POST /predictions
    says `x-cog-streaming: true` (`@streaming` on run(); replicate/cog
    `crates/coglet/src/service.rs`, `schema_supports_prediction_streaming`), else HTTP 406."""
    operation = ((schema.get("paths") or {}).get("/predictions") or {}).get("post") or {}
    return operation.get("x-cog-streaming") is True


# ── the server ────────────────────────────────────────────────────────────────────────────────


def _running_server(url: str) -> CogServer | None:
    """A client for the server at `url`, if one answers READY or BUSY there."""
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    if host not in {"127.0.0.1", "localhost"} or not port.isdigit():
        raise SystemExit(f"--url must be http://127.0.0.1:PORT, not {url}")
    server = CogServer("unknown.py:Predictor", cwd=REPO_ROOT)  # a client only: never started
    server.port = int(port)
    with contextlib.suppress(OSError, http.client.HTTPException, ValueError, CogServerError):
        if server.health(timeout=2.0).get("status") in {"READY", "BUSY"}:
            return server
    return None


def _served_schema(server: CogServer) -> Json | None:
    """The schema a running server serves (GET /openapi.json), if it serves one."""
    with contextlib.suppress(OSError, http.client.HTTPException, ValueError, CogServerError):
        code, body = server.openapi(timeout=5.0)
        if code == 200 and isinstance(body, dict) and "components" in body:
            return body
    return None


def stage_context() -> Path:
    """.cog/context: the build context laid out as the image's /src, with the schema in it."""
    cwd = CONTEXT_DIR
    shutil.rmtree(cwd, ignore_errors=True)
    stage_server_dir(cwd)
    (cwd / ".cog").mkdir(exist_ok=True)
    shutil.copy2(SCHEMA, cwd / ".cog" / SCHEMA.name)
    return cwd


@contextlib.contextmanager
def _server(running: CogServer | None, predictor: str, concurrency: int) -> Iterator[CogServer]:
    if running is not None:
        print(f"using the server at {running.url}", file=sys.stderr)
        yield running
        return
    print("starting the Cog server (python -m cog.server.http) ...", file=sys.stderr)
    cwd = stage_context()
    with CogServer(predictor, cwd=cwd, concurrency=concurrency, schema=False) as server:
        log = server.log_path.relative_to(REPO_ROOT)
        print(f"server ready at {server.url} (its log: {log})", file=sys.stderr)
        yield server


# ── outputs ───────────────────────────────────────────────────────────────────────────────────


def default_output_dir() -> Path | None:
    """Where `$OUTPUT_DIR` puts file outputs, if it is set: files go straight into it."""
    return Path(os.environ["OUTPUT_DIR"]) if os.environ.get("OUTPUT_DIR") else None


def new_run_dir(base: Path | None = None, *, now: float | None = None) -> Path:
    """A new, empty folder `base/<YYYYmmdd-HHMMSS>` (local time) for one run's files; a run in
    the same second gets `-2`, `-3`, ... Runs never share a folder, so an 8-frame run's files
    are never mixed with the `output.9.jpg ...` of a 32-frame run before it."""
    base = OUTPUT_DIR if base is None else base
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        path = base / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        with contextlib.suppress(FileExistsError):
            path.mkdir()
            return path
    raise FileExistsError(f"{base}/{stamp}-*: a thousand runs in one second")


def file_extension(media_type: str, name: str = "") -> str:
    """The extension for a file of `media_type` ("audio/wav", "image/png; charset=..."): from
    EXTENSIONS, else `mimetypes`, else the suffix of `name` (an uploaded file's URL path), else
    ".bin"."""
    mime = media_type.split(";", 1)[0].strip().lower()
    if mime in EXTENSIONS:
        return EXTENSIONS[mime]
    if mime and mime != "application/octet-stream":
        guessed = mimetypes.guess_extension(mime)
        if guessed:
            return guessed
    suffix = Path(name).suffix
    return suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,10}", suffix) else ".bin"


def is_file_output(value: Json, *, urls: bool = True) -> bool:
    """Is `value` a file output: a base64 `data:` URI, or (with `urls`) an http(s) URL?"""
    if not isinstance(value, str):
        return False
    if value.startswith("data:") and ";base64," in value[:200]:
        return True
    return urls and re.match(r"https?://\S+$", value) is not None


def save_file_output(chunk: Json, index: int, out_dir: Path) -> Path | None:
    """Write a file output (data URI or http URL) to `out_dir/output.<index><ext>`; else None.

    The extension comes from the file's media type: the data URI's, or the Content-Type the
    upload URL answers with (`file_extension`).
    """
    if not is_file_output(chunk):
        return None
    if chunk.startswith("data:"):
        header, _, encoded = chunk.partition(",")
        data = base64.b64decode(encoded)
        ext = file_extension(header.removeprefix("data:"))
    else:
        with urllib.request.urlopen(chunk, timeout=60) as resp:  # an uploaded output
            data = resp.read()
            content_type = resp.headers.get("Content-Type", "")
        ext = file_extension(content_type, urllib.parse.urlparse(chunk).path)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"output.{index}{ext}"
    path.write_bytes(data)
    return path


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is under it (`outputs/output.0.png`)."""
    return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else str(path)


class Printer:
    """Prints a prediction's outputs to `out` and saves its files, numbered in arrival order.

    Text (a `str` output that is no file) is printed as it comes, glued as a text stream is;
    any other value as one JSON line, after each `data:` URI inside it has been saved and
    replaced by the saved file's path. Files go to `out_dir` if given, else to a folder made for
    this run under `base` (default OUTPUT_DIR) on the first file (`new_run_dir`): a run without
    files makes none.
    """

    def __init__(
        self, out_dir: Path | None, *, base: Path | None = None, out: TextIO | None = None
    ) -> None:
        self.out_dir = out_dir
        self.base = base
        self.out = out if out is not None else sys.stdout
        self.files = 0
        self._line_start = True

    def directory(self) -> Path:
        if self.out_dir is None:
            self.out_dir = new_run_dir(self.base)
        return self.out_dir

    def _line(self, text: str) -> None:
        if not self._line_start:
            print(file=self.out)
        print(text, file=self.out, flush=True)
        self._line_start = True

    def end_line(self) -> None:
        """Finish the line a text stream left open."""
        if not self._line_start:
            print(file=self.out, flush=True)
            self._line_start = True

    def save(self, value: Json, *, urls: bool) -> Path | None:
        """Save `value` if it is a file output (`is_file_output`), printing where; else None."""
        if not is_file_output(value, urls=urls):
            return None
        saved = save_file_output(value, self.files, self.directory())
        assert saved is not None
        self.files += 1
        self._line(f"wrote {_shown(saved)} ({saved.stat().st_size} bytes)")
        return saved

    def _files_saved(self, value: Json) -> Json:
        """`value` with each `data:` URI in it saved and replaced by its file's path. URLs are
        not fetched inside a value: a URL field may be just text."""
        if isinstance(value, dict):
            return {key: self._files_saved(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._files_saved(item) for item in value]
        saved = self.save(value, urls=False)
        return value if saved is None else _shown(saved)

    def item(self, value: Json) -> None:
        """One output item (an SSE `chunk`): a file, text, or a value printed as JSON."""
        if isinstance(value, str):
            if self.save(value, urls=True) is None:
                print(value, end="", file=self.out, flush=True)
                self._line_start = value.endswith("\n") or (value == "" and self._line_start)
            return
        self._line(json.dumps(self._files_saved(value), ensure_ascii=False))

    def result(self, output: Json) -> None:
        """A synchronous response's whole `output`: a list of files, objects or lists item by
        item (a JSON line each), any other list (numbers, strings) as one JSON line, a string
        as text, anything else as one JSON line."""
        if output is None:
            return
        if isinstance(output, list) and any(
            is_file_output(item) or isinstance(item, dict | list) for item in output
        ):
            for item in output:
                self.item(item)
                self.end_line()
        elif isinstance(output, str):
            self.item(output)
            self.end_line()
        else:
            self._line(json.dumps(self._files_saved(output), ensure_ascii=False))


def _print_result(
    final: dict[str, Any],
    first_output: float | None,
    started: float,
    printer: Printer | None = None,
    *,
    responded: float | None = None,
) -> int:
    if printer is not None:
        printer.end_line()
    print()
    print(f"status: {final.get('status')}")
    if final.get("error"):
        print(f"error: {final['error']}")
    print("logs:")
    for line in (final.get("logs") or "").splitlines():
        print(f"  {line}")
    print("metrics:")
    for name, value in sorted((final.get("metrics") or {}).items()):
        print(f"  {name}: {value:.4g}" if isinstance(value, float) else f"  {name}: {value}")
    if printer is not None and printer.files:
        where = printer.directory()
        print(f"files: {printer.files} in {_shown(where)}{os.sep}")
    if first_output is not None:
        print(f"first output after {first_output - started:.3f}s (client side)")
    if responded is not None:
        print(f"response after {responded - started:.3f}s (client side)")
    return 0 if final.get("status") == "succeeded" else 1


def predict(server: CogServer, inputs: dict[str, Json], printer: Printer, *, sse: bool) -> int:
    """One prediction on `server`, printed by `printer`: SSE if `sse` (falling back to a
    synchronous request if the server answers 406), else synchronous. The exit status: 0 when
    it succeeded."""
    started = time.monotonic()
    first_output: float | None = None
    final: dict[str, Any] = {}
    if sse:
        try:
            for event in server.predict_stream(inputs, timeout=TIMEOUT):
                if event.event == "output":
                    first_output = first_output or event.time
                    printer.item(event.data["chunk"])
                elif event.event == "completed":
                    final = event.data
        except CogServerError as exc:  # e.g. 422: the input did not validate
            message = str(exc).split("\n--- server output")[0]
            if "answered 406" not in message:
                printer.end_line()
                print(message, file=sys.stderr)
                return 1
            print("(the predictor does not stream: asking for one response)", file=sys.stderr)
        else:
            return _print_result(final, first_output, started, printer)
    code, body = server.predict(inputs, timeout=TIMEOUT)
    if code != 200 or not isinstance(body, dict):
        print(f"the server answered {code}: {json.dumps(body)}", file=sys.stderr)
        return 1
    responded = time.monotonic()
    printer.result(body.get("output"))
    return _print_result(body, None, started, printer, responded=responded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    parser.add_argument("--predictor", default=PREDICTOR, help="file.py:Class, as in cog.yaml")
    parser.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any input, read as `cog predict -i` reads it (repeatable)",
    )
    parser.add_argument(
        "--inputs",
        default="",
        metavar="'NAME=VALUE ...'",
        help="several -i at once, split as a shell would: 'prompt=\"def f():\" seed=7'",
    )
    parser.add_argument(
        "--output-dir",
        default=default_output_dir(),
        type=Path,
        help="where file outputs are written (default: $OUTPUT_DIR, else a new folder "
        "outputs/<date>-<time>/ at the repository root)",
    )
    args = parser.parse_args(argv)
    running = _running_server(args.url)
    schema = None if running is None else _served_schema(running)
    if schema is None:
        if not SCHEMA.exists():
            raise SystemExit("no .cog/openapi_schema.json: run `make schema` first")
        schema = json.loads(SCHEMA.read_text())
    try:
        flags = [*args.input, *split_inputs(args.inputs)]
        inputs = parse_inputs(flags, schema)
    except (InputError, ValueError) as exc:  # ValueError: an unclosed quote
        raise SystemExit(f"bad input: {exc}") from None
    missing = missing_required(inputs, schema)
    if missing:
        example = " ".join(f"{name}=..." for name in missing)
        names = ", ".join(missing)
        raise SystemExit(f"missing required input(s) {names}: make predict INPUT='{example}'")
    concurrency = 1
    if running is None:
        concurrency = check(args.predictor, roots=[REPO_ROOT]).concurrency_max or 1
    with _server(running, args.predictor, concurrency) as server:
        print(f"input: {json.dumps(shorten(inputs), ensure_ascii=False)}\n", file=sys.stderr)
        return predict(server, inputs, Printer(args.output_dir), sse=streams(schema))


if __name__ == "__main__":
    sys.exit(main())
