"""A fork's own test may run its predictor's `setup()` in the pytest process (no server).

setup() installs the runtime workarounds (coglet_cancel, coglet_inputs), which patch classes for
the whole process; tests/conftest.py's `runtime_hooks_undone` undoes them after each test, so
every other test sees the process as it was. These two run in order: the second sees what the
first left.
"""

from __future__ import annotations

import concurrent.futures

import cog.types
import pytest

import coglet_cancel
import coglet_inputs
from tests.predictors.file_inputs import StreamingPredictor

pytestmark = [pytest.mark.timeout(30)]

ORIGINAL_CANCEL = concurrent.futures.Future.cancel
ORIGINAL_VALIDATE = cog.types.Path.__dict__["validate"]


def test_a_models_setup_in_this_process_installs_both_hooks() -> None:
    predictor = StreamingPredictor()
    predictor.setup()
    assert coglet_cancel.installed()
    assert coglet_inputs.installed()
    assert isinstance(cog.types.Path.validate("data:,x"), coglet_inputs.PendingFile)


def test_the_next_test_finds_the_process_as_it_was() -> None:
    assert not coglet_cancel.installed()
    assert not coglet_inputs.installed()
    assert concurrent.futures.Future.cancel is ORIGINAL_CANCEL
    assert cog.types.Path.__dict__["validate"] is ORIGINAL_VALIDATE
