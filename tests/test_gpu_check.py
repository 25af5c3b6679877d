"""scripts/gpu_check.py (`make gpu-check`) in CI's world: its quick mode on this machine's CPU.

It runs the same steps as on a CUDA machine — install check, environment, `pytest -m gpu` (which
skips here), predict.py on the real Cog server at 1 and 4 concurrent, cancel latency — and the
results file must hold every field the GPU run reports. Nothing here depends on which model
predict.py serves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cog_server import REPO_ROOT
from conftest import CogServers

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.timeout(240)]

LEVEL_FIELDS = {
    "concurrent",
    "succeeded",
    "failed",
    "errors",
    "unit",
    "wall_s",
    "tokens",
    "tokens_per_s",
    "chars_per_s",
    "events_per_s",
    "ttft_ms_p50",
    "ttft_ms_p99",
    "gpu_memory_peak_mib",
}


def test_quick_cpu_run_writes_every_field(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "gpu_check.py"),
            "--out",
            str(out),
            "--quick",
            "--wheels",
            str(tmp_path / "no-wheels"),  # everything is installed here: nothing to install
            "--target",
            "predict.py:Predictor",
            "--test-paths",
            "tests/test_threading_gpu.py",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "no CUDA here" in proc.stdout
    assert "# gpu-check (quick)" in proc.stdout  # the summary

    results = json.loads((out / "gpu-check.json").read_text())
    assert results["ok"] is True
    assert results["mode"] == "quick"
    assert results["install"] == {"missing": [], "wheels": str(tmp_path / "no-wheels"), "ok": True}

    env = results["environment"]
    assert env["cuda"] is False
    assert env["torch"]
    assert env["packages"]["cog"] == "0.23.1"
    assert env["packages"]["coglet"] == "0.23.1"
    assert {"python", "cpus"} <= env.keys()

    tests = results["tests"]
    assert tests["ok"] is True
    assert tests["failed"] == tests["errors"] == tests["passed"] == 0
    assert tests["skipped"] > 0  # the bridge's GPU tests, skipped without CUDA
    assert (out / tests["log"]).exists()

    (server,) = results["servers"]
    assert server["predictor"] == "predict.py:Predictor"
    assert server["ok"] is True
    concurrency = server["concurrency"]  # whatever predict.py's @concurrent(max=...) says
    assert concurrency >= 1
    assert server["startup_s"] > 0
    assert server["healthy_after"] == "READY"
    expected = [1, 4] if concurrency >= 4 else sorted({1, concurrency})
    assert [lv["concurrent"] for lv in server["levels"]] == expected
    for level in server["levels"]:
        assert level.keys() >= LEVEL_FIELDS
        assert level["failed"] == 0
        assert level["unit"] in {"tokens", "outputs"}  # outputs: no output_token_count metric
        assert level["tokens_per_s"] > 0
        assert 0 < level["ttft_ms_p50"] <= level["ttft_ms_p99"]
        assert level["gpu_memory_peak_mib"] is None  # no nvidia-smi here
    cancel = server["cancel"]
    assert cancel["statuses"] == {"canceled": 2}
    assert cancel["ms_median"] > 0

    assert results["model_bench"] is None  # quick mode leaves out bench_server
    assert results["duration_s"] > 0
    assert (out / "gpu-check.md").read_text().startswith("# gpu-check (quick)")


@pytest.mark.parametrize("has_python", [True, False])
def test_servers_get_an_interpreter_with_a_python_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_python: bool
) -> None:
    """coglet spawns its worker as `python` on PATH: a machine with only `python3` gets a shim."""
    import gpu_check

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "python3"
    exe.symlink_to(sys.executable)
    if has_python:
        (bin_dir / "python").symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(exe))
    monkeypatch.setenv("PATH", "/usr/bin")
    python = gpu_check.python_for_servers(tmp_path / "work")
    if has_python:
        assert python == str(exe)
        return
    assert Path(python).name == "python"
    assert gpu_check.os.environ["PATH"].split(":")[0] == str(Path(python).parent)
    ran = subprocess.run(
        [python, "-c", "print('ok')"], capture_output=True, text=True, timeout=30, check=True
    )
    assert ran.stdout == "ok\n"


@pytest.mark.timeout(120)
def test_a_predictor_that_returns_one_value_is_measured_by_synchronous_requests(
    module_cog_servers: CogServers,
) -> None:
    """coglet answers SSE with 406 for a predictor without @streaming: the levels ask for one
    response each, and there is no first output to cancel at."""
    import gpu_check

    server = module_cog_servers.shared("vectors_probe.py:Vectors", concurrency=1)
    code, schema = server.openapi()
    assert code == 200
    assert gpu_check.takes_sse(schema) is False
    mode = gpu_check.Mode("t", (1,), lambda i: {"dims": 2 + i, "prompt": "dropped"}, 0, False)
    level = gpu_check.measure_level(server, 1, mode, schema, gpu_check.MemorySampler())
    assert level["failed"] == 0, level["errors"]
    assert (level["succeeded"], level["unit"], level["tokens"]) == (1, "outputs", 1)
    assert 0 < level["ttft_ms_p50"] == level["ttft_ms_p99"]
    cancel = gpu_check.measure_cancel(server, 2, schema)
    assert cancel["ok"] is True
    assert cancel["count"] == 0
    assert "not a streaming predictor" in cancel["skipped"]
