"""Shared fixtures live in tests/fixtures/ as pytest plugins, one module per kind of real server."""

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.azurite",
    "tests.fixtures.cosmos",
    "tests.fixtures.entra",
]
