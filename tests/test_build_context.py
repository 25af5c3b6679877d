"""The build context (scripts/build_context.py): what `COPY . /src` puts in the image, and the
local servers that run from a copy of it, as the image runs from /src."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from build_context import context_files, ignore_patterns, report, sizes_by_entry, stage
from cog_server import REPO_ROOT, CogServer, stage_server_dir

# ── Docker's rules, on the examples of Docker's own .dockerignore documentation ──────────────

TREE = [
    "Dockerfile",
    "README.md",
    "README-secret.md",
    "README-dev.md",
    "CHANGELOG.md",
    "tempa",
    "tempb",
    "temp",
    "templates/page.html",
    "somedir/temporary.txt",
    "somedir/temp/file.txt",
    "somedir/keep.txt",
    "somedir/subdir/temporary.txt",
    "main.go",
    "pkg/lib/util.go",
    "pkg/lib/util.txt",
    "foo/bar/baz.txt",
    "foo/other.txt",
]


def kept(tmp_path: Path, ignore: str) -> set[str]:
    for name in TREE:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / ".dockerignore").write_text(ignore)
    return set(context_files(tmp_path)) - {".dockerignore", "Dockerfile"}


def test_a_comment_and_single_level_wildcards(tmp_path: Path) -> None:
    # "*/temp*" and "*/*/temp*": one and two levels below the root; "temp?": the root only.
    got = kept(tmp_path, "# comment\n*/temp*\n*/*/temp*\ntemp?\n")
    assert "somedir/temporary.txt" not in got
    assert "somedir/temp/file.txt" not in got  # a matched directory takes what is below it
    assert "somedir/subdir/temporary.txt" not in got
    assert {"tempa", "tempb"}.isdisjoint(got)
    assert {"temp", "somedir/keep.txt", "templates/page.html"} <= got


def test_double_star_matches_any_number_of_directories(tmp_path: Path) -> None:
    got = kept(tmp_path, "**/*.go\n")
    assert {"main.go", "pkg/lib/util.go"}.isdisjoint(got)
    assert "pkg/lib/util.txt" in got


def test_an_exception_brings_a_file_back(tmp_path: Path) -> None:
    got = kept(tmp_path, "*.md\n!README.md\n")
    assert {n for n in got if n.endswith(".md")} == {"README.md"}


def test_the_last_matching_line_wins(tmp_path: Path) -> None:
    # No markdown but README files, and README-secret.md stays out...
    got = kept(tmp_path, "*.md\n!README*.md\nREADME-secret.md\n")
    assert {n for n in got if n.endswith(".md")} == {"README.md", "README-dev.md"}
    # ...unless the exception comes last: then every README is in.
    got = kept(tmp_path, "*.md\nREADME-secret.md\n!README*.md\n")
    assert {n for n in got if n.endswith(".md")} == {
        "README.md",
        "README-dev.md",
        "README-secret.md",
    }


def test_a_leading_slash_changes_nothing(tmp_path: Path) -> None:
    assert kept(tmp_path, "/foo/bar\n") == kept(tmp_path, "foo/bar\n")
    assert "foo/bar/baz.txt" not in kept(tmp_path, "/foo/bar\n")
    assert "foo/other.txt" in kept(tmp_path, "/foo/bar\n")


def test_no_dockerignore_means_everything(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c.txt").write_text("c")
    assert ignore_patterns(tmp_path) == []
    assert context_files(tmp_path) == ["a/b/c.txt"]


# ── this repository's context ─────────────────────────────────────────────────────────────────


def test_the_context_leaves_out_what_the_image_does_not_need() -> None:
    files = context_files(REPO_ROOT)
    tops = {name.split("/", 1)[0] for name in files}
    for left_out in (".venv", ".venv-legacy", ".git", ".cog", "outputs", "gpu-wheels", "tests"):
        assert left_out not in tops, left_out
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]
    assert {
        "predict.py",
        "cog.yaml",
        "coglet_cancel.py",
        "coglet_inputs.py",
        "prediction_files.py",
    } <= set(files)
    assert "threading_utils/__init__.py" in files


def test_the_report_names_the_largest_folders_and_fails_over_its_budget(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert report(REPO_ROOT, budget_mib=1024) == 0
    out = capsys.readouterr().out
    sizes = sizes_by_entry(REPO_ROOT)
    assert f"largest: {', '.join(list(sizes)[:3])}" in out
    assert report(REPO_ROOT, budget_mib=sum(sizes.values()) / 2**20 / 2) == 1
    assert "over the budget" in capsys.readouterr().err


def test_stage_refuses_a_directory_in_use(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    with pytest.raises(FileExistsError):
        stage(REPO_ROOT, tmp_path)


# ── local servers run from the context, as the image runs from /src ──────────────────────────

PROBE = """
import importlib.util
import json
import os
from pathlib import Path

from cog import BaseRunner

import helpers.words


class Predictor(BaseRunner):
    def setup(self, weights: Path | str | None = None) -> None:
        # weights found from this file's own place, as a Hugging Face fork finds its folder
        self.weights = (Path(__file__).parent / "weights" / "model.json").read_text()

    def run(self) -> str:
        here = Path(__file__).parent
        return json.dumps({
            "weights": json.loads(self.weights),
            "words": helpers.words.load(),
            "cwd_is_here": Path.cwd().resolve() == here.resolve(),
            "secret": (here / "secret.txt").exists(),
            "scratch": (here / "scratch").exists(),
            "venv": (here / ".venv").exists(),
            "excluded_module": importlib.util.find_spec("scratch_module") is not None,
        })
"""
HELPER = """
from pathlib import Path


def load() -> list[str]:
    return (Path(__file__).parent / "data" / "words.txt").read_text().split()
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fork's tree: weights beside predict.py, a local package with a data file, and files
    that .dockerignore leaves out (a secret, a scratch folder, a venv, a module)."""
    root = tmp_path_factory.mktemp("fork")
    files = {
        "predict.py": PROBE,
        "helpers/__init__.py": "",
        "helpers/words.py": HELPER,
        "helpers/data/words.txt": "alpha bravo\n",
        "weights/model.json": json.dumps({"layers": 2}),
        "secret.txt": "not for the image",
        "scratch/notes.txt": "local only",
        "scratch_module.py": "X = 1\n",
        ".venv/bin/python": "",
        ".dockerignore": "secret.txt\nscratch\nscratch_module.py\n.venv\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def served(project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    cwd = stage_server_dir(tmp_path_factory.mktemp("src") / "src", root=project)
    with CogServer("predict.py:Predictor", cwd=cwd) as server:
        code, body = server.predict({})
    assert code == 200, body
    assert body["status"] == "succeeded", body
    result: dict[str, object] = json.loads(body["output"])
    return result


@pytest.mark.server
def test_a_predictor_loads_weights_relative_to_its_own_file(served: dict[str, object]) -> None:
    assert served["weights"] == {"layers": 2}
    assert served["cwd_is_here"] is True  # the server runs where predict.py is, as in /src


@pytest.mark.server
def test_a_predictor_imports_a_local_module_that_reads_a_data_file(
    served: dict[str, object],
) -> None:
    assert served["words"] == ["alpha", "bravo"]


@pytest.mark.server
def test_what_dockerignore_leaves_out_is_missing_from_the_servers_directory(
    served: dict[str, object],
) -> None:
    assert served["secret"] is False
    assert served["scratch"] is False
    assert served["venv"] is False
    assert served["excluded_module"] is False  # nor importable from anywhere else


def test_make_context_passes_here_and_names_the_top_three() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "build_context.py"), "report"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "largest: " in proc.stdout
    assert "within the budget of 64 MiB" in proc.stdout
