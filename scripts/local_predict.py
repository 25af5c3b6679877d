"""Send one streamed prediction to the local Cog server and print it as it arrives (`make predict`).

Uses the server at --url when one answers there (`make serve`); otherwise starts one for
predict.py on a free 127.0.0.1 port, and stops it afterwards. Prints the text as the SSE `output`
events arrive, then the prediction's logs and metrics. File outputs (a `data:` URI, or an
uploaded file's URL) are written to disk as `cog predict` names them — `output.0.png`,
`output.1.wav`, ..., the extension from the file's media type (`file_extension`) — in `outputs/`
at the repository root (git-ignored), or in `--output-dir` / `$OUTPUT_DIR`, and their paths and
sizes printed as they arrive.

Any input: `-i name=value` (repeatable), read as `cog predict -i` reads it (see `parse_inputs`);
`--inputs 'name=value name="a b"'` takes several at once, split as a shell would (`make predict
INPUT=...`). Inputs not given take the predictor's defaults; a required input left out is named
before any server starts. Works for whatever predictor `--predictor` names (default predict.py's).
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
import shlex
import shutil
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cog_server import REPO_ROOT, CogServer, CogServerError, stage_server_dir
from cog_static import check

PREDICTOR = "predict.py:Predictor"
SCHEMA = Path(REPO_ROOT) / ".cog" / "openapi_schema.json"
# Where the server runs: a copy of the build context, as /src is in the image (git-ignored).
CONTEXT_DIR = Path(REPO_ROOT) / ".cog" / "context"
OUTPUT_DIR = Path(REPO_ROOT) / "outputs"  # the default for file outputs (in .gitignore)
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


def parse_inputs(flags: list[str], schema: Json) -> dict[str, Json]:
    """`name=value` flags -> the prediction's input, as the cog CLI's `cog predict -i` builds it.

    The cog CLI (pkg/cli/predict.go `parseInputFlags`, pkg/predict/input.go) reads values by the
    input's type in the OpenAPI schema, not by their look: a value in double quotes loses them;
    `@path` is the file as a data URL; `true`/`false` is a bool where the input takes one; an
    integer or a decimal number is a number where the input takes one (else it stays a string);
    an object input takes the value as JSON; an array input takes a JSON array, or the value as
    one item, and a name given several times makes an array of its values. A name the model does
    not declare is an error, as in the CLI. Unlike the CLI, numbers keep full precision (it
    narrows them to int32 / float32), and a union with `str` takes the number or bool whenever the
    value parses as one (the CLI first checks it against the schema's other constraints).
    """
    component = schema["components"]["schemas"]["Input"]
    declared: dict[str, Json] = component.get("properties") or {}
    values: dict[str, list[str]] = {}
    for flag in flags:
        name, sep, value = flag.partition("=")
        if not sep:
            raise InputError(f"Failed to parse input '{flag}', expected format is 'name=value'")
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        values.setdefault(name, []).append(value)
    unknown = sorted(set(values) - set(declared))
    if unknown:
        valid = ", ".join(sorted(declared)) or "none"
        raise InputError(f"unknown input(s) {', '.join(unknown)}; valid inputs are: {valid}")
    return {
        name: _input_value(vals, _resolve(declared[name], schema), schema)
        for name, vals in values.items()
    }


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
        return _data_url(value[1:])
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


def stage_context() -> Path:
    """.cog/context: the build context laid out as the image's /src, with the schema in it."""
    cwd = CONTEXT_DIR
    shutil.rmtree(cwd, ignore_errors=True)
    stage_server_dir(cwd)
    (cwd / ".cog").mkdir(exist_ok=True)
    shutil.copy2(SCHEMA, cwd / ".cog" / SCHEMA.name)
    return cwd


@contextlib.contextmanager
def _server(url: str, predictor: str, concurrency: int) -> Iterator[CogServer]:
    running = _running_server(url)
    if running is not None:
        print(f"using the server at {url}", file=sys.stderr)
        yield running
        return
    print("starting the Cog server (python -m cog.server.http) ...", file=sys.stderr)
    cwd = stage_context()
    with CogServer(predictor, cwd=cwd, concurrency=concurrency, schema=False) as server:
        log = server.log_path.relative_to(REPO_ROOT)
        print(f"server ready at {server.url} (its log: {log})", file=sys.stderr)
        yield server


def _print_result(final: dict[str, Any], first_output: float | None, started: float) -> int:
    print("\n")
    print(f"status: {final.get('status')}")
    if final.get("error"):
        print(f"error: {final['error']}")
    print("logs:")
    for line in (final.get("logs") or "").splitlines():
        print(f"  {line}")
    print("metrics:")
    for name, value in sorted((final.get("metrics") or {}).items()):
        print(f"  {name}: {value:.4g}" if isinstance(value, float) else f"  {name}: {value}")
    if first_output is not None:
        print(f"first output after {first_output - started:.3f}s (client side)")
    return 0 if final.get("status") == "succeeded" else 1


def default_output_dir() -> Path:
    """Where file outputs go: `$OUTPUT_DIR` if set, else `outputs/` at the repository root."""
    return Path(os.environ.get("OUTPUT_DIR") or OUTPUT_DIR)


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


def save_file_output(chunk: Json, index: int, out_dir: Path) -> Path | None:
    """Write a file output (data URI or http URL) to `out_dir/output.<index><ext>`; else None.

    The extension comes from the file's media type: the data URI's, or the Content-Type the
    upload URL answers with (`file_extension`).
    """
    if not isinstance(chunk, str):
        return None
    if chunk.startswith("data:") and ";base64," in chunk[:200]:
        header, _, encoded = chunk.partition(",")
        data = base64.b64decode(encoded)
        ext = file_extension(header.removeprefix("data:"))
    elif re.match(r"https?://\S+$", chunk):
        with urllib.request.urlopen(chunk, timeout=60) as resp:  # an uploaded output
            data = resp.read()
            content_type = resp.headers.get("Content-Type", "")
        ext = file_extension(content_type, urllib.parse.urlparse(chunk).path)
    else:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"output.{index}{ext}"
    path.write_bytes(data)
    return path


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is under it (`outputs/output.0.png`)."""
    return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else str(path)


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
        help="where file outputs are written (default: $OUTPUT_DIR, else outputs/ at the "
        "repository root)",
    )
    args = parser.parse_args(argv)
    if not SCHEMA.exists():
        raise SystemExit("no .cog/openapi_schema.json: run `make schema` first")
    schema = json.loads(SCHEMA.read_text())
    try:
        flags = [*args.input, *shlex.split(args.inputs)]
        inputs = parse_inputs(flags, schema)
    except (InputError, ValueError) as exc:  # ValueError: shlex, e.g. an unclosed quote
        raise SystemExit(f"bad input: {exc}") from None
    missing = missing_required(inputs, schema)
    if missing:
        example = " ".join(f"{name}=..." for name in missing)
        names = ", ".join(missing)
        raise SystemExit(f"missing required input(s) {names}: make predict INPUT='{example}'")
    concurrency = check(args.predictor, roots=[REPO_ROOT]).concurrency_max or 1
    with _server(args.url, args.predictor, concurrency) as server:
        print(f"input: {inputs}\n", file=sys.stderr)
        started = time.monotonic()
        first_output: float | None = None
        final: dict[str, Any] = {}
        files = 0
        try:
            for event in server.predict_stream(inputs, timeout=600):
                if event.event == "output":
                    first_output = first_output or event.time
                    saved = save_file_output(event.data["chunk"], files, args.output_dir)
                    if saved is None:
                        print(event.data["chunk"], end="", flush=True)
                    else:
                        files += 1
                        size = saved.stat().st_size
                        print(f"wrote {_shown(saved)} ({size} bytes)", flush=True)
                elif event.event == "completed":
                    final = event.data
        except CogServerError as exc:  # e.g. 422: the input did not validate
            print(str(exc).split("\n--- server output")[0], file=sys.stderr)
            return 1
        return _print_result(final, first_output, started)


if __name__ == "__main__":
    sys.exit(main())
