"""scripts/schema.py writes the schema coglet needs for input validation (422) and SSE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schema
from cog_server import stage_predictor, write_schema
from cog_static import StaticInput, StaticPredictor, check
from conftest import PREDICTORS, CogServers

REPO = Path(__file__).resolve().parent.parent


def schema_for(predictor: str, tmp_path: Path) -> Any:
    cwd = stage_predictor(PREDICTORS / predictor.partition(":")[0], tmp_path)
    return json.loads(write_schema(predictor, cwd).read_text())


def test_a_streaming_generator_predictor(tmp_path: Path) -> None:
    schema = schema_for("bridge.py:GeneratorPredictor", tmp_path)
    assert schema["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
    inputs = schema["components"]["schemas"]["Input"]
    assert inputs["required"] == ["n", "tag"]
    assert inputs["properties"]["n"]["type"] == "integer"
    assert inputs["properties"]["tag"]["type"] == "string"
    output = schema["components"]["schemas"]["Output"]
    assert output["type"] == "array"
    assert output["x-cog-array-type"] == "iterator"


def test_a_predictor_without_cog_streaming_does_not_advertise_sse(tmp_path: Path) -> None:
    schema = schema_for("bridge.py:ThreadPredictor", tmp_path)
    assert "x-cog-streaming" not in schema["paths"]["/predictions"]["post"]
    assert schema["components"]["schemas"]["Output"]["type"] == "string"


@pytest.mark.timeout(60)
def test_the_written_bounds_are_the_ones_cog_build_writes(tmp_path: Path) -> None:
    # cog's introspection holds ge=0.0 as 0.0 and le=2**63-1 exactly; the CLI reads the text as
    # a float64 and writes it with Go's encoding/json: 0, 2 and 9223372036854776000.
    (tmp_path / "bounds.py").write_text(
        "from cog import BaseRunner, Input\n\n\nclass Predictor(BaseRunner):\n"
        "    def run(\n        self,\n"
        "        t: float = Input(default=0.5, ge=0.0, le=2.0),\n"
        "        s: str = Input(default='', max_length=65536),\n"
        "        seed: int | None = Input(default=None, ge=0, le=9223372036854775807),\n"
        "    ) -> str:\n        return s\n"
    )
    written = json.loads(write_schema("bounds.py:Predictor", tmp_path).read_text())
    props = written["components"]["schemas"]["Input"]["properties"]
    got = {
        name: {k: v for k, v in p.items() if k in schema.BOUND_KEYS} for name, p in props.items()
    }
    assert got == {
        "t": {"minimum": 0, "maximum": 2},
        "s": {"maxLength": 65536},
        "seed": {"minimum": 0, "maximum": 9223372036854776000},
    }
    assert all(type(v) is int for bounds in got.values() for v in bounds.values())


@pytest.mark.timeout(60)
def test_predict_py_schema_carries_the_clis_bounds_and_streaming(tmp_path: Path) -> None:
    cwd = stage_predictor(REPO / "predict.py", tmp_path)
    written = json.loads(write_schema("predict.py:Predictor", cwd).read_text())
    static = check("predict.py:Predictor", roots=[REPO])
    post = written["paths"]["/predictions"]["post"]
    assert post.get("x-cog-streaming", False) is static.streaming
    props = written["components"]["schemas"]["Input"]["properties"]
    for name, item in static.inputs.items():
        assert {k: props[name][k] for k in schema.BOUND_KEYS if k in props[name]} == item.bounds


def test_a_bound_that_differs_from_the_clis_is_refused() -> None:
    static = StaticPredictor(
        path="predict.py",
        name="Predictor",
        method="run",
        line=3,
        is_async=True,
        streaming=False,
        concurrency_max=None,
        inputs={"n": StaticInput("n", 5, {"maximum": 2048})},
        warnings=[],
    )
    document = {"components": {"schemas": {"Input": {"properties": {"n": {"maximum": 2048.0}}}}}}
    with pytest.raises(ValueError, match=r"^predict\.py:5: n: the schema has"):
        schema.verify_cli_bounds(document, static)
    document["components"]["schemas"]["Input"]["properties"]["n"]["maximum"] = 2048
    schema.verify_cli_bounds(document, static)


@pytest.mark.server
@pytest.mark.timeout(60)
def test_coglet_validates_and_streams_only_with_the_schema(cog_servers: CogServers) -> None:
    with_schema = cog_servers.start("bridge.py:GeneratorPredictor")
    without = cog_servers.start("bridge.py:GeneratorPredictor", schema=False)

    code, body = with_schema.predict({"n": "three", "tag": "t"})
    assert code == 422
    assert body["detail"][0]["loc"] == ["body", "input", "n"]
    assert with_schema.predict({"tag": "t"})[0] == 422
    assert [e.event for e in with_schema.predict_stream({"n": 1, "tag": "t"})][-1] == "completed"

    code, body = without.predict({"n": "three", "tag": "t"})
    assert (code, body["status"]) == (200, "failed")  # reaches run() and fails there
    assert without.openapi()[1] == {"error": "OpenAPI schema not available"}
    with pytest.raises(RuntimeError, match="406"):
        list(without.predict_stream({"n": 1, "tag": "t"}))
