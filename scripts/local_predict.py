"""Send one streamed prediction to the local Cog server and print it as it arrives (`make predict`).

Uses the server at --url when one answers there (`make serve`); otherwise starts one for
predict.py on a free 127.0.0.1 port, and stops it afterwards. Prints the text as the SSE `output`
events arrive, then the prediction's logs and metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cog_server import REPO_ROOT, CogServer, CogServerError

PREDICTOR = "predict.py:Predictor"


def _running_server(url: str) -> CogServer | None:
    """A client for the server at `url`, if one answers READY or BUSY there."""
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    if host not in {"127.0.0.1", "localhost"} or not port.isdigit():
        raise SystemExit(f"--url must be http://127.0.0.1:PORT, not {url}")
    server = CogServer(PREDICTOR, cwd=REPO_ROOT)
    server.port = int(port)
    with contextlib.suppress(OSError, http.client.HTTPException, ValueError, CogServerError):
        if server.health(timeout=2.0).get("status") in {"READY", "BUSY"}:
            return server
    return None


@contextlib.contextmanager
def _server(url: str, concurrency: int) -> Iterator[CogServer]:
    running = _running_server(url)
    if running is not None:
        print(f"using the server at {url}", file=sys.stderr)
        yield running
        return
    print("starting the Cog server (python -m cog.server.http) ...", file=sys.stderr)
    with CogServer(PREDICTOR, cwd=REPO_ROOT, concurrency=concurrency, schema=False) as server:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--prompt", default="def fibonacci(n):")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    inputs: dict[str, Any] = {"prompt": args.prompt}
    for name in ("max_new_tokens", "temperature", "top_k", "top_p", "seed"):
        if getattr(args, name) is not None:  # unset: the predictor's default
            inputs[name] = getattr(args, name)

    if not (Path(REPO_ROOT) / ".cog" / "openapi_schema.json").exists():
        raise SystemExit("no .cog/openapi_schema.json: run `make schema` first")
    with _server(args.url, args.concurrency) as server:
        print(f"input: {inputs}\n", file=sys.stderr)
        started = time.monotonic()
        first_output: float | None = None
        final: dict[str, Any] = {}
        try:
            for event in server.predict_stream(inputs, timeout=600):
                if event.event == "output":
                    first_output = first_output or event.time
                    print(event.data["chunk"], end="", flush=True)
                elif event.event == "completed":
                    final = event.data
        except CogServerError as exc:  # e.g. 422: the input did not validate
            print(str(exc).split("\n--- server output")[0], file=sys.stderr)
            return 1
        return _print_result(final, first_output, started)


if __name__ == "__main__":
    sys.exit(main())
