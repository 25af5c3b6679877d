"""scripts/schema.py writes the schema coglet needs for input validation (422) and SSE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cog_server import stage_predictor, write_schema
from conftest import PREDICTORS, CogServers


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
