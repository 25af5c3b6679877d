"""The byte-level model behind predict.py and examples/, on the real Cog server.

These tests know this model: its inputs (temperature, top_k, top_p), its log lines, its text
(compared with an in-process regeneration), its weights, its scheduler and the probes that wrap
its engine (tests/model/predictors/template_probes.py). A fork that swaps the model replaces
this file with its own model's tests. The template's contract — what must hold for any model — is in
tests/test_contract.py (which a fork keeps as it is) and tests/test_cancel_server.py.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cog_server import REPO_ROOT, CogServer
from conftest import CogServers, probe_records, setup_printed, succeeded, wait_until

pytestmark = [pytest.mark.server, pytest.mark.timeout(180)]

CONCURRENCY = 32  # = predict.MAX_CONCURRENCY
FIB = "def fibonacci(n):"
SAMPLING = {"temperature": 0.8, "top_k": 0, "top_p": 0.95}  # predict.py's defaults

MODEL_PREDICTORS = Path(__file__).resolve().parent / "predictors"


@pytest.fixture(scope="module")
def template(module_cog_servers: CogServers) -> CogServer:
    """predict.py as shipped, 32 slots: the server `make serve` runs."""
    return module_cog_servers.shared(
        "predict.py:Predictor", source_dir=REPO_ROOT, concurrency=CONCURRENCY
    )


@pytest.fixture(scope="module")
def probed(
    module_cog_servers: CogServers, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., CogServer]:
    """Servers for the probe predictors (tests/model/predictors/template_probes.py), per class."""
    probes = tmp_path_factory.mktemp("probes")

    def get(cls: str, concurrency: int = 1, **env: str) -> CogServer:
        probe = probes / f"{cls}-{concurrency}-{'-'.join(sorted(env.values()))}.jsonl"
        return module_cog_servers.shared(
            f"template_probes.py:{cls}",
            source_dir=MODEL_PREDICTORS,
            concurrency=concurrency,
            env={"PROBE_FILE": str(probe), **env},
        )

    return get


@pytest.fixture(scope="module")
def reference() -> Iterator[Callable[..., str]]:
    """The text `engine.generate` gives alone, in this process, with the server's torch threads."""
    import torch

    import predict
    from model import load_model

    engine = load_model()
    threads = torch.get_num_threads()
    torch.set_num_threads(predict.TORCH_THREADS)  # the same float reductions, the same samples
    try:
        yield lambda prompt, n, seed, **kw: "".join(
            engine.generate(prompt, max_new_tokens=n, seed=seed, **{**SAMPLING, **kw})
        )
    finally:
        torch.set_num_threads(threads)


# ── predict.py ────────────────────────────────────────────────────────────────────────────────


def test_setup_reports_the_device_and_dtype(template: CogServer) -> None:
    # coglet may report READY before the setup's last stdout line reaches its setup logs.
    wait_until(
        lambda: setup_printed(template, "model ready on cpu (torch.float32)"),
        timeout=10,
        what="setup's device line in /health-check",
    )


def test_concurrent_predictions_keep_their_own_output_logs_and_metrics(
    template: CogServer, reference: Callable[..., str]
) -> None:
    """32 at once (one batch), twice: each prediction gets exactly the text it gets alone."""
    for round_ in range(2):
        jobs = [
            {"prompt": f"# job {round_}.{i}\nimport ", "max_new_tokens": 20 + 5 * i, "seed": i}
            for i in range(CONCURRENCY)
        ]
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            bodies = list(pool.map(lambda job: succeeded(template, **job), jobs))
        for job, body in zip(jobs, bodies, strict=True):
            n = job["max_new_tokens"]
            assert "".join(body["output"]) == reference(job["prompt"], n, job["seed"])
            metrics = body["metrics"]
            assert metrics["output_token_count"] == n
            assert metrics["input_token_count"] == len(job["prompt"].encode())
            assert 0 < metrics["time_to_first_token"] < metrics["predict_time"]
            assert 0 <= metrics["queue_time"] < metrics["time_to_first_token"]
            assert metrics["tokens_per_second"] > 0
            assert "seed" not in metrics  # only a random seed is reported
            lines = body["logs"].splitlines()
            assert lines[0] == f"generating up to {n} tokens (seed {job['seed']})"
            assert len(lines) == 2
            assert lines[1].startswith(f"generated {n} tokens in ")


def test_a_random_seed_is_reported_as_a_metric(template: CogServer) -> None:
    body = succeeded(template, prompt=FIB, max_new_tokens=5)
    seed = body["metrics"]["seed"]
    assert f"(seed {seed})" in body["logs"]


# This model's own bounds (the contract's BAD_INPUTS cover types, min/max, missing, huge).
BAD_INPUTS = {
    "too many tokens": {"prompt": FIB, "max_new_tokens": 2049},
    "negative temperature": {"prompt": FIB, "temperature": -1},
    "top_p zero": {"prompt": FIB, "top_p": 0},
    "top_k too big": {"prompt": FIB, "top_k": 100_000},
    "negative seed": {"prompt": FIB, "seed": -5},
    "seed above 32 bits": {"prompt": FIB, "seed": 2**32},
    "prompt one char too long": {"prompt": "x" * 65_537},
}


@pytest.mark.parametrize("inputs", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_gets_a_422_that_names_the_field(template: CogServer, inputs: Any) -> None:
    code, body = template.predict(inputs)
    assert code == 422, body
    assert body["detail"][0]["loc"][:2] == ["body", "input"]


ODD_PROMPTS = {
    "empty": "",
    "nul and controls": "\x00\x01\x1b[31m\r\n\t",
    "emoji and zwj": "👩‍👩‍👧‍👦 🏳️‍🌈",
    "rtl and combining": "שלום ̀a᷀",
    "non-characters": "\ufffe\uffff\U0010ffff",
    "lone surrogate escape": "\\ud800",
}


@pytest.mark.parametrize("prompt", ODD_PROMPTS.values(), ids=ODD_PROMPTS.keys())
def test_odd_unicode_prompts_generate_valid_text(template: CogServer, prompt: str) -> None:
    body = succeeded(template, prompt=prompt, max_new_tokens=20, seed=3)
    "".join(body["output"]).encode("utf-8")  # valid UTF-8: no half characters, no surrogates
    assert body["metrics"]["output_token_count"] == 20


def test_unknown_input_fields_are_ignored_not_fatal(template: CogServer) -> None:
    body = succeeded(template, prompt=FIB, max_new_tokens=3, bogus=True)
    assert body["metrics"]["output_token_count"] == 3


def test_a_model_error_mid_stream_fails_the_prediction_with_its_message(
    probed: Callable[..., CogServer],
) -> None:
    server = probed("MainProbe", FAIL_AT="7")
    events = list(server.predict_stream({"prompt": FIB, "max_new_tokens": 50, "seed": 2}))
    final = events[-1].data
    assert final["status"] == "failed"
    assert "model exploded at token 7" in final["error"]
    assert len("".join(e.data["chunk"] for e in events if e.event == "output")) <= 7
    wait_until(lambda: server.health()["status"] == "READY", timeout=5, what="a free slot")


def test_a_prediction_failing_mid_generation_fails_alone_and_its_batch_mates_succeed(
    probed: Callable[..., CogServer], reference: Callable[..., str]
) -> None:
    server = probed("MainProbe", concurrency=8, FAIL_AT="20", FAIL_PROMPT="# fail")
    before = len(probe_records(server))
    jobs = [{"prompt": f"# ok {i}\ndef ", "max_new_tokens": 150, "seed": 40 + i} for i in range(7)]
    jobs.insert(3, {"prompt": "# fail\ndef ", "max_new_tokens": 150, "seed": 3})
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: server.predict(job, timeout=120), jobs))
    for job, (code, body) in zip(jobs, results, strict=True):
        assert code == 200, body
        if job["prompt"].startswith("# fail"):
            assert body["status"] == "failed", body
            assert "model exploded at token 20" in body["error"]
        else:
            assert body["status"] == "succeeded", body
            assert "".join(body["output"]) == reference(job["prompt"], 150, job["seed"])
    records = {r["prompt"]: r for r in probe_records(server)[before:]}
    failed = records["# fail\ndef "]
    assert failed["tokens"] == 20
    mates = [r for p, r in records.items() if p.startswith("# ok")]
    assert len(mates) == 7
    # it was decoded beside others: some batch-mate had started before it ended, and ran on after
    assert any(r["started"] < failed["ended"] < r["ended"] for r in mates)
    wait_until(lambda: server.health()["status"] == "READY", timeout=5, what="a free slot")


def test_a_dead_scheduler_reports_unhealthy_and_fails_predictions_at_once(
    cog_servers: CogServers, tmp_path: Path
) -> None:
    probe = tmp_path / "probe.jsonl"
    server = cog_servers.start(
        "template_probes.py:MainProbe",
        source_dir=MODEL_PREDICTORS,
        concurrency=4,
        env={"KILL_PROMPT": "# kill", "PROBE_FILE": str(probe)},
    )
    wait_until(lambda: server.health()["status"] == "READY", timeout=5, what="a free slot")
    long_id = f"long-{uuid.uuid4().hex[:8]}"
    code, body = server.predict_async(long_id, {"prompt": FIB, "max_new_tokens": 2048, "seed": 1})
    assert code == 202, body
    wait_until(lambda: "generating" in ((server.get(long_id) or {}).get("logs") or ""))
    killed_at = time.monotonic()
    code, body = server.predict({"prompt": "# kill\n", "max_new_tokens": 50})
    assert code == 200, body
    assert body["status"] == "failed", body
    assert "scheduler stopped" in body["error"]
    assert "SchedulerKilled" in body["error"]
    # the running prediction fails as well, at once, not after its 2048 tokens
    long = server.wait(long_id, timeout=10)
    assert long["status"] == "failed", long
    assert "scheduler stopped" in long["error"]
    assert time.monotonic() - killed_at < 2.0
    wait_until(
        lambda: server.health()["status"] == "UNHEALTHY", timeout=15, what="UNHEALTHY health"
    )
    assert "healthcheck returned False" in server.health()["user_healthcheck_error"]
    # coglet 0.23 still hands new predictions to the predictor: run() fails them at once
    started = time.monotonic()
    code, body = server.predict({"prompt": FIB, "max_new_tokens": 5}, busy_retry=0)
    assert time.monotonic() - started < 2.0
    assert code == 200, body
    assert body["status"] == "failed", body
    assert "scheduler stopped: SchedulerKilled" in body["error"]


# ── weights ───────────────────────────────────────────────────────────────────────────────────


def test_cog_weights_pointing_at_a_copy_of_the_weights_works(
    cog_servers: CogServers, tmp_path: Path
) -> None:
    copy = tmp_path / "my-weights"
    shutil.copytree(REPO_ROOT / "weights", copy)
    server = cog_servers.start(
        "predict.py:Predictor", source_dir=REPO_ROOT, env={"COG_WEIGHTS": str(copy)}
    )
    body = succeeded(server, prompt=FIB, max_new_tokens=10, seed=1)
    assert body["metrics"]["output_token_count"] == 10


def test_cog_weights_pointing_at_a_missing_file_fails_setup_naming_it(
    cog_servers: CogServers, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "model.safetensors"
    server = cog_servers.start(
        "predict.py:Predictor",
        source_dir=REPO_ROOT,
        env={"COG_WEIGHTS": str(missing)},
        ready_statuses=("SETUP_FAILED",),
    )
    assert str(missing) in server.setup_health["setup"]["logs"]
    code, body = server.predict({"prompt": FIB})
    assert code == 503, body


# ── cancellation, per predictor shape ─────────────────────────────────────────────────────────


def cancel_mid_generation(server: CogServer) -> tuple[float, dict[str, Any]]:
    """Start a long generation, cancel it once output flows; returns (time cancelled, result)."""
    id_ = f"cancel-{uuid.uuid4().hex[:8]}"
    code, body = server.predict_async(id_, {"prompt": FIB, "max_new_tokens": 2048, "seed": 111})
    assert code == 202, body
    wait_until(lambda: "generating" in ((server.get(id_) or {}).get("logs") or ""), timeout=30)
    cancelled_at = time.time()
    assert server.cancel(id_)[0] == 200
    return cancelled_at, server.wait(id_, timeout=30)


@pytest.mark.parametrize("cls", ["MainProbe", "SyncProbe", "AsyncYieldProbe"])
def test_a_cancel_stops_the_model_within_a_second_and_leaks_nothing(
    probed: Callable[..., CogServer], cls: str
) -> None:
    server = probed(cls)
    before = len(probe_records(server))
    cancelled_at, result = cancel_mid_generation(server)
    assert result["status"] == "canceled"
    wait_until(lambda: len(probe_records(server)) > before, timeout=5, what="the model to stop")
    stopped = probe_records(server)[before]
    assert stopped["prompt"] == FIB
    assert stopped["tokens"] < 2048
    assert stopped["ended"] - cancelled_at < 1.0
    after = succeeded(server, prompt=FIB, max_new_tokens=5, seed=5)
    assert "seed 111" not in after["logs"]
    assert after["logs"].splitlines()[0] == "generating up to 5 tokens (seed 5)"
    assert len(after["logs"].splitlines()) == 2


def test_cancelling_one_async_prediction_leaves_its_batch_mates_text_unchanged(
    probed: Callable[..., CogServer], reference: Callable[..., str]
) -> None:
    server = probed("AsyncYieldProbe", concurrency=4)
    before = len(probe_records(server))
    jobs = [{"prompt": f"# mate {i}\n", "max_new_tokens": 600, "seed": 70 + i} for i in range(3)]
    mates = {f"mate-{uuid.uuid4().hex[:8]}": job for job in jobs}
    for id_, job in mates.items():
        assert server.predict_async(id_, job)[0] == 202
    cancelled_at, result = cancel_mid_generation(server)
    assert result["status"] == "canceled"
    for id_, job in mates.items():
        body = server.wait(id_, timeout=60)
        assert body["status"] == "succeeded", body
        assert "".join(body["output"]) == reference(job["prompt"], 600, job["seed"])
    records = probe_records(server)[before:]
    stopped = next(r for r in records if r["prompt"] == FIB)
    assert stopped["tokens"] < 2048
    assert stopped["ended"] - cancelled_at < 1.0
    mate_records = [r for r in records if r["prompt"].startswith("# mate")]
    assert len(mate_records) == 3
    # they shared the batch with the cancelled one, and went on after it left
    assert all(r["started"] < cancelled_at < r["ended"] for r in mate_records)


def test_the_sync_shape_streams_live(probed: Callable[..., CogServer]) -> None:
    """Live: the first output reaches the client while the model still generates (the probe
    records when the generation ended; a shape that collected its outputs would send the
    first only after that). Measured against the model's own end, not a share of the
    request's time: a loaded machine stretches the time before the first output too."""
    server = probed("SyncProbe")
    before = len(probe_records(server))
    events = list(server.predict_stream({"prompt": FIB, "max_new_tokens": 1000, "seed": 1}))
    to_wall = time.time() - time.monotonic()  # SSE events carry the monotonic clock
    outputs = [e for e in events if e.event == "output"]
    assert events[-1].data["status"] == "succeeded"
    (record,) = probe_records(server)[before:]
    assert outputs[0].time + to_wall < record["ended"], "the first output came after the end"


def test_the_async_yield_shape_runs_predictions_concurrently(
    probed: Callable[..., CogServer],
) -> None:
    server = probed("AsyncYieldProbe", concurrency=4)
    jobs = [{"prompt": FIB, "max_new_tokens": 30 + i, "seed": i} for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(lambda job: succeeded(server, **job), jobs))
    for job, body in zip(jobs, bodies, strict=True):
        assert body["metrics"]["output_token_count"] == job["max_new_tokens"]
        assert body["logs"].splitlines()[0] == (
            f"generating up to {job['max_new_tokens']} tokens (seed {job['seed']})"
        )
