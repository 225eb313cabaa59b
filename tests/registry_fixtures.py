"""pytest fixtures: real registries (tests/registry_helpers.py), one per module and kind.

Test modules load them with `pytest_plugins = ["registry_fixtures"]`. A missing
docker-registry, skopeo or htpasswd follows the suite's rule for missing prerequisites
(tests/conftest.py: fail under CI=true, skip loudly outside).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import require_tool
from registry_helpers import Registry, start_registry


def _require(kind: str) -> None:
    require_tool("docker-registry")
    require_tool("skopeo")
    if kind == "basic":
        require_tool("htpasswd", "apache2-utils")


@pytest.fixture(scope="session")
def registry_tools() -> None:
    """For tests that start their own registry with start_registry()."""
    _require("token")


def _registry_fixture(kind: str, tmp_path_factory: pytest.TempPathFactory,
                      **kw: object) -> Iterator[Registry]:
    _require(kind)
    reg = start_registry(kind, tmp_path_factory.mktemp(f"registry-{kind}"), **kw)
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def anon_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _registry_fixture("anon", tmp_path_factory)


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _registry_fixture("basic", tmp_path_factory)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _registry_fixture("token", tmp_path_factory)


@pytest.fixture(scope="module", params=["anon", "basic", "token"])
def any_registry(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _registry_fixture(request.param, tmp_path_factory)
