"""Every worked example passes the static checks `cog build` makes (scripts/cog_static.py)."""

from __future__ import annotations

import pytest
from cog_server import REPO_ROOT
from cog_static import check
from test_cog_static import predictor_classes

pytestmark = pytest.mark.timeout(30)

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.py"))
SHIPPED = [f"examples/{path.name}:{name}" for path in EXAMPLES for name in predictor_classes(path)]


@pytest.mark.parametrize("ref", SHIPPED)
def test_the_example_predictors_pass(ref: str) -> None:
    info = check(ref, roots=[REPO_ROOT])  # raises StaticCheckError on any problem
    assert info.method in ("run", "predict")


def test_every_example_predictor_file_is_checked() -> None:
    checked = {ref.split(":")[0] for ref in SHIPPED}
    assert checked >= {f"examples/{p.name}" for p in EXAMPLES if p.name.endswith("_predict.py")}
    assert "examples/transformers_predict.py" in checked
