"""Streamed structured outputs: `run() -> Iterator[Model]`, a cog BaseModel per item.

`cog build` keeps it (replicate/cog `pkg/schema/schema_type.go` resolveGenericSchemaType;
`pkg/schema/python/parser_test.go` TestIteratorOfBaseModelOutput) though cog 0.23.1's Python
introspection refuses it ("unsupported Cog type Chunk"). These tests pin what coglet 0.23.1 does
with it, served with the schema `make schema` writes for it: it streams each item as one JSON
object (`crates/coglet-python/src/output.rs`, make_encodeable: a dataclass through
`dataclasses.asdict`), live in every shape that streams `Iterator[str]` live. When a coglet
release changes that, these fail: then revisit docs/schema.md and scripts/schema.py.
"""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cog_server import write_schema
from conftest import CogServers, succeeded

PROBE = "structured_probe.py"

# What the CLI writes for `Iterator[Chunk]` (tests/predictors/structured_probe.py): an iterator's
# coreSchema whose items are the model's object schema, without a title (jsonSchema(false));
# fields titled by TitleCase; a field with a literal default or an Optional one not required,
# an Optional one nullable (schema_type.go coreSchema, resolveModelToSchemaType,
# resolveFieldSchemaType).
CHUNK_ITEM = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "title": "Text"},
        "index": {"type": "integer", "title": "Index"},
        "token_count": {"type": "integer", "title": "Token Count"},
        "score": {"type": "number", "title": "Score"},
        "note": {"type": "string", "nullable": True, "title": "Note"},
    },
    "required": ["text", "index", "token_count"],
}
CHUNK_OUTPUT = {
    "title": "Output",
    "type": "array",
    "items": CHUNK_ITEM,
    "x-cog-array-type": "iterator",
}
LIVE_SHAPES = ["SyncYield", "SyncReturned", "AsyncReturned"]


def chunk(i: int, n: int) -> dict[str, Any]:
    """The JSON coglet sends for the probe's chunk `i` of `n`."""
    note = "last" if i == n - 1 else None
    return {"text": f"w{i}", "index": i, "token_count": i + 1, "score": 0.0, "note": note}


def output_schema(tmp_path: Path, source: str, name: str = "Predictor") -> Any:
    (tmp_path / "vector.py").write_text(textwrap.dedent(source))
    written = json.loads(write_schema(f"vector.py:{name}", tmp_path).read_text())
    return written["components"]["schemas"]["Output"]


# -- make schema ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_make_schema_writes_the_clis_output_for_an_iterator_of_a_cog_model(
    tmp_path: Path,
) -> None:
    output = output_schema(
        tmp_path,
        """
        from collections.abc import Iterator

        from cog import BaseModel, BaseRunner, streaming

        class Chunk(BaseModel):
            text: str
            index: int
            token_count: int
            score: float = 0.0
            note: str | None = None

        class Predictor(BaseRunner):
            @streaming
            def run(self, n: int = 3) -> Iterator[Chunk]:
                yield Chunk(text="", index=0, token_count=0)
        """,
    )
    assert output == CHUNK_OUTPUT


@pytest.mark.timeout(60)
def test_make_schema_writes_the_clis_output_for_an_async_iterator_of_a_pydantic_model(
    tmp_path: Path,
) -> None:
    # parser_test.go TestIteratorOfBaseModelOutput (a pydantic model), as an AsyncIterator
    output = output_schema(
        tmp_path,
        """
        from typing import AsyncIterator

        from cog import BaseRunner
        from pydantic import BaseModel

        class Chunk(BaseModel):
            text: str
            index: int

        class Predictor(BaseRunner):
            async def run(self, x: str) -> AsyncIterator[Chunk]:
                yield Chunk(text=x, index=0)
        """,
    )
    assert output == {
        "title": "Output",
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "text": {"type": "string", "title": "Text"},
                "index": {"type": "integer", "title": "Index"},
            },
            "required": ["text", "index"],
        },
        "x-cog-array-type": "iterator",
    }


# -- coglet 0.23.1 serving it -----------------------------------------------------------------


@pytest.mark.server
@pytest.mark.timeout(120)
@pytest.mark.parametrize("shape", LIVE_SHAPES)
def test_coglet_streams_each_model_item_as_a_json_object(
    cog_servers: CogServers, tmp_path: Path, shape: str
) -> None:
    server = cog_servers.start(f"{PROBE}:{shape}")  # with the schema `make schema` writes
    assert server.setup_health["status"] == "READY"
    assert server.openapi()[1]["components"]["schemas"]["Output"] == CHUNK_OUTPUT

    # Each chunk after the first is made only once the previous one reached this client (the
    # probe's gate): outputs collected to the end would fail the prediction instead.
    gate = tmp_path / "gate"
    gate.mkdir()
    n = 4
    events = []
    for event in server.predict_stream({"n": n, "gate": str(gate)}, timeout=90):
        events.append(event)
        if event.event == "output":
            (gate / str(event.data["index"])).touch()
    assert [e.event for e in events] == ["start"] + ["output"] * n + ["completed"], events
    assert [e.data for e in events[1:-1]] == [{"chunk": chunk(i, n), "index": i} for i in range(n)]
    completed = events[-1].data
    assert completed["status"] == "succeeded", completed
    assert completed["output"] == [chunk(i, n) for i in range(n)]

    body = succeeded(server, n=2)
    assert body["output"] == [chunk(0, 2), chunk(1, 2)]


@pytest.mark.server
@pytest.mark.timeout(120)
def test_an_async_generator_of_models_is_collected_like_any_other(
    cog_servers: CogServers, tmp_path: Path
) -> None:
    # As for Iterator[str] (docs/limitations.md): an async generator run() is run to its end
    # before its first item is sent, so the gated probe gives up on its second chunk.
    server = cog_servers.start(f"{PROBE}:AsyncYield")
    events = list(server.predict_stream({"n": 3}))
    assert [e.data for e in events if e.event == "output"] == [
        {"chunk": chunk(i, 3), "index": i} for i in range(3)
    ]
    assert events[-1].data["output"] == [chunk(i, 3) for i in range(3)]

    gate = tmp_path / "gate"
    gate.mkdir()
    code, body = server.predict({"n": 3, "gate": str(gate), "wait": 1.0})
    assert (code, body["status"]) == (200, "failed"), body
    assert "chunk 0 had not reached the client after 1.0s: not streamed" in body["error"]


@pytest.mark.server
@pytest.mark.timeout(120)
def test_a_file_inside_a_model_item_is_inlined_even_with_an_upload_url(
    cog_servers: CogServers,
) -> None:
    # coglet uploads a yielded Path (orchestrator.rs FileOutput), but a Path inside a model goes
    # through the worker's make_encodeable and encode_files, which read it into a data URI
    # (crates/coglet-python/src/output.rs; predictor.rs send_output_item): nothing is uploaded.
    server = cog_servers.start(f"{PROBE}:Files", uploads=True)
    assert server.openapi()[1]["components"]["schemas"]["Output"]["items"] == {
        "type": "object",
        "properties": {
            "index": {"type": "integer", "title": "Index"},
            "file": {"type": "string", "format": "uri", "title": "File"},
        },
        "required": ["index", "file"],
    }
    events = list(server.predict_stream({"n": 2}))
    items = [e.data["chunk"] for e in events if e.event == "output"]
    assert [item["index"] for item in items] == [0, 1]
    for item in items:
        assert_inlined(item)
    assert events[-1].data["output"] == items
    assert server.uploads is not None
    assert server.uploads.started == 0

    # the same for a single model output
    single = cog_servers.start(f"{PROBE}:OneFile", uploads=True)
    assert_inlined(succeeded(single, index=7)["output"])
    assert single.uploads is not None
    assert single.uploads.started == 0


def assert_inlined(item: dict[str, Any]) -> None:
    """`item["file"]` is a data URI of the probe's text file for `item["index"]`."""
    head, _, data = item["file"].partition(";base64,")
    assert head == "data:text/plain", item
    assert base64.b64decode(data) == f"chunk {item['index']}".encode()
