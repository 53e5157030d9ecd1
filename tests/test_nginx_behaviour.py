"""The rendered nginx.conf serving for real, in a network namespace of its own (loopback only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from mfe_deploy.config import loader
from mfe_deploy.render import render
from tests.conftest import REPO, strong_secrets
from tests.tools import for_this_nginx, nginx_binary, nginx_in_namespace

SECURITY_HEADERS = {
    "strict-transport-security": "max-age=63072000",
    "x-frame-options": "SAMEORIGIN",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("nginx")
    loaded, secrets = loader.load_with_secrets(REPO, "production", environ=strong_secrets())
    files = {name: file.text for name, file in render(for_this_nginx(loaded.env), secrets).files.items()}
    conf = files["nginx/nginx.conf"]
    probe = Path(__file__).with_name("nginx_probe.py")
    proc = nginx_in_namespace(
        conf,
        workdir,
        {"api-gateway-blue": "127.0.0.1", "api-gateway-green": "127.0.0.2", "api.example.com": "127.0.0.1"},
        [sys.executable, str(probe), nginx_binary(), str(workdir / "nginx.log")],
        network=True,
        bundle=files,
    )
    assert proc.returncode == 0, proc.stderr + (workdir / "nginx.log").read_text()
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_http_redirects_permanently_to_https(seen: dict[str, Any]) -> None:
    assert seen["redirect"]["status"] == 308
    assert seen["redirect"]["headers"]["location"] == "https://api.example.com/api/auth/login?x=1"


@pytest.mark.parametrize(
    ("probe", "status"), [("health", 200), ("not_found", 404), ("upstream_down", 502), ("limited", 429)]
)
def test_security_headers_on_every_response(seen: dict[str, Any], probe: str, status: int) -> None:
    response = seen[probe]
    assert response["status"] == status
    for name, value in SECURITY_HEADERS.items():
        assert response["headers"].get(name) == value, f"{name} missing on the {status} response"
    assert response["headers"]["server"] == "nginx"  # server_tokens off: no version


def test_the_gateway_colour_switches_by_a_file_without_a_reload(seen: dict[str, Any]) -> None:
    """nginx resolves the live colour's name per request: the flag file appearing sends the next request to
    the green gateway, and its going sends the next one back to blue. nginx was not reloaded meanwhile."""
    assert [seen[k]["status"] for k in ("blue", "green", "blue_again")] == [200, 200, 200]
    colours = [seen[k]["headers"].get("x-colour", "blue") for k in ("blue", "green", "blue_again")]
    assert colours == ["blue", "green", "blue"]


def test_a_request_whose_colour_stopped_under_it_goes_to_the_live_one_when_it_may_be_seen_twice(
    seen: dict[str, Any],
) -> None:
    """nginx picks the colour as a request arrives; when blue's container drops it (stopping, the switch
    made meanwhile), a GET or a POST with an Idempotency-Key is sent once more, to green, and answered;
    a POST without a key is never sent twice: it keeps its 502."""
    for probe in ("switched_get", "switched_keyed_post"):
        assert seen[probe]["status"] == 200, seen[probe]
        assert seen[probe]["headers"].get("x-colour") == "green"
    assert json.loads(seen["switched_keyed_post"]["body"])["path"] == "/api/pay"
    assert seen["switched_post"]["status"] == 502, seen["switched_post"]
    assert json.loads(seen["switched_post"]["body"]) == {"error": "service unavailable"}, seen["switched_post"]


def test_only_the_configured_name_is_served(seen: dict[str, Any]) -> None:
    """Another Host on 80 is closed unanswered (never redirected to a name the caller chose); a TLS hello
    without our name (an address typed by hand) is refused; a Host that is not ours after the handshake
    is closed unanswered. The right name gets the API."""
    assert seen["redirect_other_host"] == {"refused": "RemoteDisconnected"}
    assert seen["other_name_http"] == {"refused": "RemoteDisconnected"}
    assert seen["other_name_tls"] == {"refused": "SSLError"}
    assert seen["other_host_over_tls"] == {"refused": "RemoteDisconnected"}
    assert seen["health"]["status"] == 200


def test_nginx_listens_on_ipv6_too(seen: dict[str, Any]) -> None:
    assert seen["ipv6"] == {"status": 200}


def test_nginx_refusals_are_json_and_say_when_to_retry(seen: dict[str, Any]) -> None:
    limited, down = seen["limited"], seen["upstream_down"]
    assert (limited["status"], json.loads(limited["body"]), limited["headers"]["retry-after"]) == (
        429,
        {"error": "too many requests"},
        "1",
    )
    assert (down["status"], json.loads(down["body"]), down["headers"]["retry-after"]) == (
        502,
        {"error": "service unavailable"},
        "5",
    )


def test_health_has_its_own_rate_limit_bucket(seen: dict[str, Any]) -> None:
    """The API's bucket is empty (the burst above), and /health still answers."""
    assert seen["limited"]["status"] == 429
    assert seen["health_while_limited"]["status"] == 200


def test_rate_limit_answers_429_past_the_burst(seen: dict[str, Any]) -> None:
    statuses = seen["burst_statuses"]
    assert 429 in statuses
    first_refusal = statuses.index(429)
    assert 10 <= first_refusal <= 21  # burst 20 (+1), less what the earlier probes used
    # 100r/m frees one slot every 0.6 s: a slow burst may see a few more through, never many.
    refills = int(seen["burst_seconds"] / 0.6) + 1
    assert len(statuses) - statuses.count(429) <= 21 + refills


def test_request_id_is_kept_or_made(seen: dict[str, Any]) -> None:
    assert json.loads(seen["request_id_given"]["body"])["request_id"] == "abc-123"
    made = json.loads(seen["request_id_made"]["body"])["request_id"]
    assert made and len(made) == 32


def test_only_tls_12_and_13(seen: dict[str, Any]) -> None:
    tls = seen["tls"]
    assert tls["control_1.1"] == "TLSv1.1"  # the client can speak 1.1, so a refusal is nginx's
    assert tls["nginx_1.0"].startswith("refused")
    assert tls["nginx_1.1"].startswith("refused")
    assert tls["nginx_1.2"] == "TLSv1.2"
    assert tls["nginx_1.3"] == "TLSv1.3"


def test_key_exchange_groups_are_mozilla_intermediates(seen: dict[str, Any]) -> None:
    """X25519, prime256v1 and secp384r1 only: OpenSSL's defaults add X448 and secp521r1, which
    `sslyze --mozilla_config=intermediate` refuses."""
    assert seen["groups"] == {
        "X25519": "accepted",
        "prime256v1": "accepted",
        "secp384r1": "accepted",
        "X448": "refused",
        "secp521r1": "refused",
    }
