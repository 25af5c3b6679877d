"""The contract, run against the template's probe predictors that stand for models no example
shows, each with its contract file in tests/predictors/ (tests/contract_runs.py).

tests/predictors/files_contract.py: a fork that takes file inputs and guards them with
coglet_inputs. tests/predictors/pool_contract.py (pool threads printing beside the producer) is
not run here: tests/test_fork_drill.py's second fork serves its predictor as predict.py with it as
tests/contract.py, the same run.
"""

from __future__ import annotations

import pytest
from cog_server import REPO_ROOT
from contract_runs import contract_runs, run_contract

pytestmark = [pytest.mark.slow, pytest.mark.first, pytest.mark.server, pytest.mark.timeout(480)]

CONTRACTS = sorted(
    p.relative_to(REPO_ROOT).as_posix()
    for p in REPO_ROOT.glob("tests/predictors/*_contract.py")
    if p.name != "pool_contract.py"
)


@pytest.mark.parametrize(("contract", "uploads"), contract_runs(CONTRACTS))
def test_the_probe_keeps_the_contract(contract: str, uploads: str) -> None:
    run_contract(contract, uploads)


def test_the_probe_contracts_are_run() -> None:
    assert "tests/predictors/files_contract.py" in CONTRACTS
