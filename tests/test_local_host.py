"""The local Functions host: it indexes `function_app.py` as the real host does, routes and schedules included."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import function_app
from local.host import compile_route, index, resolve_setting
from local.ncrontab import Schedule


def test_host_serves_exactly_the_registered_functions() -> None:
    http, timers = index(function_app.app, "")
    routes = {f.name: (f.template, f.methods) for f in http}
    assert routes["openai_azure_shape"][0] == "openai/{*path}"
    assert routes["health"] == ("health", frozenset({"GET", "HEAD"}))
    assert routes["admin"][0] == "gateway/admin/{*path}"
    assert [f.name for f in http][-1] == "not_found"  # the catch-all is matched last
    assert [t.name for t in timers] == ["probe_backends"]
    assert timers[0].expression == "*/30 * * * * *"  # the catalog default for %GATEWAY_PROBE_SCHEDULE%
    again, _ = index(function_app.app, "")  # get_functions() may run once per app: the host keeps its result
    assert [f.name for f in again] == [f.name for f in http]


def test_route_templates() -> None:
    catch_all = compile_route("openai/{*path}", "")
    assert catch_all.match("/openai/deployments/x/chat/completions")
    assert catch_all.match("/openai")
    assert not catch_all.match("/openaix/y")
    named = compile_route("items/{id}/{part?}", "api")
    match = named.match("/api/items/42")
    assert match is not None
    assert match.group("id") == "42"
    assert named.match("/api/items/42/x")
    assert compile_route("{*path}", "").match("/anything/at/all")


def test_binding_expressions_resolve_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PROBE_SCHEDULE", "0 */5 * * * *")
    assert resolve_setting("%GATEWAY_PROBE_SCHEDULE%") == "0 */5 * * * *"
    assert resolve_setting("0 0 * * * *") == "0 0 * * * *"


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/30 * * * * *", "2026-01-01T00:00:10", "2026-01-01T00:00:30"),
        ("*/30 * * * * *", "2026-01-01T00:00:30", "2026-01-01T00:01:00"),
        ("0 */5 * * * *", "2026-01-01T00:03:00", "2026-01-01T00:05:00"),
        ("0 0 9-17 * * 1-5", "2026-01-02T17:30:00", "2026-01-05T09:00:00"),  # Friday evening -> Monday
        ("0 30 2 1 * *", "2026-01-15T00:00:00", "2026-02-01T02:30:00"),
    ],
)
def test_ncrontab_next_occurrence(expression: str, after: str, expected: str) -> None:
    start = datetime.fromisoformat(after).replace(tzinfo=UTC).timestamp()
    got = datetime.fromtimestamp(Schedule.parse(expression).next_after(start), UTC)
    assert got == datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize("bad", ["* * * * *", "61 * * * * *", "*/0 * * * * *"])
def test_ncrontab_rejects_bad_expressions(bad: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        Schedule.parse(bad)


def test_local_settings_values_load_without_overriding_the_environment(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import os
    from pathlib import Path

    from local.host import load_local_settings

    path = Path(str(tmp_path)) / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {"GW_TEST_A": "from-file", "GW_TEST_B": "from-file"}}))
    monkeypatch.setenv("GW_TEST_B", "from-env")
    monkeypatch.delenv("GW_TEST_A", raising=False)
    loaded = load_local_settings(path)
    assert loaded == ["GW_TEST_A"]
    assert os.environ["GW_TEST_A"] == "from-file"
    assert os.environ["GW_TEST_B"] == "from-env"  # as `func start`: the environment wins
    monkeypatch.delenv("GW_TEST_A")
