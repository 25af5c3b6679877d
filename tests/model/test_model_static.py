"""The literals `cog build` reads from predict.py agree with the constants the demo model uses."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from cog_static import check

REPO = Path(__file__).resolve().parents[2]
PROBES = Path(__file__).resolve().parent / "predictors"


def _constants(path: Path) -> dict[str, Any]:
    values = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return values


def test_the_literals_cog_build_reads_equal_predict_py_constants() -> None:
    constants = _constants(REPO / "predict.py")
    info = check("predict.py:Predictor", roots=[REPO])
    assert info.concurrency_max == constants["MAX_CONCURRENCY"]
    assert info.inputs["max_new_tokens"].bounds["maximum"] == constants["MAX_NEW_TOKENS"]
    assert info.inputs["prompt"].bounds["maxLength"] == constants["MAX_PROMPT_CHARS"]


@pytest.mark.parametrize("probe", ["template_probes.py", "cancel_probes.py"])
def test_the_model_probes_pass_the_static_check(probe: str) -> None:
    source = (PROBES / probe).read_text()
    classes = [
        node.name
        for node in ast.parse(source).body
        if isinstance(node, ast.ClassDef)
        and node.name.endswith("Probe")
        and not node.name.startswith("_")
    ]
    assert classes
    for name in classes:
        check(f"tests/model/predictors/{probe}:{name}", roots=[REPO])
