"""The template's contract, run against each example (and probe) with a contract file of its own.

`examples/<name>_contract.py` is what a fork serving that example would put in tests/contract.py.
Each runs tests/test_contract.py unchanged in a pytest of its own (CONTRACT=that file), once with
file outputs inlined as data URIs (local runs) and once uploaded to a receiver on 127.0.0.1 (as on
Replicate): the contract compares outputs by content either way.
"""

from __future__ import annotations

import ast
import os
import re
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


def returns_files(contract: str) -> bool:
    """Whether the contract's predictor returns or yields files itself (`Path`/`File` in its
    run()'s return annotation): only those go to the upload URL. A file inside a structured
    output is inlined as a data URI in both modes (docs/limitations.md), and text, numbers and
    objects are the same in both: for those the uploads run would repeat the data-URI run."""
    source = (REPO_ROOT / contract).read_text()
    match = re.search(r'^PREDICTOR = "([^":]+):(\w+)"', source, re.M)
    assert match, f"{contract}: no PREDICTOR"
    tree = ast.parse((REPO_ROOT / match.group(1)).read_text())
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == match[2]):
        for fn in cls.body:
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and fn.name in (
                "run",
                "predict",
            ):
                names = {
                    n.id
                    for n in ast.walk(fn.returns or ast.Constant(None))
                    if isinstance(n, ast.Name)
                }
                return bool(names & {"Path", "File"})
    return True  # not found statically (an inherited run()): both modes


RUNS = [
    pytest.param(contract, uploads, id=f"{contract}-{'uploads' if uploads == '1' else 'data URIs'}")
    for contract in CONTRACTS
    for uploads in (["0", "1"] if returns_files(contract) else ["0"])
]


@pytest.mark.parametrize(("contract", "uploads"), RUNS)
def test_the_example_keeps_the_contract(contract: str, uploads: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    # The schema fuzzer: 5 s per example (the template's own contract run gives 30), in the
    # data-URI run only: the uploads run sends the same inputs, only file outputs differ.
    fuzz = "5" if uploads == "0" else "0"
    env |= {"CONTRACT": contract, "CONTRACT_UPLOADS": uploads, "CONTRACT_FUZZ_SECONDS": fuzz}
    select = NOT_THE_EXAMPLE if uploads == "0" else f"{NOT_THE_EXAMPLE} and not fuzz"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            select,
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


def test_the_uploads_run_is_made_for_every_predictor_that_returns_files() -> None:
    files = {c for c in CONTRACTS if returns_files(c)}
    assert {"examples/image_contract.py", "examples/audio_contract.py"} <= files
    assert "examples/video_contract.py" in files
    assert not {"examples/caption_contract.py", "examples/embed_contract.py"} & files
