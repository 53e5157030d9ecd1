"""The plan as a table: desired against observed, one row per situation, the steps and reasons exact."""

from __future__ import annotations

import pytest

from mfe_deploy.plan import (
    Desired,
    Have,
    Observed,
    Step,
    Want,
    changed_keys,
    plan,
    store_refusal,
    store_restarts,
    waves,
)
from mfe_deploy.runtimes.contract import StoresWouldRestart, guard_stores

WANT = {"gateway": Want("p/gateway:v1", 2, "c1"), "auth": Want("p/auth:v1", 1, "c2")}
SAME = {"gateway": Have("p/gateway:v1", 2, "c1"), "auth": Have("p/auth:v1", 1, "c2")}

CASES = [
    ("no change", WANT, SAME, {}, []),
    (
        "image change",
        WANT,
        {**SAME, "auth": Have("p/auth:v0", 1, "c2")},
        {},
        [Step("replace", "auth", "image p/auth:v0 -> p/auth:v1")],
    ),
    (
        "env change",
        WANT,
        {**SAME, "auth": Have("p/auth:v1", 1, "old")},
        {},
        [Step("replace", "auth", "env file changed")],
    ),
    (
        "image and env",
        WANT,
        {**SAME, "auth": Have("p/auth:v0", 1, None)},
        {},
        [Step("replace", "auth", "image p/auth:v0 -> p/auth:v1; env file changed")],
    ),
    (
        "replica change",
        WANT,
        {**SAME, "gateway": Have("p/gateway:v1", 1, "c1")},
        {},
        [Step("scale", "gateway", "replicas 1 -> 2")],
    ),
    ("new service", {**WANT, "notes": Want("p/notes:v1", 1, "c3")}, SAME, {}, [Step("start", "notes", "new service")]),
    ("stopped service", WANT, {**SAME, "auth": Have("p/auth:v1", 0, "c2")}, {}, [Step("start", "auth", "not running")]),
    (
        "removed service",
        WANT,
        {**SAME, "notes": Have("p/notes:v1", 1, "c3"), "postgres": Have("pg", 1, None)},
        {},
        [Step("remove", "notes", "no longer in the environment (its data stays)")],
    ),
    (
        "pending migration",
        WANT,
        SAME,
        {"auth": ("0003_x", "0004_y"), "admin": ()},
        [Step("migrate", "auth", "pending: 0003_x, 0004_y")],
    ),
    (
        "unhealthy container",
        WANT,
        {**SAME, "gateway": Have("p/gateway:v1", 2, "c1", unhealthy=1)},
        {},
        [Step("restart", "gateway", "1 of 2 unhealthy")],
    ),
]


@pytest.mark.parametrize(("wanted", "observed", "pending", "steps"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(
    wanted: dict[str, Want], observed: dict[str, Have], pending: dict[str, tuple[str, ...]], steps: list[Step]
) -> None:
    result = plan(Desired(wanted, pending), Observed(observed))
    assert list(result.steps) == steps
    assert result.empty is (not steps)


def test_migrations_come_first_and_removals_last() -> None:
    observed = {"old": Have("p/old:v1", 1, "c"), **{k: v for k, v in SAME.items() if k != "auth"}}
    actions = [s.action for s in plan(Desired(WANT, {"auth": ("0002_a",)}), Observed(observed)).steps]
    assert actions == ["migrate", "start", "remove"]


def test_changed_keys_name_variables_never_values() -> None:
    old = "# header\nA='1'\nB='secret-one'\nC='x'\n"
    new = "# header\nA='1'\nB='secret-two'\nD='y'\n"
    assert changed_keys(old, new) == ["B", "C", "D"]


def test_a_store_whose_configuration_changed_is_restarted_first_and_only_when_running() -> None:
    wanted = {"postgres": "h1", "redis": "h2", "rabbitmq": "h3"}
    running = {"postgres": "h1", "redis": "old", "rabbitmq": "h3"}
    steps = plan(Desired(WANT, {"auth": ("0002_a",)}, stores=wanted), Observed(SAME, stores=running)).steps
    assert [(s.action, s.target) for s in steps] == [("restart", "redis"), ("migrate", "auth")]
    assert "--restart-stores" in steps[0].reason
    assert store_restarts(wanted, {"postgres": "h1"}) == []  # redis and rabbitmq are not running: started
    assert store_restarts({"redis": "h2"}, running) == ["redis"]  # postgres no longer wanted: left alone


def test_the_refusal_names_the_stores_the_downtime_and_the_way_on() -> None:
    text = store_refusal("staging", ["postgres", "redis"])
    assert "postgres, redis" in text and "restarts them" in text and "Nothing was changed" in text
    assert "`mfe-deploy up --env staging --restart-stores`" in text


def test_the_store_guard_refuses_unless_allowed_and_says_the_restart_when_it_is() -> None:
    said: list[str] = []
    wanted, running = {"postgres": "h1", "redis": "new"}, {"postgres": "h1", "redis": "old"}
    with pytest.raises(StoresWouldRestart) as refused:
        guard_stores("staging", wanted, running, allowed=False, say=said.append)
    assert refused.value.exit_code == 1 and "configuration of redis changed" in str(refused.value) and said == []
    assert guard_stores("staging", wanted, running, allowed=True, say=said.append) == ["redis"]
    assert said == ["redis: configuration changed, restarted (--restart-stores)"]
    assert guard_stores("staging", wanted, {"postgres": "h1"}, allowed=False, say=said.append) == []


@pytest.mark.parametrize(
    ("services", "depends_on", "width", "expected"),
    [
        # the bundled five: the four behind the gateway two by two, then the gateway alone
        (
            ["api-gateway", "auth", "payments", "admin", "profile"],
            {},
            2,
            [["auth", "payments"], ["admin", "profile"], ["api-gateway"]],
        ),
        (["api-gateway", "auth", "payments", "admin"], {}, 4, [["auth", "payments", "admin"], ["api-gateway"]]),
        (["api-gateway", "auth", "payments"], {}, 1, [["auth"], ["payments"], ["api-gateway"]]),
        # a dependency being replaced goes first; one that is not (it runs as it is) holds nothing back
        (
            ["auth", "notifications", "payments"],
            {"notifications": ["auth"]},
            2,
            [["auth", "payments"], ["notifications"]],
        ),
        (["notifications", "payments"], {"notifications": ["auth"]}, 2, [["notifications", "payments"]]),
        # a chain is a wave per link
        (["c", "b", "a"], {"c": ["b"], "b": ["a"]}, 3, [["a"], ["b"], ["c"]]),
        (["api-gateway"], {}, 2, [["api-gateway"]]),
        ([], {}, 2, []),
    ],
)
def test_services_are_replaced_in_waves_dependencies_first_the_gateway_last(
    services: list[str], depends_on: dict[str, list[str]], width: int, expected: list[list[str]]
) -> None:
    assert waves(services, depends_on, last=["api-gateway"], width=width) == expected
