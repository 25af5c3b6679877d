"""examples/caption_predict.py on the real server: what its contract does not check.

The contract (examples/caption_contract.py, run by tests/examples/test_examples_contract.py) covers
isolation, cancel, file inputs as data URIs and URLs, and refused server paths. Here: the
captions describe the images sent, bad files fail by name, and a cancelled prediction keeps its
closing log line and leaves no file behind.
"""

from __future__ import annotations

import base64
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from cog_server import REPO_ROOT, CogServer
from conftest import CogServers, wait_until
from PIL import Image

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]


def image(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"


@pytest.fixture(scope="module")
def server(module_cog_servers: CogServers, tmp_path_factory: pytest.TempPathFactory) -> CogServer:
    tmp = tmp_path_factory.mktemp("caption-tmp")
    return module_cog_servers.shared(
        "examples/caption_predict.py:Predictor",
        source_dir=REPO_ROOT,
        concurrency=4,
        env={"TMPDIR": str(tmp)},
    )


def files_left(server: CogServer) -> list[Path]:
    return [p for p in Path(server.extra_env["TMPDIR"]).rglob("*") if p.is_file()]


def test_each_image_gets_a_caption_that_describes_it_in_order(server: CogServer) -> None:
    inputs = {
        "image": image((250, 20, 20)),
        "images": [image((20, 20, 220), (64, 48), "JPEG"), image((200, 220, 250), fmt="WEBP")],
        "max_words": 5,
    }
    code, body = server.predict(inputs)
    assert (code, body["status"]) == (200, "succeeded"), body
    captions: list[dict[str, Any]] = body["output"]
    assert [c["index"] for c in captions] == [0, 1, 2]
    assert [(c["width"], c["height"]) for c in captions] == [(40, 30), (64, 48), (40, 30)]
    assert captions[0]["caption"].startswith("a dark red image: ")
    assert captions[1]["caption"].startswith("a dark blue image: ")
    assert captions[2]["caption"].startswith("a bright ")
    assert all(len(c["caption"].split(": ")[1].split()) == 5 for c in captions)
    logs = body["logs"].splitlines()
    assert sorted(line for line in logs if line.startswith("decoded ")) == [
        "decoded image: 40x30",
        "decoded images[0]: 64x48",
        "decoded images[1]: 40x30",
    ]
    assert body["metrics"]["images_captioned"] == 3
    assert files_left(server) == []


@pytest.mark.parametrize(
    ("inputs", "error"),
    [
        ({"images": ["data:image/png;base64,AAAA"]}, "images[0]: not an image this model can read"),
        ({"images": [image((1, 2, 3))] * 16}, "give 1 to 16 images: got 17"),
    ],
)
def test_a_bad_input_fails_by_name(server: CogServer, inputs: dict[str, Any], error: str) -> None:
    code, body = server.predict({"image": image((9, 9, 9))} | inputs)
    assert (code, body["status"]) == (200, "failed"), body
    assert error in body["error"]
    assert files_left(server) == []


def test_a_cancel_keeps_the_closing_line_and_leaves_no_file(server: CogServer) -> None:
    big = [image((i, 2 * i, 3 * i), (1024, 768)) for i in range(15)]
    id_ = f"caption-{uuid.uuid4().hex[:8]}"
    assert server.predict_async(id_, {"image": big[0], "images": big, "max_words": 64})[0] == 202
    wait_until(lambda: bool((server.get(id_) or {}).get("output")), timeout=60, what="a caption")
    code = server.cancel(id_)[0]
    final = server.wait(id_, timeout=30)
    assert (code, final["status"]) in ((200, "canceled"), (404, "succeeded")), final
    assert any(line.startswith("captioned ") for line in final["logs"].splitlines()), final["logs"]
    wait_until(lambda: files_left(server) == [], timeout=10, what="the input files to go")
    code, body = server.predict({"image": image((5, 5, 5))})  # the slot serves the next one
    assert (code, body["status"]) == (200, "succeeded"), body
