"""The build context: the files `cog build` puts in the image, and a local copy laid out as /src.

cog's generated Dockerfile copies the project directory into the image (`COPY . /src`, replicate/cog
`pkg/dockerfile/standard_generator.go`) and runs from /src; what `.dockerignore` names stays out
(cog itself leaves out only `.cog/`, `pkg/docker/buildkit.go`). This module is the one definition
of that set, with Docker's own matching rules from the Docker SDK for Python
(`docker.utils.build.exclude_paths`: `*`, `?`, `**`, `!` exceptions, the last match winning, a
matched directory taking everything below it, a leading `/` ignored).

Every local server runs from a copy of it (`stage`), so a predictor finds beside itself exactly
what it will find in the image: its weights, its modules, its data files, and nothing that
`.dockerignore` leaves out.

    python scripts/build_context.py report [--budget-mib N]   # size by top-level entry
    python scripts/build_context.py stage DEST                # lay the context out in DEST
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The default budget of `report`: a context over it fails. Weights past it belong outside git
# (docs/deploying.md, "Weights that ship"); raise it with --budget-mib for a model that needs to.
BUDGET_MIB = 64


def ignore_patterns(root: Path) -> list[str]:
    """The patterns of `root/.dockerignore`, as Docker reads them (none if there is no file)."""
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_files(root: Path) -> list[str]:
    """The files (and links) of the build context of `root`: relative POSIX paths, sorted."""
    from docker.utils.build import exclude_paths  # here: gpu-check installs it before use

    root = Path(root)
    kept = exclude_paths(str(root), ignore_patterns(root), dockerfile="Dockerfile")
    return sorted(
        Path(name).as_posix()
        for name in kept
        if (root / name).is_symlink() or (root / name).is_file()
    )


def stage(root: Path, dest: Path, *, overlay: Mapping[str, Path] | None = None) -> Path:
    """Lay out the build context of `root` in `dest` as the image's /src has it; returns `dest`.

    Each file is hard-linked where `dest` is on the same filesystem (cheap: weights are not
    copied), else copied; a predictor that writes into a staged file therefore writes the
    original (as it would change its own /src in a container, once). `overlay` adds files that
    are not in the context, by relative path (a test's probe predictor). `dest` must not exist
    or be empty but for `.cog/` (the server's schema and log).
    """
    root, dest = Path(root), Path(dest)
    if dest.exists() and any(p.name != ".cog" for p in dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty: stage the build context into a new directory")
    files = {name: root / name for name in context_files(root)}
    files.update(overlay or {})
    for name, source in files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
            continue
        try:
            os.link(source, target)
        except OSError:  # another filesystem, or links not allowed: copy
            shutil.copy2(source, target)
    dest.mkdir(parents=True, exist_ok=True)
    return dest


def sizes_by_entry(root: Path) -> dict[str, int]:
    """Bytes of the build context by top-level entry (a folder's files summed), largest first."""
    totals: dict[str, int] = {}
    for name in context_files(root):
        top = name.split("/", 1)[0] + ("/" if "/" in name else "")
        totals[top] = totals.get(top, 0) + (Path(root) / name).lstat().st_size
    return dict(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))


def report(root: Path, budget_mib: float) -> int:
    """Print the context's size by top-level entry; 1 if it is over `budget_mib`, else 0."""
    sizes = sizes_by_entry(root)
    total = sum(sizes.values())
    print(f"build context of {root} (what `cog build` copies to /src after .dockerignore):")
    for name, size in sizes.items():
        print(f"  {size / 2**20:9.2f} MiB  {name}")
    top = ", ".join(list(sizes)[:3])
    print(f"  {total / 2**20:9.2f} MiB  in all, {len(context_files(root))} files; largest: {top}")
    if total > budget_mib * 2**20:
        print(
            f"over the budget of {budget_mib:g} MiB: keep large weights out of git and the context "
            f"(docs/deploying.md, 'Weights that ship'), add what the image does not need to "
            f".dockerignore, or raise the budget (make context BUDGET_MIB=...)",
            file=sys.stderr,
        )
        return 1
    print(f"within the budget of {budget_mib:g} MiB")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="size by top-level entry; fail over the budget")
    rep.add_argument("--budget-mib", type=float, default=BUDGET_MIB)
    rep.add_argument("--root", type=Path, default=REPO_ROOT)
    stg = sub.add_parser("stage", help="lay out the build context in DEST (a new directory)")
    stg.add_argument("dest", type=Path)
    stg.add_argument("--root", type=Path, default=REPO_ROOT)
    args = ap.parse_args(argv)
    if args.command == "report":
        return report(args.root, args.budget_mib)
    stage(args.root, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
