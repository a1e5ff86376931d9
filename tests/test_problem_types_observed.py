"""Every registered problem type (and so every type the spec lists) is seen by some test.

Runs last (tests/problem_observer.py orders it) and only judges a run of the whole suite.
"""

from __future__ import annotations

import pytest
from problem_observer import OBSERVED, suite_incomplete_reason

from authgate_common.problem_types import ProblemType


def test_every_problem_type_is_observed_by_a_test(request: pytest.FixtureRequest) -> None:
    reason = suite_incomplete_reason(request.session)
    if reason is not None:
        pytest.skip(f"needs the whole suite to judge: {reason}")
    unobserved = sorted(member.slug for member in ProblemType if member not in OBSERVED)
    assert not unobserved, (
        "no test saw a service send these problem types; assert each one through "
        f"tests/problem_observer.py's assert_problem_type: {unobserved}"
    )
