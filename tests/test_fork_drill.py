"""The fork drill: the README's "Start your own model" steps, carried out on a copy of this tree.

A fork is this template's main user. The drill copies the tracked files to a temporary
directory, runs the README's numbered steps there exactly as written (each step's `sh` block,
in order: the worked case replaces the demo model with examples/transformers_predict.py), then
runs the lint and the template's tests that depend on `predict.py` in that copy, reusing this
tree's venv; then does the same with a model of the fork's own in place of the worked case
(tests/predictors/pool_probe.py, other inputs, its own tests/contract.py). The steps delete
this file: a fork has nothing left to drill. A step that is missing or wrong in the README
fails it, so forkability cannot regress unnoticed. The rest of the kept tests do not read
`predict.py`; the drill only checks that they still import (`--collect-only`), to keep its
cost near two minutes on 2 cores.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cog_server import REPO_ROOT
from contract_runs import FUZZ_SECONDS

pytestmark = [pytest.mark.slow, pytest.mark.first, pytest.mark.server, pytest.mark.timeout(480)]

SECTION = re.compile(r"^## Start your own model\n(.*?)(?=^## )", re.M | re.S)
STEP = re.compile(r"^(\d+)\. ", re.M)
BLOCK = re.compile(r"^ {3}```sh\n(.*?)^ {3}```\n", re.M | re.S)
# The template's tests that read predict.py, its schema or tests/contract.py.
PREDICT_PY_TESTS = ["tests/test_contract.py", "tests/test_cog_static.py", "tests/test_schema.py"]
# In the contract tests, those that serve a fixed probe predictor, not predict.py: run here.
NOT_PREDICT_PY = "not cancel_check_fails and not input_check_names and not server_path_check_fails"
# A model with other inputs than any example, and its contract: what the second fork serves.
PROBE = REPO_ROOT / "tests" / "predictors" / "pool_probe.py"
PROBE_CONTRACT = REPO_ROOT / "tests" / "predictors" / "pool_contract.py"


def fork_steps(readme: str) -> list[tuple[int, str]]:
    """(number, shell commands) of each numbered step of the README's fork section."""
    match = SECTION.search(readme)
    assert match, 'README.md has no "## Start your own model" section'
    section = match.group(1)
    starts = [(int(m.group(1)), m.start()) for m in STEP.finditer(section)]
    assert [n for n, _ in starts] == list(range(1, len(starts) + 1)), "steps numbered 1, 2, ..."
    steps = []
    for (number, start), (_, end) in zip(starts, [*starts[1:], (0, len(section))], strict=True):
        blocks = BLOCK.findall(section[start:end])
        assert len(blocks) <= 1, f"step {number} has more than one sh block"
        steps.append((number, blocks[0] if blocks else ""))
    return steps


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in out.split("\0") if name and (REPO_ROOT / name).is_file()]


def copy_tree(dest: Path) -> None:
    for name in tracked_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, dest / name)
    (dest / ".venv").symlink_to(Path(sys.prefix))  # reuse the venv, as a fork's clone would
    cache = REPO_ROOT / ".mypy_cache"
    if cache.is_dir():  # mypy re-checks only what the fork changed
        shutil.copytree(cache, dest / ".mypy_cache")


def run(cmd: list[str], cwd: Path, what: str, **env_vars: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COG_"))}
    env |= env_vars
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{what} failed in the fork:\n{proc.stdout[-6000:]}{proc.stderr}"


def test_the_readme_lists_numbered_steps_with_their_commands() -> None:
    steps = fork_steps((REPO_ROOT / "README.md").read_text())
    assert len(steps) >= 3
    assert any("predict.py" in commands for _, commands in steps)


@pytest.fixture(scope="module")
def fork(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the template after the README's steps, and nothing else."""
    fork = tmp_path_factory.mktemp("drill") / "fork"
    copy_tree(fork)
    for number, commands in fork_steps((fork / "README.md").read_text()):
        if commands:
            run(["bash", "-euo", "pipefail", "-c", commands], fork, f"README step {number}")
    assert not (fork / "model").exists(), "the steps must delete the demo model"
    # The drill rehearses forking the template; in a fork there is nothing left to drill.
    assert not (fork / "tests" / "test_fork_drill.py").exists(), "the steps must delete the drill"
    # The examples' tests are ours, not a fork's: its make test does not pay for them.
    assert not (fork / "tests" / "examples").exists(), "the steps must delete the examples' tests"
    return fork


def check_fork(fork: Path) -> None:
    """What a fork's `make test` runs that depends on its predict.py: lint, collection, tests."""
    run(["make", "lint"], fork, "make lint")
    run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider"],
        fork,
        "collecting the kept tests",
    )
    run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "-k",
            NOT_PREDICT_PY,
            *PREDICT_PY_TESTS,
        ],
        fork,
        "the template's tests of predict.py",
        # The schema fuzzer's budget of a nested contract run (tests/contract_runs.py): the drill
        # checks that the steps give a working fork; tests/test_contract.py fuzzes for 30 s.
        CONTRACT_FUZZ_SECONDS=FUZZ_SECONDS,
    )


def test_a_fork_to_the_transformers_example_is_green(fork: Path) -> None:
    check_fork(fork)


def test_a_fork_with_a_model_of_its_own_is_green(fork: Path, tmp_path: Path) -> None:
    """The steps, then a model no example shows, with other inputs (pool threads that print),
    loading its weights from `weights/` beside predict.py."""
    own = tmp_path / "own"
    shutil.copytree(fork, own, symlinks=True)
    shutil.copy2(PROBE, own / "predict.py")
    shutil.rmtree(own / "weights")  # the worked case's (step 3): the fork's own go there
    (own / "weights").mkdir()
    shutil.copy2(PROBE.parent / "weights" / "pool_words.txt", own / "weights")
    contract = PROBE_CONTRACT.read_text().replace(
        f'PREDICTOR = "{PROBE.relative_to(REPO_ROOT).as_posix()}:Predictor"',
        'PREDICTOR = "predict.py:Predictor"',
    )
    assert 'PREDICTOR = "predict.py:Predictor"' in contract
    (own / "tests" / "contract.py").write_text(contract)
    check_fork(own)


def test_every_template_test_file_is_in_the_makefiles_template_tests() -> None:
    """`make check` runs a fork's own tests: every test file not in the Makefile's
    TEMPLATE_TESTS. Here (no fork yet) every top-level test file is the template's."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    match = re.search(r"^TEMPLATE_TESTS := \$\(addprefix tests/,(.*?)\)$", makefile, re.M | re.S)
    assert match, "the Makefile has no TEMPLATE_TESTS"
    listed = set(match.group(1).replace("\\", " ").split())
    present = {path.name for path in (REPO_ROOT / "tests").glob("test_*.py")}
    assert present - listed == set(), "template test files missing from TEMPLATE_TESTS"
