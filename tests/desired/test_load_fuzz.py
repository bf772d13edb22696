"""Whatever lands in cluster.d/, load() answers with Desired or ConfigErrors, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.desired import Desired, load
from reconciler.errors import ConfigErrors

YAMLISH = st.text(
    alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#%@`,?~ \t\n\r.01/\\\x00\x85\u2028é")),
    max_size=200,
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
)
KEYS = st.sampled_from(
    [
        "cluster", "servers", "repositories", "groups", "users", "name", "url", "peer_url",
        "members", "writable", "readonly", "host_key", "replication", "timeout", "mode",
        "description", "gitweb", "a", "@b", "git@one", "x/../y",
    ]
)  # fmt: skip
TREES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=5)
    ),
    max_leaves=25,
)


def _check(root: Path, text: bytes) -> None:
    (root / "cluster.d").mkdir(exist_ok=True)
    (root / "cluster.d" / "fuzz.yaml").write_bytes(text)
    try:
        result = load(root)
    except ConfigErrors as exc:
        assert exc.errors
        for error in exc.errors:
            assert error.location is not None and error.location.file
            assert error.message and "\n" not in error.message
    else:
        assert isinstance(result, Desired)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=YAMLISH)
def test_arbitrary_text(text: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    _check(tmp_path_factory.mktemp("fuzz"), text.encode("utf-8"))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=TREES)
def test_arbitrary_structures(tree: object, tmp_path_factory: pytest.TempPathFactory) -> None:
    # JSON is YAML 1.2: any structure, written out, is a cluster.d/ file to load.
    text = json.dumps(tree, allow_nan=True)
    _check(tmp_path_factory.mktemp("fuzz"), text.encode("utf-8"))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    _check(tmp_path_factory.mktemp("fuzz"), data)
