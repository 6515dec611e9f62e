"""One test per hint: each names what failed and what a person can do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from qhook.domain.hints import ALLOWED_DOMAINS_PREFIX, SET_IDS_PREFIX, hint_for, tls_problem, waiting

URL = "https://erp.example.com/api/batches"


def _hint(**kwargs: object) -> str:
    values: dict[str, object] = {"url": URL, "status_code": None, "error_kind": None}
    values.update(kwargs)
    hint = hint_for(**values)  # type: ignore[arg-type]
    assert hint is not None
    return hint


def test_success_has_no_hint() -> None:
    assert hint_for(url=URL, status_code=200, error_kind=None) is None
    assert hint_for(url=URL, status_code=204, error_kind=None) is None


@pytest.mark.parametrize("code", [401, 403])
def test_rejected_credentials_name_the_profile(code: int) -> None:
    assert _hint(status_code=code, error_kind="http_status", auth_profile="ERP prod") == (
        "The endpoint rejected the credentials of auth profile 'ERP prod'. Check or regenerate the API token."
    )


def test_401_without_profile_suggests_the_signing_secret_and_a_profile() -> None:
    """A receiver checking qhook's signature answers 401 too; the hint only said "attach a profile"."""
    hint = _hint(status_code=401, error_kind="http_status")
    assert "erp.example.com answered 401 Unauthorized" in hint and "attach an auth profile" in hint
    assert "signing secret differs from this signal's" in hint


def test_an_unresolved_host_is_named_without_its_port() -> None:
    hint = hint_for(url="https://erp.invalid:8720/hook", status_code=None, error_kind="dns")
    assert hint is not None and hint.startswith("The host name erp.invalid could not be resolved (DNS)")


def test_404() -> None:
    assert (
        _hint(status_code=404, error_kind="http_status") == "No such path on erp.example.com: check the URL."
    )


def test_410_pauses_signal() -> None:
    hint = _hint(status_code=410, error_kind="http_status")
    assert "gone for good" in hint and "paused the signal" in hint


def test_413() -> None:
    hint = _hint(status_code=413, error_kind="http_status")
    assert "too large (413)" in hint and "smaller payload" in hint


def test_429_with_pause_time() -> None:
    until = datetime(2025, 10, 2, 14, 5, 30, tzinfo=UTC)
    assert _hint(status_code=429, error_kind="http_status", paused_until=until) == (
        "erp.example.com is rate-limiting qhook; deliveries to it are paused until 2025-10-02 14:05:30 "
        "UTC (Retry-After). Consider a rate limit on this endpoint."
    )


def test_503_with_retry_after_is_a_pause_not_a_rate_limit() -> None:
    until = datetime(2025, 10, 2, 14, 5, 30, tzinfo=UTC)
    assert _hint(status_code=503, error_kind="http_status", paused_until=until) == (
        "erp.example.com is unavailable (503) and asked qhook to wait; deliveries to it are paused "
        "until 2025-10-02 14:05:30 UTC (Retry-After), then go on by themselves."
    )


def test_a_backoff_ending_after_the_pause_is_named() -> None:
    """Retry-After: 3 with a 5 s backoff: the endpoint's pause ends first, this delivery waits on."""
    until = datetime(2025, 10, 2, 14, 5, 30, tzinfo=UTC)
    later = until + timedelta(seconds=2)
    hint = _hint(status_code=429, error_kind="http_status", paused_until=until, next_attempt_at=later)
    assert hint.endswith(
        "paused until 2025-10-02 14:05:30 UTC (Retry-After). Consider a rate limit on this endpoint."
        " This delivery's next try is at 2025-10-02 14:05:32 UTC (its backoff)."
    )
    # At the pause's end, or given up: nothing more to say.
    assert "next try" not in _hint(
        status_code=503, error_kind="http_status", paused_until=until, next_attempt_at=until
    )
    assert "next try" not in _hint(
        status_code=429, error_kind="http_status", paused_until=until, next_attempt_at=later, final=True
    )


def test_429_without_retry_after() -> None:
    hint = _hint(status_code=429, error_kind="http_status")
    assert "rate-limiting" in hint and "paused until" not in hint


@pytest.mark.parametrize(("code", "text"), [(500, "500 Internal Server Error"), (502, "502 Bad Gateway")])
def test_5xx(code: int, text: str) -> None:
    hint = _hint(status_code=code, error_kind="http_status")
    assert f"server error ({text})" in hint and "logs" in hint


def test_other_4xx() -> None:
    hint = _hint(status_code=422, error_kind="http_status")
    assert "422 Unprocessable" in hint and "response body" in hint


@pytest.mark.parametrize("code", [501, 505])
def test_a_server_status_that_is_never_retried_does_not_promise_a_retry(code: int) -> None:
    hint = _hint(status_code=code)
    assert "qhook does not retry" in hint and "qhook retries" not in hint
    assert "qhook retries." in _hint(status_code=502)


def test_dns() -> None:
    hint = _hint(error_kind="dns", error="Name or service not known")
    assert hint.startswith("The host name erp.example.com could not be resolved (DNS)")


def test_connection_refused_names_host_and_port() -> None:
    hint = _hint(url="https://erp.example.com:8443/x", error_kind="connect", error="Connection refused")
    assert "erp.example.com:8443" in hint and "refused" in hint


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate has expired",
            "has expired",
        ),
        (
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
            "unable to get local issuer certificate",
            "QHOOK_CA_BUNDLE",
        ),
        (
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate",
            "QHOOK_CA_BUNDLE",
        ),
        (
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, certificate is "
            "not valid for 'erp.example.com'",
            "different host name",
        ),
        ("[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version", "older than 1.2"),
        ("[SSL: UNSUPPORTED_PROTOCOL] unsupported protocol", "older than 1.2"),
        ("[SSL] record layer failure", "TLS handshake with erp.example.com failed: [SSL] record layer"),
        ("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)", "did not answer with TLS"),
    ],
)
def test_tls_problems(error: str, expected: str) -> None:
    assert expected in _hint(error_kind="tls", error=error)


def test_tls_problem_classification() -> None:
    assert tls_problem("certificate has expired") == "expired"
    assert tls_problem("IP address mismatch, certificate is not valid for '127.0.0.1'") == "hostname"
    assert tls_problem(None) == "other"


def test_timeout_names_the_limit() -> None:
    hint = _hint(error_kind="timeout", timeout_s=15.0)
    assert "did not answer within 15 s" in hint and "timeout_s" in hint


def test_ssrf_refusal() -> None:
    hint = _hint(url="https://intranet.local/x", error_kind="ssrf_blocked", error="10.0.0.5 is private")
    assert "intranet.local resolves to a private" in hint and "QHOOK_ALLOWED_TARGET_NETWORKS" in hint


def test_allowed_domains_refusal() -> None:
    hint = _hint(
        url="https://evil.example.org/",
        error_kind="auth",
        error=f"{ALLOWED_DOMAINS_PREFIX} evil.example.org is not allowed",
        auth_profile="ERP prod",
    )
    assert "auth profile 'ERP prod'" in hint and "evil.example.org is not one of them" in hint


def test_set_ids_refusal() -> None:
    hint = _hint(
        error_kind="auth",
        error=f"{SET_IDS_PREFIX} auth profile 'ERP prod' serves only set(s) 1, not set 2",
        auth_profile="ERP prod",
    )
    assert "may not use auth profile 'ERP prod'" in hint and "set_ids" in hint
    assert "access token" not in hint


def test_token_fetch_failure() -> None:
    hint = _hint(error_kind="auth", error="token endpoint answered 401", auth_profile="ERP prod")
    assert "access token for auth profile 'ERP prod'" in hint and "client secret" in hint


@pytest.mark.parametrize(
    ("error", "advice"),
    [
        ("token endpoint login.example.com answered 401 (invalid_client)", "client id and client secret"),
        ("token endpoint login.example.com unreachable: ClientConnectorError", "identity provider up"),
        ("token endpoint login.example.com answered 503", "server error. qhook retries."),
        ("token endpoint login.example.com answered 200 with no JSON object", "not a login page"),
    ],
)
def test_token_fetch_failures_say_what_to_check(error: str, advice: str) -> None:
    """Every token failure said "check the token URL, client id and client secret", also when the
    identity provider was down or the URL answered with a login page."""
    hint = _hint(error_kind="auth", error=error, auth_profile="ERP prod")
    assert hint.startswith(f"qhook could not get an access token for auth profile 'ERP prod' ({error}).")
    assert advice in hint


def test_redirect_names_location() -> None:
    hint = _hint(status_code=301, error_kind="redirect", location="https://erp2.example.com/api")
    assert "redirect (301 Moved Permanently) to https://erp2.example.com/api" in hint
    assert "does not follow redirects" in hint


def test_too_large_response() -> None:
    hint = _hint(status_code=200, error_kind="too_large", body_limit=65536)
    assert "larger than 64 KiB" in hint


def test_why_a_delivery_waits() -> None:
    """Held behind an open circuit, pending behind a pause or a Retry-After, or on a paused signal:
    the Hub showed nothing, or the old failure's hint."""
    now = datetime(2025, 10, 2, 14, 0, tzinfo=UTC)
    origin = "https://erp.example.com:443"
    later = datetime(2025, 10, 2, 14, 5, 30, tzinfo=UTC)

    def why(**given: Any) -> str | None:
        base: dict[str, Any] = {
            "status": "pending",
            "now": now,
            "next_attempt_at": now,
            "lease_expires_at": None,
        }
        return waiting(origin=origin, **{**base, **given})

    assert why(status="succeeded") is None and why(status="failed") is None
    assert why(lease_expires_at=later) == (
        "Being sent now (a worker holds it until 14:05:30 UTC; should that worker have stopped, it is sent "
        "again then)."
    )
    assert why(signal_paused="the receiver answered 410 Gone", endpoint_paused=True) == (
        "Waiting: its signal is paused (the receiver answered 410 Gone). Resume the signal to send it."
    )
    assert why(endpoint_paused=True, throttled_until=later) == (
        f"Waiting: an operator paused {origin}. Resume it on the Endpoints page to send it."
    )
    assert why(throttled_until=later) == (
        f"Waiting: {origin} asked qhook to wait until 2025-10-02 14:05:30 UTC (Retry-After). "
        "Send now on the Endpoints page ends the wait."
    )
    assert why(throttled_until=now) == "Due now: it goes when a worker has room within the endpoint's limits."
    assert why(status="held").startswith(f"Held: the circuit of {origin} is open")
    assert why(circuit_state="half_open").startswith("Held:")
    assert why(status="retrying", next_attempt_at=later) == "Next try at 2025-10-02 14:05:30 UTC."


@pytest.mark.parametrize(
    "given",
    [
        {"status_code": 500, "error_kind": "http_status"},
        {"status_code": 429, "error_kind": "http_status"},
        {"status_code": 408, "error_kind": "http_status"},
        {"error_kind": "connect", "error": "ServerDisconnectedError: Server disconnected"},
        {"error_kind": "auth", "error": "token endpoint login.example.com answered 503", "auth_profile": "P"},
        {
            "error_kind": "auth",
            "error": "token endpoint login.example.com unreachable: X",
            "auth_profile": "P",
        },
    ],
)
def test_a_final_attempt_promises_no_retry(given: dict[str, object]) -> None:
    """A delivery qhook gave up on said "qhook retries" beside "Gave up"."""
    assert "retr" in _hint(**given)
    assert "retr" not in _hint(**given, final=True)


def test_a_hint_names_the_port_the_url_writes() -> None:
    """Several receivers on one host: "127.0.0.1 had a server error" did not say which."""
    hint = _hint(url="http://127.0.0.1:18312/hook", status_code=500, error_kind="http_status")
    assert hint.startswith("127.0.0.1:18312 had a server error")
    assert _hint(status_code=500, error_kind="http_status").startswith("erp.example.com had")
