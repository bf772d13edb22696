"""The planner tables' desired state, shared by the planner test modules."""

from tests.planning.test_planner import desired  # noqa: F401
