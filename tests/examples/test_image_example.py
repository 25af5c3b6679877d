"""examples/image_predict.py on the real Cog server: file outputs, live, intact, never left behind.

Through tests/examples/predictors/image_probes.py (the example plus a probe of what the model made),
on two servers: one as `cog predict` runs it locally (data URIs), one as Replicate runs it (coglet
uploads each file to `--upload-url`: an UploadReceiver on 127.0.0.1). Every file the model writes
goes to the server's own PREDICTION_FILES_DIR, so "nothing left behind" is a count.
"""

from __future__ import annotations

import base64
import hashlib
import statistics
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cog_server import CogServer, UploadReceiver
from conftest import CogServers, probe_records, wait_until

pytestmark = [pytest.mark.server, pytest.mark.timeout(180)]

PREDICTOR = "image_probes.py:Probe"
PROBES = Path(__file__).resolve().parent / "predictors"  # the example with a probe
FAIL_SEEDS = 4_000_000_000  # image_probes: seed FAIL_SEEDS + N raises at step N
CONCURRENCY = 4


def start_server(servers: CogServers, tmp: Path, name: str, **kwargs: Any) -> CogServer:
    env = {
        "PREDICTION_FILES_DIR": str(tmp / name / "files"),
        "PROBE_FILE": str(tmp / name / "probe.jsonl"),
        **kwargs.pop("env", {}),
    }
    (tmp / name).mkdir()
    return servers.shared(PREDICTOR, source_dir=PROBES, concurrency=CONCURRENCY, env=env, **kwargs)


@pytest.fixture(scope="module")
def local(module_cog_servers: CogServers, tmp_path_factory: pytest.TempPathFactory) -> CogServer:
    """Outputs as data URIs (no upload URL)."""
    return start_server(module_cog_servers, tmp_path_factory.mktemp("image"), "local")


@pytest.fixture(scope="module")
def uploading(
    module_cog_servers: CogServers, tmp_path_factory: pytest.TempPathFactory
) -> CogServer:
    """Outputs uploaded to an UploadReceiver; its outputs are the receiver's URLs."""
    return start_server(
        module_cog_servers, tmp_path_factory.mktemp("image"), "uploads", uploads=True
    )


@pytest.fixture(scope="module")
def slow(module_cog_servers: CogServers, tmp_path_factory: pytest.TempPathFactory) -> CogServer:
    """Each step 20 ms: a cancel lands mid-loop."""
    return start_server(
        module_cog_servers,
        tmp_path_factory.mktemp("image"),
        "slow",
        env={"STEP_SECONDS": "0.02"},
    )


# ── helpers ───────────────────────────────────────────────────────────────────────────────────


def receiver(server: CogServer) -> UploadReceiver:
    assert server.uploads is not None
    return server.uploads


def file_bytes(server: CogServer, output: str) -> bytes:
    """The bytes a client gets for one output: a data URI decoded, or the uploaded file."""
    if output.startswith("data:"):
        header, _, data = output.partition(",")
        assert header == "data:image/png;base64", header
        return base64.b64decode(data)
    found = receiver(server).file(output)
    assert found is not None, f"{output} is not one of the receiver's URLs"
    content_type, data = found
    assert content_type == "image/png"
    return data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def made(server: CogServer) -> dict[str, float]:
    """sha256 -> when the model made that PNG (image_probes' records)."""
    return {r["png"]: r["made"] for r in probe_records(server) if "png" in r}


def files_left(server: CogServer) -> list[Path]:
    root = Path(server.extra_env["PREDICTION_FILES_DIR"])
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def dirs_left(server: CogServer) -> list[Path]:
    root = Path(server.extra_env["PREDICTION_FILES_DIR"])
    return list(root.iterdir()) if root.exists() else []


def nothing_left(server: CogServer) -> None:
    wait_until(lambda: not dirs_left(server), timeout=10, what="prediction files to be deleted")


def coglet_outputs(ids: list[str]) -> list[Path]:
    """Files in coglet's own per-prediction output directories (/tmp/coglet/predictions)."""
    base = Path("/tmp/coglet/predictions")
    return [p for id_ in ids for p in (base / id_).rglob("*") if p.is_file()]


def predict(server: CogServer, **inputs: Any) -> dict[str, Any]:
    code, body = server.predict(inputs, timeout=120)
    assert code == 200, body
    return dict(body)


def sse_outputs(server: CogServer, inputs: dict[str, Any]) -> Iterator[tuple[float, str]]:
    """(wall-clock arrival time, output) for each output event of an SSE prediction."""
    for event in server.predict_stream(inputs, timeout=120):
        if event.event == "output":  # {"chunk": <the output>, "index": n}
            yield time.time(), event.data["chunk"]


def start(server: CogServer, **inputs: Any) -> str:
    id_ = f"image-{uuid.uuid4().hex[:10]}"
    # a 409 just after another prediction ended is retried (predict_async, in cog_server.py)
    code, body = server.predict_async(id_, inputs, busy_retry=5.0)
    assert code == 202, body
    return id_


# ── streaming, content, concurrency ───────────────────────────────────────────────────────────


def test_previews_stream_live_then_the_final_image_every_file_intact(local: CogServer) -> None:
    # A loaded client can read the whole stream in one burst: such a try proves nothing either
    # way and is made again; outputs held back to the end never pass.
    for _attempt in range(3):
        events = list(sse_outputs(local, {"seed": 7, "steps": 40, "preview_every": 10}))
        assert len(events) == 4  # previews at 10, 20, 30, then the final image
        times = [t for t, _ in events]
        assert times == sorted(times)
        if times[-1] - times[0] > 0.02:  # they arrived while the loop ran, not all at the end
            break
    else:
        pytest.fail("in 3 tries the previews always arrived together with the final image")
    produced = made(local)
    for _, output in events:
        data = file_bytes(local, output)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert sha(data) in produced  # exactly the bytes the model wrote
    nothing_left(local)


def test_same_seed_same_files_alone_or_beside_others_each_its_own(local: CogServer) -> None:
    seeds = [11, 12, 13, 14, 15, 16]
    inputs = [{"seed": s, "steps": 30, "preview_every": 10} for s in seeds]
    alone = predict(local, **inputs[0])
    with ThreadPoolExecutor(len(seeds)) as pool:
        bodies = list(pool.map(lambda i: predict(local, **i), inputs))
    assert [b["status"] for b in bodies] == ["succeeded"] * len(seeds)
    outputs = [[sha(file_bytes(local, o)) for o in b["output"]] for b in bodies]
    assert outputs[0] == [sha(file_bytes(local, o)) for o in alone["output"]]
    assert all(len(o) == 3 for o in outputs)
    assert len({h for o in outputs for h in o}) == 3 * len(seeds)  # nobody got another's file
    for seed, body in zip(seeds, bodies, strict=True):
        assert body["logs"].splitlines()[0] == f"denoising 30 steps (seed {seed})"
        assert body["logs"].splitlines()[1:3] == ["preview at step 10", "preview at step 20"]
        assert body["metrics"]["steps"] == 30
    nothing_left(local)


def test_a_failure_mid_loop_fails_and_leaves_no_file(local: CogServer) -> None:
    body = predict(local, seed=FAIL_SEEDS + 25, steps=40, preview_every=10)
    assert body["status"] == "failed"
    assert "model exploded at step 25" in body["error"]
    nothing_left(local)


def test_cancel_stops_the_loop_within_a_step_and_leaves_no_file(slow: CogServer) -> None:
    id_ = start(slow, seed=21, steps=400, preview_every=5)
    wait_until(lambda: bool((slow.get(id_) or {}).get("output")), timeout=30, what="a preview")
    code, _ = slow.cancel(id_)
    cancelled_at = time.time()
    assert code == 200
    assert slow.wait(id_, timeout=30)["status"] == "canceled"
    record = next(r for r in probe_records(slow) if r.get("seed") == 21)
    assert record["steps"] < 400
    assert record["ended"] - cancelled_at < 0.02 + 0.25  # one 20 ms step, and some slack
    nothing_left(slow)


# ── uploads (the way Replicate runs it) ───────────────────────────────────────────────────────


def test_uploaded_outputs_are_the_receivers_urls_intact(uploading: CogServer) -> None:
    body = predict(uploading, seed=31, steps=40, preview_every=10)
    assert body["status"] == "succeeded", body
    urls = body["output"]
    assert all(u.startswith(receiver(uploading).base_url + "/files/") for u in urls)
    # In the order the uploads finished, not always the order made: coglet appends each URL from
    # its own upload task (orchestrator.rs, FileOutput); the names give the order back.
    names = sorted(u.rsplit("-", 1)[-1] for u in urls)
    assert names == ["010.png", "020.png", "030.png", "output.png"]
    produced = made(uploading)
    assert all(sha(file_bytes(uploading, u)) in produced for u in urls)
    nothing_left(uploading)


def test_uploads_at_4_concurrent_each_prediction_its_own_files(uploading: CogServer) -> None:
    seeds = list(range(41, 41 + 2 * CONCURRENCY))
    with ThreadPoolExecutor(len(seeds)) as pool:
        bodies = list(
            pool.map(lambda s: predict(uploading, seed=s, steps=30, preview_every=10), seeds)
        )
    assert [b["status"] for b in bodies] == ["succeeded"] * len(seeds)
    solo = predict(uploading, seed=seeds[-1], steps=30, preview_every=10)
    hashes = [[sha(file_bytes(uploading, u)) for u in b["output"]] for b in bodies]
    assert sorted(hashes[-1]) == sorted(sha(file_bytes(uploading, u)) for u in solo["output"])
    assert len({h for hs in hashes for h in hs}) == 3 * len(seeds)
    expected = ["010.png", "020.png", "output.png"]
    for body in bodies:
        assert sorted(u.rsplit("-", 1)[-1] for u in body["output"]) == expected
    nothing_left(uploading)


def test_an_upload_failure_fails_the_prediction_with_a_clear_error(uploading: CogServer) -> None:
    receiver(uploading).fail = True
    try:
        body = predict(uploading, seed=51, steps=20, preview_every=10)
    finally:
        receiver(uploading).fail = False
    assert body["status"] == "failed", body
    assert "Failed to upload output" in body["error"]
    assert "500" in body["error"]
    nothing_left(uploading)


def test_a_cancel_while_uploads_are_in_flight_ends_canceled(uploading: CogServer) -> None:
    uploads = receiver(uploading)
    before = uploads.started
    uploads.hold()  # uploads reach the receiver and wait there
    try:
        id_ = start(uploading, seed=61, steps=40, preview_every=10)
        assert uploads.wait_started(before + 1, timeout=30)
        assert uploading.cancel(id_)[0] == 200
        assert uploading.wait(id_, timeout=30)["status"] == "canceled"
    finally:
        uploads.release()
    nothing_left(uploading)


# ── latency and the mixed run ─────────────────────────────────────────────────────────────────


def preview_latencies(server: CogServer, seeds: list[int]) -> list[float]:
    """Seconds from each PNG made (then written) to its SSE output event, all `seeds` at once."""

    def run(seed: int) -> list[tuple[float, str]]:
        inputs = {"seed": seed, "steps": 60, "preview_every": 5}
        return [(t, sha(file_bytes(server, o))) for t, o in sse_outputs(server, inputs)]

    with ThreadPoolExecutor(len(seeds)) as pool:
        arrivals = [a for result in pool.map(run, seeds) for a in result]
    produced = made(server)
    return [arrived - produced[digest] for arrived, digest in arrivals]


def test_preview_latency_written_to_sse_event(local: CogServer) -> None:
    report = {}
    for concurrent, seeds in ((1, [71]), (4, [72, 73, 74, 75])):
        latencies = preview_latencies(local, seeds)
        assert len(latencies) == 12 * len(seeds)
        report[concurrent] = (statistics.median(latencies), max(latencies))
        assert statistics.median(latencies) < 0.25, latencies
    print(
        "\npreview latency (PNG made -> SSE event): "
        + "; ".join(
            f"{c} concurrent: median {m * 1000:.1f} ms, max {x * 1000:.1f} ms"
            for c, (m, x) in report.items()
        )
    )
    nothing_left(local)


def drop_sse_after_first_output(server: CogServer, inputs: dict[str, Any]) -> None:
    stream = server.predict_stream(inputs, timeout=60)
    try:
        for event in stream:
            if event.event == "output":
                break
    finally:
        stream.close()  # closes the connection: coglet cancels the prediction


def mixed_run(server: CogServer, count: int) -> tuple[dict[str, int], list[str]]:
    """`count` predictions, 4 at a time: normal, cancelled, SSE dropped, failing, in turn."""
    ids: list[str] = []

    def one(i: int) -> str:
        kind = ("normal", "cancelled", "dropped", "failing")[i % 4]
        seed = 1000 + i
        if kind == "normal":
            body = predict(server, seed=seed, steps=30, preview_every=5)
            assert body["status"] == "succeeded", body.get("error")
            produced = made(server)
            assert all(sha(file_bytes(server, o)) in produced for o in body["output"])
        elif kind == "failing":
            body = predict(server, seed=FAIL_SEEDS + 12, steps=30, preview_every=5)
            assert body["status"] == "failed"
        elif kind == "dropped":
            drop_sse_after_first_output(server, {"seed": seed, "steps": 300, "preview_every": 5})
        else:
            id_ = start(server, seed=seed, steps=300, preview_every=5)
            ids.append(id_)
            wait_until(lambda: bool((server.get(id_) or {}).get("output")), timeout=30)
            assert server.cancel(id_)[0] == 200
            assert server.wait(id_, timeout=30)["status"] in {"canceled", "succeeded"}
        return kind

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        kinds = list(pool.map(one, range(count)))
    return {k: kinds.count(k) for k in set(kinds)}, ids


@pytest.mark.slow
@pytest.mark.parametrize("name", ["local", "uploading"])
def test_mixed_run_leaves_no_file_behind(name: str, request: pytest.FixtureRequest) -> None:
    server: CogServer = request.getfixturevalue(name)
    before = len(made(server))
    started = time.monotonic()
    kinds, ids = mixed_run(server, 52)
    wait_until(
        lambda: not files_left(server) and not dirs_left(server),
        timeout=15,
        what="every prediction file to be deleted",
    )
    written = len(made(server)) - before
    assert written > 52
    assert coglet_outputs(ids) == []  # nor copies in coglet's own directories
    print(
        f"\nmixed run ({name}): {kinds}, {written} PNGs written, "
        f"{len(files_left(server))} files left, {time.monotonic() - started:.1f}s"
    )
    health = server.health()
    assert health["status"] == "READY", health
