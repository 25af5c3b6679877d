"""examples/video_predict.py on the real Cog server: JPEG frames in order, then an MP4 of them all.

Served as a fork would serve it, on servers as `cog predict` runs it locally (data URIs) and as
Replicate runs it (coglet uploads each file to `--upload-url`: an UploadReceiver on 127.0.0.1).
Each server has its own PREDICTION_FILES_DIR and TMPDIR, so "nothing left behind" is a count
there (and no file added to its working directory). The frames are checked against the model
run in this process: each JPEG and each MP4 frame must be nearest to the model's frame of its
place (JPEG and H.264 are lossy: a mean pixel error of 6 and 9 here, while two frames 1/3 s
apart differ by 29 or more). A cancelled prediction's logs and metrics carry the producer's
closing work (its `finally`: docs/bridge.md, "Closing work on cancel"). Why its pool is a
`ContextThreadPoolExecutor`: a probe beside it shows a plain pool losing the line of a call
submitted to it directly, beside the stage (docs/bridge.md, "Which executor"). The producer also
runs in-process, under hypothesis: frames in order, and a consumer that leaves leaves no thread
and no file.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from cog_server import REPO_ROOT, CogServer
from conftest import CogServers, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples import video_predict

pytestmark = [pytest.mark.timeout(240)]
server = pytest.mark.server

PREDICTOR = "examples/video_predict.py:Predictor"
CONCURRENCY = 4
PROMPT = "a paper boat on a pond"
CLOSING = re.compile(r"^video (done|cancelled|failed): (\d+) frames in \d+\.\d+s$", re.M)


# server -> the files of its working directory (the staged /src) once it was ready
WORKING_FILES: dict[int, set[Path]] = {}


def start_server(servers: CogServers, tmp: Path, **kwargs: Any) -> CogServer:
    (tmp / "files").mkdir()
    (tmp / "tmp").mkdir()
    env = {"PREDICTION_FILES_DIR": str(tmp / "files"), "TMPDIR": str(tmp / "tmp")}
    server = servers.shared(
        PREDICTOR, source_dir=REPO_ROOT, concurrency=CONCURRENCY, env=env, **kwargs
    )
    WORKING_FILES.setdefault(id(server), working_files(server))
    return server


@pytest.fixture(scope="module")
def local(module_cog_servers: CogServers, tmp_path_factory: pytest.TempPathFactory) -> CogServer:
    """Outputs as data URIs (no upload URL)."""
    return start_server(module_cog_servers, tmp_path_factory.mktemp("video-local"))


@pytest.fixture(scope="module")
def uploading(
    module_cog_servers: CogServers, tmp_path_factory: pytest.TempPathFactory
) -> CogServer:
    """Outputs uploaded to an UploadReceiver; its outputs are the receiver's URLs."""
    return start_server(module_cog_servers, tmp_path_factory.mktemp("video-uploads"), uploads=True)


# ── helpers ───────────────────────────────────────────────────────────────────────────────────


def fetched(server: CogServer, output: str) -> tuple[str, bytes]:
    """(media type, bytes) a client gets for one output: a data URI, or the uploaded file."""
    if output.startswith("data:"):
        header, _, data = output.partition(",")
        assert header.endswith(";base64"), header
        return header.removeprefix("data:").removesuffix(";base64"), base64.b64decode(data)
    assert server.uploads is not None
    found = server.uploads.file(output)
    assert found is not None, f"{output} is not one of the receiver's URLs"
    return found


def uploaded_name(url: str) -> str:
    """The file name a URL of the receiver ends with (its key is `<n>-<name>`)."""
    return url.rsplit("/", 1)[-1].split("-", 1)[1]


def reference(seed: int, frames: int, fps: int) -> list[np.ndarray]:
    """The frames the model makes for these inputs, in this process."""
    decoder = video_predict.build_decoder()
    with torch.inference_mode():
        rendered = video_predict.render(decoder, PROMPT, seed, frames, fps)
        return [video_predict.to_pixels(frame).astype(np.int16) for frame in rendered]


def nearest(image: np.ndarray, references: list[np.ndarray]) -> tuple[int, float]:
    """(index, mean absolute difference) of the reference frame closest to `image`."""
    distances = [float(np.abs(image.astype(np.int16) - r).mean()) for r in references]
    best = int(np.argmin(distances))
    return best, distances[best]


def check_video(files: list[tuple[str, bytes]], count: int, seed: int, fps: int) -> None:
    """`count` JPEG frames, each the model's frame of its place, then an MP4 of `count` frames,
    each the model's frame of its place."""
    assert [kind for kind, _ in files] == ["image/jpeg"] * count + ["video/mp4"]
    references = reference(seed, count, fps)
    for i, (_, data) in enumerate(files[:-1]):
        image = iio.imread(data, extension=".jpg")
        assert image.shape == (video_predict.SIZE, video_predict.SIZE, 3)
        assert nearest(image, references) == (i, pytest.approx(0, abs=10)), i
    video = iio.imread(files[-1][1], extension=".mp4", plugin="FFMPEG", index=None)
    assert video.shape == (count, video_predict.SIZE, video_predict.SIZE, 3)
    for i, image in enumerate(video):
        assert nearest(image, references) == (i, pytest.approx(0, abs=14)), i


def files_left(directory: Path) -> list[Path]:
    """The files under `directory` (os.walk: a directory deleted meanwhile is skipped)."""
    return [Path(root, name) for root, _, names in os.walk(directory) for name in names]


def working_files(server: CogServer) -> set[Path]:
    """The files in the server's working directory, less its own log (.cog/)."""
    return {p for p in files_left(server.cwd) if ".cog" not in p.relative_to(server.cwd).parts}


def nothing_left(server: CogServer) -> None:
    """No file in the server's PREDICTION_FILES_DIR (its directories gone too) or TMPDIR, and
    none added to its working directory."""
    files = Path(server.extra_env["PREDICTION_FILES_DIR"])
    tmp = Path(server.extra_env["TMPDIR"])
    wait_until(
        lambda: not any(files.iterdir()) and not files_left(tmp),
        timeout=15,
        what="the prediction's files to be deleted",
    )
    assert working_files(server) == WORKING_FILES[id(server)]


def closing(body: dict[str, Any]) -> tuple[str, int]:
    """(outcome, frames) of the producer's closing line in a prediction's logs."""
    found = CLOSING.findall(body.get("logs") or "")
    assert len(found) == 1, body.get("logs")
    return found[0][0], int(found[0][1])


# ── frames in order, then the MP4 ─────────────────────────────────────────────────────────────


@server
def test_frames_stream_live_in_order_then_an_mp4_of_them_all(local: CogServer) -> None:
    inputs = {"prompt": PROMPT, "frames": 10, "fps": 3, "seed": 7}
    events = list(local.predict_stream(inputs, timeout=120))
    outputs = [e.data["chunk"] for e in events if e.event == "output"]
    completed = events[-1]
    assert completed.event == "completed"
    assert completed.data["status"] == "succeeded", completed.data.get("error")
    check_video([fetched(local, o) for o in outputs], 10, 7, 3)
    assert closing(completed.data) == ("done", 10)
    metrics = completed.data["metrics"]
    assert metrics["frames"] == 10
    assert metrics["encode_ms"] > 0  # recorded by the pool threads, on this prediction
    nothing_left(local)


@server
def test_uploaded_frames_sort_back_into_order_by_name(uploading: CogServer) -> None:
    code, body = uploading.predict(
        {"prompt": PROMPT, "frames": 9, "fps": 3, "seed": 8}, timeout=120
    )
    assert code == 200, body
    assert body["status"] == "succeeded", body.get("error")
    # In the order the uploads finished; the names sort back (docs/files.md, "Order").
    urls = sorted(body["output"], key=uploaded_name)
    assert [uploaded_name(u) for u in urls] == [f"frame-{i:05d}.jpg" for i in range(9)] + [
        "video.mp4"
    ]
    check_video([fetched(uploading, u) for u in urls], 9, 8, 3)
    assert closing(body) == ("done", 9)
    nothing_left(uploading)


# ── closing work on cancel ────────────────────────────────────────────────────────────────────

LONG = {"prompt": PROMPT, "frames": 1000, "fps": 24}


@server
def test_a_cancelled_prediction_over_sse_ends_with_the_closing_line_and_no_file(
    local: CogServer,
) -> None:
    id_ = f"video-{uuid.uuid4().hex[:10]}"
    outputs = 0
    completed: dict[str, Any] = {}
    for event in local.predict_stream({**LONG, "seed": 21}, timeout=120, id=id_):
        if event.event == "output":
            outputs += 1
            if outputs == 3:
                assert local.cancel(id_)[0] == 200
        elif event.event == "completed":
            completed = event.data
    assert completed["status"] == "canceled"
    outcome, made = closing(completed)  # the finally's line, in the completed event
    assert outcome == "cancelled"
    assert 3 <= made < 1000
    assert completed["metrics"]["frames"] == made  # and its metric
    nothing_left(local)


@server
def test_a_cancelled_prediction_with_uploads_carries_the_closing_line_in_its_webhook(
    uploading: CogServer,
) -> None:
    id_ = f"video-{uuid.uuid4().hex[:10]}"
    code, body = uploading.predict_async(id_, {**LONG, "seed": 22})
    assert code == 202, body
    wait_until(
        lambda: len((uploading.get(id_) or {}).get("output") or ()) >= 3,
        timeout=60,
        what="three frames",
    )
    assert uploading.cancel(id_)[0] == 200
    final = uploading.wait(id_, timeout=30)
    assert final["status"] == "canceled"
    outcome, made = closing(final)
    assert outcome == "cancelled"
    assert 3 <= made < 1000
    assert final["metrics"]["frames"] == made
    nothing_left(uploading)


# ── why the example's pool is a ContextThreadPoolExecutor ─────────────────────────────────────

# A predictor that hands items to an OrderedStage on a plain ThreadPoolExecutor or on a
# ContextThreadPoolExecutor, then submits one more call to the same pool directly; every call
# prints a line and counts a metric (docs/bridge.md, "Which executor").
EXECUTORS_PROBE = """
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import cog
from cog import BaseRunner, Input, current_scope, streaming

import coglet_cancel
from threading_utils import ContextThreadPoolExecutor, Emit, OrderedStage, generator_from_callback


def work(kind: str, i: int) -> str:
    print(f"{kind} pool line {i}")
    scope: Any = current_scope()
    scope.record_metric("pool_calls", 1, mode="incr")
    return f"{i} "


@generator_from_callback()
def produce(emit: Emit[object], kind: str) -> None:
    pool = ContextThreadPoolExecutor(2) if kind == "context" else ThreadPoolExecutor(2)
    with pool, OrderedStage(emit, pool, max_pending=4) as stage:
        for i in range(6):
            stage.submit(work, kind, i)
        pool.submit(work, kind + " direct", 99).result()


class Predictor(BaseRunner):
    def setup(self) -> None:
        coglet_cancel.install()

    @streaming
    @cog.concurrent(max=2)
    async def run(self, kind: str = Input(default="context")) -> Iterator[str]:
        return cast(Iterator[str], produce(kind))
"""


@server
def test_a_plain_pool_keeps_the_stages_lines_but_loses_a_direct_calls(
    module_cog_servers: CogServers, tmp_path: Path
) -> None:
    (tmp_path / "executors_probe.py").write_text(EXECUTORS_PROBE)
    probe = module_cog_servers.start(
        "executors_probe.py:Predictor", source_dir=tmp_path, concurrency=2
    )
    for kind in ("plain", "context"):
        code, body = probe.predict({"kind": kind}, timeout=60)
        assert code == 200, body
        assert body["status"] == "succeeded", body.get("error")
        assert body["output"] == [f"{i} " for i in range(6)]
        logs = body["logs"]
        # the stage's hand-offs run under the prediction's context on either executor
        assert [f"{kind} pool line {i}" in logs for i in range(6)] == [True] * 6
        # a call submitted to the pool directly: only a ContextThreadPoolExecutor carries it
        assert (f"{kind} direct pool line 99" in logs) == (kind == "context"), logs
        # (a plain pool's direct call counts its metric on the prediction that ran last: this
        # one when it runs alone, another one beside it: docs/bridge.md, "Which executor")
        assert body["metrics"]["pool_calls"] >= 6
    assert body["metrics"]["pool_calls"] == 7  # the ContextThreadPoolExecutor's: all on it


# ── the model and the producer, in-process ────────────────────────────────────────────────────


def test_the_same_seed_gives_the_same_frames_and_the_prompt_changes_them() -> None:
    decoder = video_predict.build_decoder()
    with torch.inference_mode():
        first = list(video_predict.render(decoder, PROMPT, 3, 4, 8))
        again = list(video_predict.render(video_predict.build_decoder(), PROMPT, 3, 4, 8))
        other = list(video_predict.render(decoder, "another prompt", 3, 4, 8))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    assert first[0].shape == (3, video_predict.SIZE, video_predict.SIZE)
    assert not torch.equal(first[0], first[1])  # it moves


def test_the_model_stops_before_the_next_frame_and_the_mp4_writer_once_asked(
    tmp_path: Path,
) -> None:
    decoder = video_predict.build_decoder()
    made: list[torch.Tensor] = []
    with torch.inference_mode():
        for frame in video_predict.render(decoder, PROMPT, 1, 50, 8, lambda: len(made) >= 3):
            made.append(frame)
    assert len(made) == 3
    pixels = [video_predict.to_pixels(f) for f in made]
    assert not video_predict.write_mp4(tmp_path / "v.mp4", pixels, 8, lambda: True)
    assert video_predict.write_mp4(tmp_path / "w.mp4", pixels, 8, lambda: False)
    assert iio.imread(tmp_path / "w.mp4", plugin="FFMPEG", index=None).shape[0] == 3


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """The example's Predictor with its model (not `setup()`: that patches this process for
    coglet's cancel and sets torch's threads), and the directory its files go to."""
    files = tmp_path_factory.mktemp("video-files")
    instance = video_predict.Predictor()
    instance.decoder = video_predict.build_decoder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREDICTION_FILES_DIR", str(files))
        yield instance, files


def receive(stream: Generator[Any, None, None], leave_after: int) -> list[str]:
    """The names of the files a consumer receives before it leaves (after `leave_after`; 0:
    it reads to the end), then closes the stream; the items themselves are dropped."""
    names = []
    try:
        for item in stream:
            names.append(item.name)
            if len(names) == leave_after:
                break
    finally:
        stream.close()
    return names


def encoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("jpeg")]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.integers(1, 12), leave_after=st.integers(0, 14))
def test_the_producer_sends_frames_in_order_and_a_consumer_that_leaves_leaves_nothing(
    predictor: tuple[Any, Path], frames: int, leave_after: int
) -> None:
    instance, files = predictor
    received = receive(instance._film(PROMPT, frames, 4, 5), leave_after)
    names = [f"frame-{i:05d}.jpg" for i in range(frames)] + ["video.mp4"]
    assert received == names[: len(received)]  # in order, none skipped
    if leave_after == 0 or leave_after > frames:
        assert received == names  # read to the end: every frame, then the video
    # No thread outlives its stream: close() returned once the producer ended, whose pool's
    # `with` joined its threads.
    assert encoder_threads() == []
    # Every file is deleted: unsent ones at the block's end or when dropped from the queue.
    wait_until(lambda: not files_left(files), timeout=10, what="the frames to be deleted")
