"""The template's contract, run against each example (and probe) with a contract file of its own.

`examples/<name>_contract.py` is what a fork serving that example would put in tests/contract.py.
Each runs tests/test_contract.py unchanged in a pytest of its own (CONTRACT=that file), once with
file outputs inlined as data URIs (local runs) and once uploaded to a receiver on 127.0.0.1 (as on
Replicate): the contract compares outputs by content either way.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cog_server import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.timeout(480)]

# The examples' contracts, and those of the probes that stand for models no example shows
# (tests/predictors/pool_contract.py: pool threads printing beside the producer, a 0.3 s stream).
CONTRACTS = sorted(
    path.relative_to(REPO_ROOT).as_posix()
    for pattern in ("examples/*_contract.py", "tests/predictors/*_contract.py")
    for path in REPO_ROOT.glob(pattern)
)
# The checks' own fault tests serve fixed probes, not the example: run once, in the suite.
NOT_THE_EXAMPLE = "not cancel_check_fails and not input_check_names and not server_path_check_fails"


@pytest.mark.parametrize("uploads", ["0", "1"], ids=["data URIs", "uploads"])
@pytest.mark.parametrize("contract", CONTRACTS)
def test_the_example_keeps_the_contract(contract: str, uploads: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    # The schema fuzzer: 5 s per example and mode (the template's own contract run gives 30).
    env |= {"CONTRACT": contract, "CONTRACT_UPLOADS": uploads, "CONTRACT_FUZZ_SECONDS": "5"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            NOT_THE_EXAMPLE,
            "tests/test_contract.py",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"{contract}:\n{proc.stdout[-8000:]}{proc.stderr[-2000:]}"


def test_the_examples_with_file_outputs_ship_a_contract() -> None:
    assert "examples/image_contract.py" in CONTRACTS
    assert "examples/audio_contract.py" in CONTRACTS
    assert "examples/video_contract.py" in CONTRACTS
    assert "tests/predictors/pool_contract.py" in CONTRACTS
