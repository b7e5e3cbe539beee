"""Fixtures of the integration tests (every test under tests/integration is in the integration lane).

`cluster`: a cluster of the test's own (tests/cluster.py), started as the test's `ClusterSpec` says:

    @pytest.mark.cluster(stub_latency_ms=300, env={"CHORUS_REAP_AFTER_S": "600"})
    def test_...(cluster): ...

or, to run one test on several clusters, `@pytest.mark.parametrize("cluster", [ClusterSpec(...), ...],
indirect=True)`. Without either, the stub answers at once and the settings are the defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, ClusterSpec, running_cluster
from tests.conftest import PG_URL


@pytest.fixture
def schema(postgres: str) -> str:
    """The session's PostgreSQL database, with chorus's tables."""
    from models import ensure_schema

    ensure_schema(PG_URL)
    return PG_URL


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path, schema: str) -> Iterator[Cluster]:
    spec = getattr(request, "param", None)
    if spec is None:
        marker = request.node.get_closest_marker("cluster")
        spec = ClusterSpec(*marker.args, **marker.kwargs) if marker is not None else ClusterSpec()
    with running_cluster(tmp_path, schema, spec) as started:
        yield started
