"""`make gpu-check`: prove the template on a CUDA machine (and smoke-test the same steps on a CPU).

    python3 scripts/gpu_check.py --out DIR [--quick] [--wheels gpu-wheels] [--target REF ...]

Steps, each bounded in time, each recorded in ``DIR/gpu-check.json`` (a failing step is recorded
and the next one still runs):

1. **Install** what the machine lacks (cog, coglet, pytest, pytest-timeout, hypothesis) from
   the carried wheel folder (``make gpu-wheels`` fills it): ``pip install --no-index
   --find-links``. torch and the rest stay the machine's own.
2. **Environment**: Python, torch and its CUDA, the device's name, memory and driver
   (``nvidia-smi``), cog/coglet versions, CPU count. Read in a subprocess, so this process never
   holds a CUDA context that would count in the memory figures.
3. **GPU tests**: ``python -m pytest -m gpu`` over the test paths (``tests/``: the template's
   bridge tests and, where the folders exist, the model's). Without CUDA they skip.
4. **The server, measured** for each predictor (``predict.py`` — tests/contract.py's
   ``PREDICTOR`` — and ``examples/transformers_predict.py``, ``examples/image_predict.py`` when
   present): the real Cog server (scripts/cog_server.py) at 1, 8 and 32 concurrent SSE
   predictions (a level above the predictor's ``@concurrent(max=...)`` is replaced by that
   max), each prediction
   ``contract.streaming_input(i)`` (``short_input`` with ``--quick``) fitted to the predictor's
   schema (unknown fields dropped, numbers clamped to their bounds): aggregate output tokens/s
   (the ``output_token_count`` metric; else output events), characters/s, p50/p99 time to first
   output (client-side, send -> first ``output`` event), device memory (``nvidia-smi``: idle
   after setup and peak while running); then cancel latency: ``contract.long_input(i)``,
   cancelled at its first output, time to the ``completed`` event (status must be
   ``canceled``). A predictor without ``@streaming`` (no ``x-cog-streaming`` in its schema:
   coglet answers SSE with 406) gets synchronous requests instead, its response counting as its
   one output, and no cancel step.
5. **The model's own benchmark**, if a ``benchmarks/<folder>/bench_server.py`` exists and takes
   ``--quick --json FILE`` (the demo model's does; a fork that deletes it loses this step only):
   its quick mode, server vs scheduler vs the raw batched loop, with its ``--json`` numbers
   folded into the results.

Then it prints a one-screen summary (also written to ``DIR/gpu-check.md``). Exit status: 0
when every step ran and nothing failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))
sys.path.insert(1, str(REPO_ROOT / "tests"))

from cog_server import CogServer, CogServerError, stage_server_dir  # noqa: E402

# tests/contract.py: the inputs any model's predictor takes (a fork edits that file only)
contract = importlib.import_module("contract")

Json = Any

# distribution name -> what the steps need it for; installed from the wheel folder if missing
NEEDED = ("cog", "coglet", "pytest", "pytest-timeout", "hypothesis", "docker")
VERSIONS_OF = ("cog", "coglet", "torch", "transformers", "tokenizers", "safetensors", "numpy")
EXAMPLES = ("examples/transformers_predict.py:Predictor", "examples/image_predict.py:Predictor")
# A model's server benchmark, if its benchmarks folder has one taking `--quick --json FILE`.
MODEL_BENCHES = sorted(REPO_ROOT.glob("benchmarks/*/bench_server.py"))
MODEL_BENCH = MODEL_BENCHES[0] if MODEL_BENCHES else None
STREAM_TIMEOUT = 300.0  # seconds, one prediction


@dataclass(frozen=True)
class Mode:
    name: str
    levels: tuple[int, ...]
    input_fn: Callable[[int], dict[str, Any]]
    cancels: int
    model_bench: bool


FULL = Mode("full", (1, 8, 32), contract.streaming_input, cancels=5, model_bench=True)
QUICK = Mode("quick", (1, 4), contract.short_input, cancels=2, model_bench=False)


def log(message: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ── 1. install ─────────────────────────────────────────────────────────────────────────────────


def missing_packages() -> list[str]:
    missing = []
    for name in NEEDED:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def install(wheels: Path) -> dict[str, Json]:
    """pip install what is missing from `wheels`, offline; the machine's torch is left alone."""
    missing = missing_packages()
    result: dict[str, Json] = {"missing": missing, "wheels": str(wheels), "ok": True}
    if not missing:
        return result
    if not wheels.is_dir():
        result.update(ok=False, error=f"{missing} missing and no wheel folder {wheels}")
        return result
    env = {**os.environ, "PIP_BREAK_SYSTEM_PACKAGES": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if importlib.util.find_spec("pip") is None:  # pip ships inside Python: no network needed
        subprocess.run(
            [sys.executable, "-m", "ensurepip", "--default-pip"],
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels)]
    proc = subprocess.run(
        [*cmd, *missing], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    result.update(ok=proc.returncode == 0, output_tail=(proc.stdout + proc.stderr)[-2000:])
    return result


def python_for_servers(work: Path) -> str:
    """An interpreter path whose directory also holds a `python` that is this interpreter.

    coglet starts its worker as the `python` found first on PATH (the harness puts the server's
    interpreter directory in front); a machine may have `python3` only, or a `python` that is
    another interpreter. Then a `python` wrapper script goes in `work` and in front of PATH.
    """
    exe = Path(sys.executable)
    sibling = exe.parent / "python"
    with contextlib.suppress(OSError):
        if sibling.exists() and os.path.samefile(sibling, exe):
            return str(exe)
    wrapper = work / "python-bin" / "python"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(f'#!/bin/sh\nexec "{exe}" "$@"\n')
    wrapper.chmod(0o755)
    os.environ["PATH"] = os.pathsep.join([str(wrapper.parent), os.environ.get("PATH", "")])
    return str(wrapper)


# ── 2. environment ─────────────────────────────────────────────────────────────────────────────

ENV_PROBE = r"""
import json, sys
from importlib import metadata
names = json.loads(sys.argv[1])
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
info = {"packages": {n: version(n) for n in names}, "cuda": False}
try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cuda"] = torch.cuda.is_available()
    if info["cuda"]:
        p = torch.cuda.get_device_properties(0)
        info.update(
            device=p.name, device_count=torch.cuda.device_count(),
            device_memory_mib=round(p.total_memory / 2**20), capability=f"{p.major}.{p.minor}",
            bf16=torch.cuda.is_bf16_supported(),
        )
except ImportError:
    info["torch"] = None
print(json.dumps(info))
"""


def nvidia_smi(query: str) -> list[list[str]] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    return [[f.strip() for f in line.split(",")] for line in out.splitlines() if line.strip()]


def environment() -> dict[str, Json]:
    proc = subprocess.run(
        [sys.executable, "-c", ENV_PROBE, json.dumps(VERSIONS_OF)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    info: dict[str, Json]
    try:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        info = {"cuda": False, "probe_error": (proc.stdout + proc.stderr)[-2000:]}
    smi = nvidia_smi("name,driver_version,memory.total")
    if smi:
        info["nvidia_smi"] = [{"name": r[0], "driver": r[1], "memory_mib": r[2]} for r in smi]
        info["driver"] = smi[0][1]
    info.update(
        python=platform.python_version(),
        platform=platform.platform(),
        cpus=os.cpu_count(),
        cpus_usable=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    )
    return info


# ── 3. GPU tests ───────────────────────────────────────────────────────────────────────────────


def run_gpu_tests(out: Path, paths: Sequence[str], timeout: float) -> dict[str, Json]:
    xml_path, log_path = out / "gpu-tests.xml", out / "gpu-tests.txt"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        "-v",
        "-s",
        "-rA",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        f"--junitxml={xml_path}",
        *paths,
    ]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        parts = [
            p.decode(errors="replace") if isinstance(p, bytes) else p or ""
            for p in (e.stdout, e.stderr)
        ]
        output = f"{parts[0]}{parts[1]}\n(timed out after {timeout}s)"
        rc = None
    log_path.write_text(output)
    result: dict[str, Json] = {
        "command": " ".join(cmd[2:]),
        "returncode": rc,
        "seconds": round(time.monotonic() - started, 1),
        "log": log_path.name,
    }
    result.update(junit_counts(xml_path))
    # pytest exits 5 when nothing was selected: a fork without GPU tests
    result["ok"] = rc in (0, 5) and not result.get("failed_tests")
    return result


def junit_counts(path: Path) -> dict[str, Json]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failed_tests": []}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    totals = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors")}
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {
        "passed": totals["tests"] - totals["failures"] - totals["errors"] - skipped,
        "failed": totals["failures"],
        "errors": totals["errors"],
        "skipped": skipped,
        "failed_tests": failed,
    }


# ── 4. the server, measured ───────────────────────────────────────────────────────────────────


class MemorySampler:
    """Device memory in use (MiB, all processes, device 0) by nvidia-smi; peak per window."""

    def __init__(self, every: float = 0.25) -> None:
        self.available = nvidia_smi("memory.used") is not None
        self.every = every
        self._peak = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def now(self) -> float | None:
        rows = nvidia_smi("memory.used") if self.available else None
        return float(rows[0][0]) if rows else None

    @contextlib.contextmanager
    def window(self) -> Iterator[Callable[[], float | None]]:
        """Sample in the background while inside; the yielded callable gives the peak."""
        if not self.available:
            yield lambda: None
            return
        self._peak, self._stop = 0.0, threading.Event()

        def loop() -> None:
            while not self._stop.is_set():
                value = self.now()
                if value is not None:
                    with self._lock:
                        self._peak = max(self._peak, value)
                self._stop.wait(self.every)

        self._thread = threading.Thread(target=loop, name="memory-sampler", daemon=True)
        self._thread.start()
        try:
            yield lambda: self._peak or None
        finally:
            self._stop.set()
            self._thread.join(timeout=30)


def fit_to_schema(inputs: Mapping[str, Any], schema: Json) -> dict[str, Any]:
    """Drop fields the predictor lacks, clamp numbers to its bounds; raise if a required is left."""
    spec = schema["components"]["schemas"]["Input"]
    props: dict[str, Json] = spec.get("properties", {})
    fitted: dict[str, Any] = {}
    for name, value in inputs.items():
        prop = props.get(name)
        if prop is None:
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "maximum" in prop:
                value = min(value, prop["maximum"])
            if "minimum" in prop:
                value = max(value, prop["minimum"])
        fitted[name] = value
    missing = [n for n in spec.get("required", []) if n not in fitted]
    if missing:
        raise ValueError(f"tests/contract.py's inputs lack the required {missing}")
    return fitted


@dataclass(frozen=True)
class Stream:
    sent: float
    first: float | None  # monotonic time of the first output event
    end: float
    events: int
    chars: int
    tokens: int  # output_token_count if the predictor reports it, else output events
    counted: bool  # tokens came from the output_token_count metric
    status: str
    error: str | None


def takes_sse(schema: Json) -> bool:
    """Does the predictor take SSE? coglet serves it only where the schema's POST /predictions
    says `x-cog-streaming: true` (`@streaming` on run(); replicate/cog
    `crates/coglet/src/service.rs`, `schema_supports_prediction_streaming`), else HTTP 406."""
    operation = ((schema.get("paths") or {}).get("/predictions") or {}).get("post") or {}
    return operation.get("x-cog-streaming") is True


def stream_once(server: CogServer, inputs: Mapping[str, Any], *, streaming: bool = True) -> Stream:
    """One prediction, timed: over SSE, or (`streaming=False`: a predictor that returns one
    value, which coglet refuses SSE for) as one synchronous request, whose response is its one
    output (`first` is when it arrived)."""
    if not streaming:
        return _respond_once(server, inputs)
    events = server.predict_stream(inputs, timeout=STREAM_TIMEOUT, busy_retry=10.0)
    sent = time.monotonic()  # the request goes out on the first next()
    first: float | None = None
    count = chars = 0
    final: Json = None
    end = sent
    for event in events:
        if event.event == "output":
            first = event.time if first is None else first
            count += 1
            chunk = event.data.get("chunk") if isinstance(event.data, dict) else event.data
            chars += len(chunk) if isinstance(chunk, str) else 0
        elif event.event == "completed":
            final, end = event.data, event.time
    return _stream(sent, first, end, count, chars, final)


def _respond_once(server: CogServer, inputs: Mapping[str, Any]) -> Stream:
    sent = time.monotonic()
    code, body = server.predict(inputs, timeout=STREAM_TIMEOUT, busy_retry=10.0)
    end = time.monotonic()
    if code != 200 or not isinstance(body, dict):
        body = {"status": f"HTTP {code}", "error": json.dumps(body)[:1000]}
    output = body.get("output")
    count = 0 if output is None else 1
    chars = len(output) if isinstance(output, str) else 0
    return _stream(sent, end if count else None, end, count, chars, body)


def _stream(
    sent: float, first: float | None, end: float, count: int, chars: int, final: Json
) -> Stream:
    final = final if isinstance(final, dict) else {}
    metric = (final.get("metrics") or {}).get("output_token_count")
    tokens = int(metric) if isinstance(metric, int | float) else count
    status, error = str(final.get("status", "none")), final.get("error")
    return Stream(sent, first, end, count, chars, tokens, metric is not None, status, error)


def percentile(values: Sequence[float], q: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 1)


def measure_level(
    server: CogServer, n: int, mode: Mode, schema: Json, memory: MemorySampler
) -> dict[str, Json]:
    inputs = [fit_to_schema(mode.input_fn(i), schema) for i in range(n)]
    barrier = threading.Barrier(n)
    streaming = takes_sse(schema)

    def job(i: int) -> Stream:
        barrier.wait()
        return stream_once(server, inputs[i], streaming=streaming)

    with memory.window() as peak, ThreadPoolExecutor(n) as pool:
        streams = list(pool.map(job, range(n)))
        peak_mib = peak()
    wall = max(s.end for s in streams) - min(s.sent for s in streams)
    ok = [s for s in streams if s.status == "succeeded"]
    ttft = [s.first - s.sent for s in ok if s.first is not None]
    tokens = sum(s.tokens for s in ok)
    return {
        "concurrent": n,
        "succeeded": len(ok),
        "failed": n - len(ok),
        "errors": sorted({f"{s.status}: {s.error}"[:300] for s in streams if s not in ok}),
        "unit": "tokens" if ok and all(s.counted for s in ok) else "outputs",
        "wall_s": round(wall, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1) if wall > 0 else None,
        "chars_per_s": round(sum(s.chars for s in ok) / wall, 1) if wall > 0 else None,
        "events_per_s": round(sum(s.events for s in ok) / wall, 1) if wall > 0 else None,
        "ttft_ms_p50": ms(percentile(ttft, 0.5)),
        "ttft_ms_p99": ms(percentile(ttft, 0.99)),
        "gpu_memory_peak_mib": peak_mib,
    }


def measure_cancel(server: CogServer, count: int, schema: Json) -> dict[str, Json]:
    """Long predictions, one at a time, cancelled at their first output: time to `completed`.

    Skipped (`ok`, with the reason in `skipped`) for a predictor that does not stream: its one
    output is its response, so there is no first output to cancel at.
    """
    if not takes_sse(schema):
        return {
            "count": 0,
            "statuses": {},
            "ms_median": None,
            "ms_max": None,
            "ok": True,
            "skipped": "not a streaming predictor (no @streaming): no first output to cancel at",
        }
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    for i in range(count):
        events = server.predict_stream(fit_to_schema(contract.long_input(i), schema))
        prediction_id: str | None = None
        sent: float | None = None
        status = "none"
        try:
            for event in events:
                if event.event == "start" and isinstance(event.data, dict):
                    prediction_id = event.data.get("id")
                elif event.event == "output" and sent is None and prediction_id is not None:
                    sent = time.monotonic()
                    server.cancel(prediction_id)
                elif event.event == "completed":
                    status = str(event.data.get("status", "?"))
                    if sent is not None:
                        latencies.append(event.time - sent)
                    break
        finally:
            close = getattr(events, "close", None)
            if close is not None:  # a generator: closing it closes the connection
                close()
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "count": count,
        "statuses": statuses,
        "ms_median": ms(statistics.median(latencies)) if latencies else None,
        "ms_max": ms(max(latencies)) if latencies else None,
        "ok": statuses.get("canceled", 0) == count,
    }


def concurrency_of(ref: str) -> int:
    """The predictor's @concurrent(max=...), read statically as `cog build` does (else 1)."""
    try:
        import cog_static

        return cog_static.check(ref, roots=[REPO_ROOT]).concurrency_max or 1
    except Exception:
        return 1


def measure_predictor(
    ref: str, mode: Mode, memory: MemorySampler, work: Path, python: str
) -> dict[str, Json]:
    file_name, _, _ = ref.partition(":")
    result: dict[str, Json] = {"predictor": ref, "ok": False}
    concurrency = concurrency_of(ref)
    levels = [n for n in mode.levels if n <= concurrency]
    if concurrency < max(mode.levels) and concurrency not in levels:
        levels.append(concurrency)  # its full capacity instead of the levels above it
    result.update(
        concurrency=concurrency,
        skipped_levels=[n for n in mode.levels if n > concurrency],
        gpu_memory_before_mib=memory.now(),
    )
    cwd = stage_server_dir(work / Path(file_name).stem)  # the build context, as /src
    started = time.monotonic()
    try:
        with CogServer(
            ref,
            cwd=cwd,
            concurrency=concurrency,
            python=python,
            startup_timeout=300.0,
        ) as server:
            result["startup_s"] = round(time.monotonic() - started, 1)
            result["gpu_memory_idle_mib"] = memory.now()
            schema = json.loads((cwd / ".cog" / "openapi_schema.json").read_text())
            log(f"{ref}: ready in {result['startup_s']}s; concurrency {concurrency}")
            warm_up = fit_to_schema(contract.short_input(0), schema)
            stream_once(server, warm_up, streaming=takes_sse(schema))
            result["levels"] = []
            for n in levels:
                level = measure_level(server, n, mode, schema, memory)
                log(
                    f"{ref}: {n} concurrent: {level['tokens_per_s']} {level['unit']}/s, TTFT p50 "
                    f"{level['ttft_ms_p50']} ms, p99 {level['ttft_ms_p99']} ms"
                )
                result["levels"].append(level)
            result["cancel"] = measure_cancel(server, mode.cancels, schema)
            log(f"{ref}: cancel -> canceled, median {result['cancel']['ms_median']} ms")
            result["healthy_after"] = server.health().get("status")
        result["ok"] = (
            all(lv["failed"] == 0 for lv in result["levels"])
            and result["cancel"]["ok"]
            and result["healthy_after"] == "READY"
        )
    except (CogServerError, OSError, ValueError, KeyError, RuntimeError) as e:
        result["error"] = f"{type(e).__name__}: {e}"[-4000:]
        log(f"{ref}: FAILED {result['error'][:300]}")
    return result


# ── 5. the model's own benchmark ──────────────────────────────────────────────────────────────


def run_model_bench(out: Path, timeout: float) -> dict[str, Json] | None:
    if MODEL_BENCH is None:
        return None
    module = ".".join(MODEL_BENCH.relative_to(REPO_ROOT).with_suffix("").parts)
    json_path, log_path = out / "bench_server.json", out / "bench_server.txt"
    cmd = [sys.executable, "-m", module, "--quick", "--json", json_path]
    try:
        proc = subprocess.run(
            [str(c) for c in cmd],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        log_path.write_text(proc.stdout + proc.stderr)
    except subprocess.TimeoutExpired:
        return {
            "ok": False,
            "module": module,
            "error": f"timed out after {timeout}s",
            "log": log_path.name,
        }
    try:
        numbers = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return {"ok": False, "module": module, "error": "no JSON written", "log": log_path.name}
    return {"ok": True, "module": module, "log": log_path.name, **numbers}


# ── summary ───────────────────────────────────────────────────────────────────────────────────


def fmt(value: Json, spec: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def summary(results: dict[str, Json]) -> str:
    env = results["environment"]
    pkgs = env.get("packages", {})
    device = env.get("device") or "no CUDA device (CPU run)"
    lines = [
        f"# gpu-check ({results['mode']}): {device}",
        "",
        f"- when: {results['started']}, {results['duration_s']} s in all",
        f"- device: {device}, driver {fmt(env.get('driver'))}, "
        f"{fmt(env.get('device_memory_mib'))} MiB, capability {fmt(env.get('capability'))}",
        f"- torch {fmt(env.get('torch'))} (CUDA {fmt(env.get('torch_cuda'))}), "
        f"Python {env.get('python')}, cog {fmt(pkgs.get('cog'))}, "
        f"coglet {fmt(pkgs.get('coglet'))}, {env.get('cpus')} CPUs",
    ]
    tests = results.get("tests") or {}
    lines.append(
        f"- gpu tests: {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
        f"{tests.get('errors', 0)} errors, {tests.get('skipped', 0)} skipped "
        f"({tests.get('seconds', '-')} s)"
    )
    lines += [f"  - FAILED {name}" for name in tests.get("failed_tests", [])]
    for srv in results.get("servers", []):
        lines += ["", f"## {srv['predictor']} (concurrency {srv.get('concurrency')})", ""]
        if "error" in srv:
            lines.append(f"FAILED: {srv['error'][:500]}")
            continue
        lines.append(
            f"ready in {srv.get('startup_s')} s; device memory before/idle: "
            f"{fmt(srv.get('gpu_memory_before_mib'))}/{fmt(srv.get('gpu_memory_idle_mib'))} MiB"
        )
        unit = next((lv["unit"] for lv in srv.get("levels", []) if lv["succeeded"]), "tokens")
        lines += [
            "",
            f"| at once | {unit}/s | chars/s | TTFT p50 ms | TTFT p99 ms | peak MiB | failed |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for lv in srv.get("levels", []):
            lines.append(
                f"| {lv['concurrent']} | {fmt(lv['tokens_per_s'])} | {fmt(lv['chars_per_s'])} "
                f"| {fmt(lv['ttft_ms_p50'])} | {fmt(lv['ttft_ms_p99'])} "
                f"| {fmt(lv['gpu_memory_peak_mib'])} | {lv['failed']} |"
            )
            lines += [f"  failed: {e}" for e in lv["errors"][:3]]
        if srv.get("skipped_levels"):
            lines.append(f"(not run: {srv['skipped_levels']} at once, above its concurrency)")
        cancel = srv.get("cancel", {})
        if cancel.get("skipped"):
            lines.append(f"\ncancel: skipped, {cancel['skipped']}")
        else:
            lines.append(
                f"\ncancel at first output -> canceled: median {fmt(cancel.get('ms_median'))} "
                f"ms, max {fmt(cancel.get('ms_max'))} ms, statuses {cancel.get('statuses')}"
            )
    bench = results.get("model_bench")
    if bench:
        lines += ["", f"## {bench.get('module', 'bench_server')} --quick", ""]
        if not bench.get("ok"):
            lines.append(f"FAILED: {bench.get('error')} (see {bench.get('log')})")
        else:
            one = bench.get("one_stream", {})
            lines.append(
                f"one stream: server {fmt(one.get('server_tokens_per_s'), '.0f')} tokens/s vs "
                f"raw {fmt(one.get('raw_tokens_per_s'), '.0f')} "
                f"(server/raw {fmt(one.get('server_vs_raw'), '.1%')}, target >= 95%); TTFT server "
                f"{fmt(one.get('server_ttft_ms'), '.1f')} ms vs raw "
                f"{fmt(one.get('raw_ttft_ms'), '.1f')} ms"
            )
            lines += [
                "",
                "| at once | server tok/s | scheduler tok/s | raw batch tok/s | server/raw "
                "(target >= 95%) | TTFT p50 server / raw, ms |",
                "|---:|---:|---:|---:|---:|---:|",
            ]
            for row in bench.get("concurrent", []):
                lines.append(
                    f"| {row['n']} | {fmt(row['server_tokens_per_s'], '.0f')} "
                    f"| {fmt(row['scheduler_tokens_per_s'], '.0f')} "
                    f"| {fmt(row['raw_tokens_per_s'], '.0f')} "
                    f"| {fmt(row['server_vs_raw'], '.1%')} "
                    f"| {fmt(row.get('server_ttft_ms_p50'), '.1f')} / "
                    f"{fmt(row.get('raw_ttft_ms_p50'), '.1f')} |"
                )
    lines += ["", f"result: {'OK' if results['ok'] else 'FAILED'}"]
    return "\n".join(lines)


# ── main ──────────────────────────────────────────────────────────────────────────────────────


def default_targets() -> list[str]:
    refs = [contract.PREDICTOR]
    refs += [ref for ref in EXAMPLES if (REPO_ROOT / ref.partition(":")[0]).exists()]
    return refs


def run(args: argparse.Namespace) -> dict[str, Json]:
    mode = QUICK if args.quick else FULL
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started, clock = datetime.now(UTC), time.monotonic()
    results: dict[str, Json] = {"mode": mode.name, "started": started.isoformat(timespec="seconds")}

    log(f"1/5 install: wheels from {args.wheels}")
    results["install"] = install(Path(args.wheels).resolve())
    log(f"    missing before: {results['install']['missing'] or 'nothing'}")

    log("2/5 environment")
    env = results["environment"] = environment()
    results["cuda"] = bool(env.get("cuda"))
    if results["cuda"]:
        log(f"    CUDA: {env.get('device')}, driver {env.get('driver')}, torch {env.get('torch')}")
    else:
        log("    no CUDA here: the same steps run on the CPU (the gpu tests skip)")

    log("3/5 gpu tests: pytest -m gpu")
    results["tests"] = None
    if not args.skip_tests:
        results["tests"] = run_gpu_tests(out, args.test_paths, args.test_timeout)
        t = results["tests"]
        log(f"    {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped")

    log("4/5 the Cog server, measured")
    memory = MemorySampler()
    results["servers"] = []
    results["model_bench"] = None
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        python = python_for_servers(Path(tmp))
        for ref in args.target or default_targets():
            results["servers"].append(measure_predictor(ref, mode, memory, Path(tmp), python))

        log("5/5 the model's own benchmark")
        if mode.model_bench and not args.skip_model_bench:
            results["model_bench"] = run_model_bench(out, args.bench_timeout)
    if results["model_bench"] is None:
        log("    skipped")

    results["duration_s"] = round(time.monotonic() - clock, 1)
    results["ok"] = (
        results["install"]["ok"]
        and (results["tests"] is None or results["tests"]["ok"])
        and all(s["ok"] for s in results["servers"])
        and (results["model_bench"] is None or results["model_bench"]["ok"])
    )
    (out / "gpu-check.json").write_text(json.dumps(results, indent=2) + "\n")
    text = summary(results)
    (out / "gpu-check.md").write_text(text + "\n")
    print("\n" + text, flush=True)
    print(f"\nresults: {out / 'gpu-check.json'}", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 scripts/gpu_check.py", description=__doc__)
    ap.add_argument("--out", required=True, help="folder for gpu-check.json and the logs")
    ap.add_argument("--wheels", default=str(REPO_ROOT / "gpu-wheels"), help="carried wheels")
    ap.add_argument("--quick", action="store_true", help="levels 1 and 4, short inputs, no bench")
    ap.add_argument("--target", action="append", help="predictor file.py:Class (repeatable)")
    ap.add_argument("--test-paths", nargs="*", default=["tests"], help="where pytest -m gpu looks")
    ap.add_argument("--skip-tests", action="store_true", help="no pytest step")
    ap.add_argument("--skip-model-bench", action="store_true", help="no bench_server step")
    ap.add_argument("--test-timeout", type=float, default=600.0, help="seconds for the tests")
    ap.add_argument("--bench-timeout", type=float, default=600.0, help="seconds for the bench")
    args = ap.parse_args(argv)
    return 0 if run(args)["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
