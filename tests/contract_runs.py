"""The contract (tests/test_contract.py) run on another predictor, in a pytest of its own.

A contract file names the predictor (`PREDICTOR = "path.py:Class"`) and the inputs to send, as
a fork's tests/contract.py does; `run_contract` runs tests/test_contract.py unchanged with
`CONTRACT=` that file, once with file outputs inlined as data URIs (local runs) and, for a
predictor that returns files, once uploaded to a receiver on 127.0.0.1 (as on Replicate): the
contract compares outputs by content either way. Used by tests/test_probe_contracts.py (the
template's probes) and tests/examples/test_examples_contract.py (the worked examples).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from cog_server import REPO_ROOT

# The checks' own fault tests serve fixed probes, not the contract's predictor: run once, in
# the suite.
NOT_THE_PREDICTOR = (
    "not cancel_check_fails and not input_check_names and not server_path_check_fails"
)
TESTS = "tests/test_contract.py"
# The schema fuzzer's budget in such a run (the template's own contract run gives it 30 s).
FUZZ_SECONDS = "5"


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


def contract_runs(contracts: list[str]) -> list[Any]:
    """pytest params (contract, uploads "0"/"1") of each contract's runs."""
    return [
        pytest.param(c, uploads, id=f"{c}-{'uploads' if uploads == '1' else 'data URIs'}")
        for c in contracts
        for uploads in (["0", "1"] if returns_files(c) else ["0"])
    ]


def run_contract(contract: str, uploads: str) -> None:
    """Run the contract on `contract`'s predictor; fail with its output if it fails.

    The schema fuzzer runs in the data-URI run only: the uploads run sends the same inputs, only
    file outputs differ.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    fuzz = FUZZ_SECONDS if uploads == "0" else "0"
    env |= {"CONTRACT": contract, "CONTRACT_UPLOADS": uploads, "CONTRACT_FUZZ_SECONDS": fuzz}
    select = NOT_THE_PREDICTOR if uploads == "0" else f"{NOT_THE_PREDICTOR} and not fuzz"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", select, TESTS],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"{contract}:\n{proc.stdout[-8000:]}{proc.stderr[-2000:]}"
