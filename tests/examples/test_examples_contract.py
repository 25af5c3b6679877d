"""The template's contract, run against each worked example with its contract file.

`examples/<name>_contract.py` is what a fork serving that example would put in tests/contract.py
(with its `PREDICTOR` line changed to `predict.py:Predictor`). Each runs tests/test_contract.py
unchanged in a pytest of its own (tests/contract_runs.py): with data URIs, and uploads for those
that return files. The worked case of the README's fork steps, examples/transformers_predict.py,
has no contract file here: tests/test_fork_drill.py runs the contract on it as a fork's
predict.py.
"""

from __future__ import annotations

import pytest
from cog_server import REPO_ROOT
from contract_runs import contract_runs, returns_files, run_contract

pytestmark = [pytest.mark.slow, pytest.mark.first, pytest.mark.server, pytest.mark.timeout(480)]

CONTRACTS = sorted(
    p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob("examples/*_contract.py")
)


@pytest.mark.parametrize(("contract", "uploads"), contract_runs(CONTRACTS))
def test_the_example_keeps_the_contract(contract: str, uploads: str) -> None:
    run_contract(contract, uploads)


def test_the_examples_with_file_outputs_ship_a_contract() -> None:
    assert {
        "examples/image_contract.py",
        "examples/audio_contract.py",
        "examples/video_contract.py",
    } <= set(CONTRACTS)


def test_the_uploads_run_is_made_for_every_example_that_returns_files() -> None:
    files = {c for c in CONTRACTS if returns_files(c)}
    assert files == {
        "examples/image_contract.py",
        "examples/audio_contract.py",
        "examples/video_contract.py",
    }
