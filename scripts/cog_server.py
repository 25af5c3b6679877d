"""Run the real Cog HTTP server (`python -m cog.server.http`) locally, and talk to it.

Used by the tests and by `make predict` (scripts/local_predict.py).

`CogServer` starts the server on a free 127.0.0.1 port for one predictor, waits (bounded) until
`/health-check` reports READY, captures the server's stdout/stderr to a file, and on exit stops the
whole process group (SIGTERM, then SIGKILL) and reaps it. The client helpers use only the stdlib
and every network call has a timeout.

Facts about coglet (cog >= 0.23) the harness relies on:

- The worker is spawned as `python -c ...` found on PATH, so the server's interpreter directory is
  put first on PATH; otherwise the worker dies and /health-check stays STARTING for ever.
- Input validation (422) and SSE (`Accept: text/event-stream`) need the OpenAPI schema at
  `.cog/openapi_schema.json` relative to the server's cwd; `schema=True` writes it with
  `scripts/schema.py` into `cwd`, so each predictor needs its own cwd (see `stage_server_dir`).
- In the image the server runs in /src, a copy of the build context (`COPY . /src`); every
  server here runs in a copy of it too (`stage_server_dir`), importing only from there.
- There is no GET /predictions/{id}: async predictions report through webhooks, so the harness
  runs a small webhook receiver on 127.0.0.1 and `get`/`wait` read what it received.
- File outputs: without an upload URL coglet inlines each file as a `data:` URI; with
  `--upload-url URL` (an argument of `python -m cog.server.http`, passed to
  `coglet.server.serve(upload_url=...)`; it is how Replicate runs models) it PUTs each file to
  `URL<file name>` and outputs the response's `Location` (replicate/cog
  `crates/coglet/src/orchestrator.rs`, `upload_file`). `uploads=True` points it at an
  `UploadReceiver` on 127.0.0.1 (`server.uploads`).

The legacy Python server (cog <= 0.16, no coglet; pass its venv's `python=`) builds its schema at
runtime (use `schema=False`) and needs a cog.yaml in its cwd, which the harness writes if absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import build_context

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_SCRIPT = REPO_ROOT / "scripts" / "schema.py"
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})

Json = Any
R = TypeVar("R")


class CogServerError(RuntimeError):
    """The server did not start, died, or did not answer in time; carries its captured output."""


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: Json  # the decoded JSON payload (the raw string if it is not JSON)
    time: float  # time.monotonic() when the event arrived


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stage_server_dir(
    directory: Path, *, root: Path = REPO_ROOT, files: Mapping[str, Path] | None = None
) -> Path:
    """A server's working directory, laid out as the image's /src: the build context of `root`
    (what `COPY . /src` receives after `.dockerignore`, `build_context.py`), plus `files` (by
    relative path) that are not part of it, such as a test's probe predictor."""
    return build_context.stage(root, directory, overlay=files)


def stage_predictor(source: Path, directory: Path, *, root: Path = REPO_ROOT) -> Path:
    """`stage_server_dir` with the predictor file `source` at the top of `directory`."""
    return stage_server_dir(directory, root=root, files={source.name: source})


# A folder (set by the test suite for one run: tests/conftest.py) where `write_schema` keeps each
# schema it wrote, named by a hash of everything it was written from, so that a predictor served
# again from the same files (by another test, xdist worker or nested pytest of the same run) gets
# the same document without another scripts/schema.py process (about a second of CPU each).
SCHEMA_CACHE_ENV = "COG_TEMPLATE_SCHEMA_CACHE"
# What scripts/schema.py reads in a server's directory: the Python it imports, and cog.yaml.
_SCHEMA_INPUTS = frozenset({".py", ".pyi", ".yaml", ".yml"})


def _schema_key(predictor_ref: str, cwd: Path, python: str) -> str:
    """A hash of what the schema of `predictor_ref` in `cwd` is written from: the reference, the
    interpreter, scripts/schema.py and cog_static.py, and every Python or YAML file under `cwd`
    (by relative path and content; `.cog/` left out)."""
    digest = hashlib.sha256()

    def add(data: bytes) -> None:
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)

    add(predictor_ref.encode())
    add(python.encode())
    for script in (SCHEMA_SCRIPT, SCHEMA_SCRIPT.with_name("cog_static.py")):
        add(script.read_bytes())
    for path in sorted(cwd.rglob("*")):
        relative = path.relative_to(cwd)
        if relative.parts[0] == ".cog" or path.suffix not in _SCHEMA_INPUTS:
            continue
        if path.is_file():
            add(relative.as_posix().encode())
            add(path.read_bytes())
    return digest.hexdigest()


def write_schema(
    predictor_ref: str, cwd: Path, *, python: str = sys.executable, timeout: float = 60.0
) -> Path:
    """Write `<cwd>/.cog/openapi_schema.json` for `predictor_ref` with scripts/schema.py.

    With `$COG_TEMPLATE_SCHEMA_CACHE` set to a folder, a schema written from the same files
    before (`_schema_key`) is copied from there instead; a failure is never kept, so it is
    raised again each time.
    """
    output = cwd / ".cog" / "openapi_schema.json"
    cache_dir = os.environ.get(SCHEMA_CACHE_ENV)
    cached = (
        Path(cache_dir) / f"{_schema_key(predictor_ref, cwd, python)}.json" if cache_dir else None
    )
    if cached is not None and cached.is_file():
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(cached.read_bytes())
        return output
    proc = subprocess.run(
        [python, str(SCHEMA_SCRIPT), predictor_ref, "-o", str(output)],
        cwd=cwd,
        env=_child_env(python, {}, cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise CogServerError(
            f"writing the schema for {predictor_ref} failed ({proc.returncode}):\n"
            f"{proc.stdout}{proc.stderr}"
        )
    if cached is not None:  # whole or not at all: a copy renamed into place
        partial = cached.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_bytes(output.read_bytes())
        partial.replace(cached)
    return output


def _child_env(python: str, extra: Mapping[str, str], cwd: Path) -> dict[str, str]:
    """The environment of a server or schema run in `cwd`: only `cwd` to import from, as in the
    image (its working directory /src), never this repository."""
    env = dict(os.environ)
    bin_dir = str(Path(python).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env["PYTHONPATH"] = str(cwd)
    env.pop("VIRTUAL_ENV", None)
    env.update(extra)
    return env


class _Receiver(ThreadingHTTPServer):
    # The default listen backlog (5) overflows when many predictions end at once; the kernel
    # then drops the webhook's SYN and the client retries a second later.
    request_queue_size = 128
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        """Listen on a free 127.0.0.1 port and serve from a daemon thread until `close()`."""
        super().__init__(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


class _WebhookReceiver:
    """Collects the prediction payloads coglet POSTs to a webhook, keyed by prediction id."""

    def __init__(self) -> None:
        self._payloads: dict[str, list[Json]] = {}
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"null")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if isinstance(payload, dict) and isinstance(payload.get("id"), str):
                    with receiver._cond:
                        receiver._payloads.setdefault(payload["id"], []).append(payload)
                        receiver._cond.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Receiver(Handler)

    @property
    def url(self) -> str:
        return f"{self._server.base_url}/webhook"

    def payloads(self, prediction_id: str) -> list[Json]:
        with self._cond:
            return list(self._payloads.get(prediction_id, ()))

    def wait(self, prediction_id: str, timeout: float) -> Json | None:
        """The first payload with a terminal status, or None after `timeout` seconds."""

        def terminal() -> Json | None:
            for payload in self._payloads.get(prediction_id, ()):
                if payload.get("status") in TERMINAL_STATUSES:
                    return payload
            return None

        with self._cond:
            self._cond.wait_for(lambda: terminal() is not None, timeout=timeout)
            return terminal()

    def close(self) -> None:
        self._server.close()


class UploadReceiver:
    """A file store on 127.0.0.1 that coglet uploads to, the way Replicate's upload endpoint works.

    coglet PUTs each file output to `{url}{file name}` with its Content-Type; the receiver keeps
    the bytes under a unique name, answers 201 with `Location: {base}/files/{key}` (coglet
    outputs that URL), and serves them back on GET. `fail` makes it answer 500 to every upload;
    `hold()` makes uploads wait (their requests stay open) until `release()`.
    """

    def __init__(self) -> None:
        self.fail = False
        self._files: dict[str, tuple[str, bytes]] = {}  # key -> (content type, bytes)
        self._started = 0  # uploads received (their bodies read), answered or not
        self._cond = threading.Condition()
        self._released = threading.Event()
        self._released.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                name = self.path.rsplit("/", 1)[-1] or "output"
                with receiver._cond:
                    receiver._started += 1
                    key = f"{receiver._started}-{name}"
                    receiver._cond.notify_all()
                receiver._released.wait(timeout=60)
                if receiver.fail:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver._cond:
                    receiver._files[key] = (self.headers.get("Content-Type", ""), data)
                    receiver._cond.notify_all()
                self.send_response(201)
                self.send_header("Location", f"{receiver.base_url}/files/{key}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                key = self.path.removeprefix("/files/")
                with receiver._cond:
                    found = receiver._files.get(key)
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                content_type, data = found
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Receiver(Handler)

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def url(self) -> str:
        """The upload URL to give coglet (`--upload-url`)."""
        return f"{self.base_url}/upload/"

    def file(self, url: str) -> tuple[str, bytes] | None:
        """(Content-Type, bytes) of an uploaded file, by the URL coglet output for it."""
        if not url.startswith(f"{self.base_url}/files/"):
            return None
        with self._cond:
            return self._files.get(url.removeprefix(f"{self.base_url}/files/"))

    @property
    def stored(self) -> int:
        with self._cond:
            return len(self._files)

    @property
    def started(self) -> int:
        """Uploads received so far (including held and failed ones)."""
        with self._cond:
            return self._started

    def wait_started(self, count: int, timeout: float) -> bool:
        """Until `count` uploads have been received; False after `timeout` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: self._started >= count, timeout=timeout)

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self._server.close()


def _retry_busy(
    send: Callable[[], tuple[int, R]],
    busy_retry: float,
    *,
    discard: Callable[[R], object] = lambda _: None,
) -> tuple[int, R]:
    """`send()` until it answers other than 409, for up to `busy_retry` seconds.

    coglet 0.23 can answer 409 ("At capacity") to a request sent right after another
    prediction's response, before it has freed that slot. `discard` releases a 409's result.
    """
    deadline = time.monotonic() + busy_retry
    while True:
        code, result = send()
        if code != 409 or time.monotonic() >= deadline:
            return code, result
        discard(result)
        time.sleep(0.005)


class CogServer:
    """One `python -m cog.server.http` process serving `predictor_ref` from `cwd`."""

    def __init__(
        self,
        predictor_ref: str,
        *,
        cwd: Path,
        concurrency: int = 1,
        env: Mapping[str, str] | None = None,
        schema: bool = True,
        python: str | os.PathLike[str] = sys.executable,
        ready_statuses: Collection[str] = ("READY",),
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        uploads: bool = False,
    ) -> None:
        self.predictor_ref = predictor_ref
        self.cwd = Path(cwd)
        self.concurrency = concurrency
        self.extra_env = dict(env or {})
        self.schema = schema
        self.python = os.path.abspath(python)  # not resolve(): keep the venv's bin dir
        self.ready_statuses = frozenset(ready_statuses)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.port = 0
        self.log_path = self.cwd / ".cog" / "server.log"
        self.setup_health: Json = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._webhooks: _WebhookReceiver | None = None
        # uploads=True: coglet uploads file outputs here (--upload-url), as on Replicate
        self.uploads: UploadReceiver | None = UploadReceiver() if uploads else None

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> CogServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's pid, which is also its process group's id (the worker is in the group)."""
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self) -> CogServer:
        """Start the server and wait until /health-check reports one of `ready_statuses`."""
        if self._proc is not None:
            raise CogServerError("server already started")
        if self.schema:
            write_schema(self.predictor_ref, self.cwd, python=self.python)
        # The legacy (0.16) server serves cog.yaml's `predict:` (coglet reads only the
        # environment): one that names another predictor (a probe's staged context) is replaced.
        # Unlinked first: a staged file is a hard link to the repository's.
        cog_yaml = self.cwd / "cog.yaml"
        if not cog_yaml.exists() or f'"{self.predictor_ref}"' not in cog_yaml.read_text():
            cog_yaml.unlink(missing_ok=True)
            cog_yaml.write_text(
                f'build:\n  gpu: false\npredict: "{self.predictor_ref}"\n'
                f"concurrency:\n  max: {self.concurrency}\n"
            )
        self._webhooks = _WebhookReceiver()
        self.port = free_port()
        env = _child_env(
            self.python,
            {
                "PORT": str(self.port),
                "COG_PREDICT_TYPE_STUB": self.predictor_ref,
                "COG_MAX_CONCURRENCY": str(self.concurrency),
                "PYTHONUNBUFFERED": "1",
                **self.extra_env,
            },
            self.cwd,
        )
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("wb") as log:
                upload = [] if self.uploads is None else ["--upload-url", self.uploads.url]
                self._proc = subprocess.Popen(
                    [self.python, "-m", "cog.server.http", "--host", "127.0.0.1", *upload],
                    cwd=self.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: stop() reaches the worker too
                )
            self.setup_health = self.wait_health(self.ready_statuses, self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_health(self, statuses: Collection[str], timeout: float) -> Json:
        """Poll /health-check until its status is in `statuses`; raise with the log otherwise."""
        deadline = time.monotonic() + timeout
        last: Json = None
        while True:
            if self.returncode is not None:
                raise self.error(f"server exited with {self.returncode} (last health: {last})")
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                last = self.health(timeout=2.0)
                if last.get("status") in statuses:
                    return last
                if last.get("status") in {"SETUP_FAILED", "DEFUNCT"}:
                    raise self.error(f"server reports {last.get('status')}: {last}")
            if time.monotonic() >= deadline:
                raise self.error(f"no health status in {sorted(statuses)} after {timeout}s: {last}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        """Stop the server's process group (SIGTERM, then SIGKILL) and reap it. Idempotent."""
        proc, self._proc = self._proc, None
        if self._webhooks is not None:
            self._webhooks.close()
            self._webhooks = None
        if proc is None:
            self._close_uploads()
            return None
        for sig, wait in ((signal.SIGTERM, self.stop_timeout), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)
                break
        # the worker shares the group; make sure nothing of it is left behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._close_uploads()
        return proc.returncode

    def _close_uploads(self) -> None:
        if self.uploads is not None:
            self.uploads.close()
            self.uploads = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def error(self, message: str) -> CogServerError:
        tail = self.log_text()[-8000:]
        return CogServerError(
            f"{self.predictor_ref} in {self.cwd}: {message}\n--- server output ({self.log_path})"
            f" ---\n{tail}"
        )

    # -- client ----------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Json = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, Json]:
        """One HTTP request; returns (status code, decoded JSON body or None)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            hdrs = {"Content-Type": "application/json"} if data is not None else {}
            hdrs.update(headers or {})
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
        except TimeoutError as exc:
            raise self.error(f"{method} {path}: no answer within {timeout}s") from exc
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode(errors="replace")

    def health(self, *, timeout: float = 5.0) -> Json:
        return self.request("GET", "/health-check", timeout=timeout)[1]

    def openapi(self, *, timeout: float = 5.0) -> tuple[int, Json]:
        return self.request("GET", "/openapi.json", timeout=timeout)

    def predict(
        self,
        input: Mapping[str, Json],
        *,
        id: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        busy_retry: float = 2.0,
    ) -> tuple[int, Json]:
        """Synchronous prediction: POST /predictions (or PUT /predictions/{id}).

        A 409 is retried for up to `busy_retry` seconds (see `_retry_busy`; 0: return the first
        409, to test capacity itself).
        """
        method, path = ("POST", "/predictions") if id is None else ("PUT", f"/predictions/{id}")
        body = {"input": dict(input)} if id is None else {"id": id, "input": dict(input)}
        return _retry_busy(
            lambda: self.request(method, path, body, headers=headers, timeout=timeout), busy_retry
        )

    def predict_stream(
        self,
        input: Mapping[str, Json],
        *,
        timeout: float = 60.0,
        busy_retry: float = 2.0,
        id: str | None = None,
    ) -> Iterator[SSEEvent]:
        """POST /predictions with `Accept: text/event-stream`; yields events as they arrive.

        `timeout` bounds both the wait for each event and the whole stream. `id` names the
        prediction (so that it can be cancelled while it streams); coglet makes one up without.
        """
        deadline = time.monotonic() + timeout
        body: dict[str, Json] = {"input": dict(input)} | ({} if id is None else {"id": id})

        def open_stream() -> tuple[int, tuple[http.client.HTTPConnection, Any]]:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            conn.request(
                "POST",
                "/predictions",
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
            )
            resp = conn.getresponse()
            return resp.status, (conn, resp)

        _, (conn, resp) = _retry_busy(
            open_stream, busy_retry, discard=lambda opened: opened[0].close()
        )
        try:
            if resp.status != 200:
                raise self.error(f"SSE request answered {resp.status}: {resp.read()!r}")
            event, data_lines = "message", []
            while True:
                if time.monotonic() > deadline:
                    raise self.error(f"SSE stream still open after {timeout}s")
                try:
                    raw = resp.readline()
                except TimeoutError as exc:
                    raise self.error(f"no SSE event within {timeout}s") from exc
                if not raw:
                    return
                line = raw.decode().rstrip("\r\n")
                if line:
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "event":
                        event = value
                    elif field == "data":
                        data_lines.append(value)
                    continue
                if data_lines:
                    text = "\n".join(data_lines)
                    try:
                        data: Json = json.loads(text)
                    except ValueError:
                        data = text
                    yield SSEEvent(event, data, time.monotonic())
                event, data_lines = "message", []
        finally:
            conn.close()

    def predict_async(
        self,
        id: str,
        input: Mapping[str, Json],
        *,
        webhook: bool = True,
        timeout: float = 30.0,
        busy_retry: float = 2.0,
    ) -> tuple[int, Json]:
        """PUT /predictions/{id} with `Prefer: respond-async` (202); progress goes to a webhook.

        A 409 is retried for up to `busy_retry` seconds, as in `predict`.
        """
        body: dict[str, Json] = {"id": id, "input": dict(input)}
        if webhook:
            assert self._webhooks is not None, "server not started"
            body["webhook"] = self._webhooks.url
        return _retry_busy(
            lambda: self.request(
                "PUT",
                f"/predictions/{id}",
                body,
                headers={"Prefer": "respond-async"},
                timeout=timeout,
            ),
            busy_retry,
        )

    def get(self, id: str) -> Json | None:
        """What the webhooks said about prediction `id` last (None if nothing yet).

        coglet may deliver webhooks out of order (a "processing" one can arrive after
        "succeeded"), so a terminal payload wins over any later-arriving one.
        """
        payloads = self.webhook_payloads(id)
        for payload in payloads:
            if payload.get("status") in TERMINAL_STATUSES:
                return payload
        return payloads[-1] if payloads else None

    def webhook_payloads(self, id: str) -> list[Json]:
        assert self._webhooks is not None, "server not started"
        return self._webhooks.payloads(id)

    def wait(self, id: str, *, timeout: float = 60.0) -> Json:
        """Block until a webhook reports prediction `id` finished; returns that payload."""
        assert self._webhooks is not None, "server not started"
        payload = self._webhooks.wait(id, timeout)
        if payload is None:
            raise self.error(f"prediction {id} not finished after {timeout}s: {self.get(id)}")
        return payload

    def cancel(self, id: str, *, timeout: float = 10.0) -> tuple[int, Json]:
        return self.request("POST", f"/predictions/{id}/cancel", timeout=timeout)
