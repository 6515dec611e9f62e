"""A hint a person at the Integration Hub can act on, for each kind of failed attempt. Pure."""

from __future__ import annotations

import re
from datetime import datetime
from http import HTTPStatus
from typing import Literal

from qhook.domain.retry import PERMANENT_SERVER_STATUSES
from qhook.domain.urls import host_of, origin_of, shown_target

# The sender's words when the receiver took the connection and closed it without an answer.
_DROPPED = ("ServerDisconnectedError", "Connection reset", "ClientOSError")
# aiohttp's parser refusing the answer: something answered on that port, but not HTTP/1.x.
_NOT_HTTP = ("Bad status line", "BadStatusLine", "BadHttpMessage", "Invalid status", "Expected HTTP/")

ALLOWED_DOMAINS_PREFIX = "allowed_domains:"
"""Errors for the allowed-domains refusal start with this (kind ``auth``), so the hint can name it."""
SET_IDS_PREFIX = "set_ids:"
"""Errors for a profile used by a set it does not serve start with this (kind ``auth``)."""

TlsProblem = Literal["expired", "unknown_ca", "hostname", "protocol", "not_tls", "other"]


def tls_problem(error: str | None) -> TlsProblem:
    """Which TLS failure an OpenSSL / ssl-module message describes."""
    text = (error or "").lower()
    if "expired" in text:
        return "expired"
    if "mismatch" in text or "doesn't match" in text or "not valid for" in text:
        return "hostname"
    if any(
        marker in text
        for marker in (
            "unable to get local issuer",
            "self-signed",
            "self signed",
            "unknown ca",
            "unable to verify",
            "certificate verify failed",
        )
    ):
        return "unknown_ca"
    if "wrong version number" in text or "packet length too long" in text:
        return "not_tls"  # what came back was no TLS record at all: mostly plain HTTP on that port
    if any(
        marker in text
        for marker in ("protocol version", "unsupported protocol", "no protocols available", "wrong version")
    ):
        return "protocol"
    return "other"


def _reason(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _size(limit: int | None) -> str:
    if not limit:
        return "the limit"
    return f"{limit // 1024} KiB" if limit >= 1024 else f"{limit} bytes"


def hint_for(
    *,
    url: str,
    status_code: int | None,
    error_kind: str | None,
    error: str | None = None,
    auth_profile: str | None = None,
    paused_until: datetime | None = None,
    location: str | None = None,
    timeout_s: float | None = None,
    body_limit: int | None = None,
    final: bool = False,
    next_attempt_at: datetime | None = None,
) -> str | None:
    """The hint for one attempt; None when it succeeded.

    ``auth_profile`` is the profile's name, ``paused_until`` the endpoint's Retry-After pause (UTC),
    ``next_attempt_at`` when this delivery is tried again (its backoff may end after the pause),
    ``location`` a redirect's target, ``body_limit`` the response truncation limit in bytes.
    ``final``: qhook gave up on the delivery, so the hint promises no retry (it said "qhook
    retries" beside "Gave up"). The host carries its port when the URL writes one: with several
    receivers on one host, "127.0.0.1 had a server error" did not say which.
    """
    host = shown_target(url) if host_of(url) else url
    retries = "" if final else " qhook retries."
    if error_kind is None and status_code is not None and 200 <= status_code < 300:
        return None
    if error_kind == "dns":
        return (
            f"The host name {host_of(url) or host} could not be resolved (DNS). Check the spelling of "
            "the URL, or the DNS of the network qhook runs in."
        )
    if error_kind == "connect":
        address = origin_of(url).split("://", 1)[-1] if host_of(url) else host
        if error and any(words in error for words in _NOT_HTTP):
            return (
                f"{address} accepted the connection, but its answer was not HTTP ({error}). Is this "
                "the receiver's port, and does it speak HTTP/1.1 (not HTTP/2 only, not another "
                f"protocol)?{retries}"
            )
        if error and any(words in error for words in _DROPPED):
            return (
                f"{address} accepted the connection and closed it before answering ({error}). The "
                f"receiver may have failed on this request, or a proxy or load balancer cut it.{retries}"
                " The receiver's logs say which"
                + (
                    "."
                    if final
                    else "; if it took the request before closing, the retry reaches it a"
                    " second time with the same webhook-id."
                )
            )
        return (
            f"Nothing accepted the connection to {address} (refused or unreachable). "
            "Is the receiver running, and can qhook's network reach it (firewall, port)?"
        )
    if error_kind == "tls":
        return _tls_hint(host, error)
    if error_kind == "timeout":
        within = f"within {timeout_s:g} s" if timeout_s else "in time"
        return (
            f"{host} did not answer {within}. Let the receiver reply 2xx at once and do slow work "
            "afterwards, or raise the signal's timeout_s (at most 60)."
        )
    if error_kind == "ssrf_blocked":
        detail = f" ({error})" if error else ""
        return (
            f"{host} resolves to a private, loopback or internal address{detail}, which qhook refuses "
            "to protect the internal network. If this target is intended, add its network to "
            "QHOOK_ALLOWED_TARGET_NETWORKS."
        )
    if error_kind == "auth":
        return _auth_hint(host, error, auth_profile, retries)
    if error_kind == "too_large":
        return (
            f"The response from {host} is larger than {_size(body_limit)}; qhook kept only the first "
            f"{_size(body_limit)}. Receivers should answer webhooks with a short body."
        )
    if error_kind == "redirect" or (status_code is not None and 300 <= status_code < 400):
        target = f" to {location}" if location else ""
        code = f" ({_reason(status_code)})" if status_code else ""
        return (
            f"{host} answered with a redirect{code}{target}; qhook does not follow redirects "
            "(they could lead anywhere and drop the body). Change the signal's URL to the final address."
        )
    if status_code is not None:
        hint = _status_hint(host, status_code, auth_profile, paused_until, retries)
        if paused_until is not None and next_attempt_at is not None and not final:
            if (next_attempt_at - paused_until).total_seconds() >= 1:
                # Its own backoff ends later: "paused until 12:00:03" read as "sent at 12:00:03".
                hint += (
                    f" This delivery's next try is at {next_attempt_at:%Y-%m-%d %H:%M:%S} UTC (its backoff)."
                )
        return hint
    return f"The request to {host} failed: {error or 'unknown error'}."


def _tls_hint(host: str, error: str | None) -> str:
    problem = tls_problem(error)
    if problem == "expired":
        return f"The TLS certificate of {host} has expired. The receiver's operator must renew it."
    if problem == "unknown_ca":
        return (
            f"The TLS certificate of {host} is signed by a certificate authority qhook does not trust "
            "(self-signed or private CA). Add that CA to QHOOK_CA_BUNDLE or to the auth profile's "
            "CA certificate."
        )
    if problem == "hostname":
        return (
            f"The TLS certificate presented by {host} is for a different host name. Use the host name "
            "the certificate was issued for, or have the certificate fixed."
        )
    if problem == "not_tls":
        return (
            f"{host} did not answer with TLS: the port most likely serves plain http://. Use the "
            "receiver's https port in the URL, or http:// where QHOOK_ALLOW_HTTP allows it."
        )
    if problem == "protocol":
        return (
            f"{host} only offers TLS versions older than 1.2, which qhook refuses. The receiver must "
            "enable TLS 1.2 or 1.3."
        )
    detail = f": {error}" if error else ""
    return f"The TLS handshake with {host} failed{detail}."


def _auth_hint(host: str, error: str | None, auth_profile: str | None, retries: str) -> str:
    profile = f"auth profile '{auth_profile}'" if auth_profile else "the auth profile"
    if error and error.startswith(ALLOWED_DOMAINS_PREFIX):
        return (
            f"The credentials of {profile} may only be sent to its allowed domains, and {host} is not "
            "one of them. Add the host to the profile's allowed_domains, or use another profile."
        )
    if error and error.startswith(SET_IDS_PREFIX):
        return (
            f"The workflow's set may not use {profile}: the profile serves only the sets in its "
            "set_ids. An admin of every set can add this set to set_ids, or give the signal another "
            "profile; then send the delivery again from the Hub."
        )
    detail = f" ({error})" if error else ""
    failed = f"qhook could not get an access token for {profile}{detail}."
    text = error or ""
    if " unreachable" in text:
        return f"{failed} Is the identity provider up, and the token URL right?{retries}"
    answered = re.search(r"token endpoint \S+ answered (\d{3})", text)
    if answered and answered.group(1).startswith("5"):
        return f"{failed} The identity provider had a server error.{retries} If it persists, ask them."
    if "answered 200 with" in text:
        return (
            f"{failed} The token URL answered, but not with a token: is it the provider's token "
            "endpoint (not a login page or the API itself)?"
        )
    return f"{failed} Check the token URL, client id and client secret of the profile."


def _status_hint(
    host: str, code: int, auth_profile: str | None, paused_until: datetime | None, retries: str
) -> str:
    if code in (401, 403):
        if auth_profile:
            return (
                f"The endpoint rejected the credentials of auth profile '{auth_profile}'. "
                "Check or regenerate the API token."
            )
        # A receiver that checks qhook's signature answers 401 too (receiving.md's examples do):
        # after a secret rotation that is the likelier cause, and "attach a profile" misled.
        return (
            f"{host} answered {_reason(code)}. If it checks qhook's signature (webhook-signature), its "
            "signing secret differs from this signal's: compare them. If it wants credentials, attach an "
            "auth profile to this signal."
        )
    if code == 404:
        return f"No such path on {host}: check the URL."
    if code == 410:
        return (
            f"{host} says this URL is gone for good (410 Gone), so qhook paused the signal. Fix the URL, "
            "then resume the signal and redeliver."
        )
    if code == 413:
        return (
            f"{host} refused the request body as too large (413). Send a smaller payload (payload "
            "'result' or a template instead of 'envelope') or raise the receiver's limit."
        )
    if code == 503 and paused_until is not None:  # a maintenance window more often than a limit
        until = paused_until.strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"{host} is unavailable (503) and asked qhook to wait; deliveries to it are paused until "
            f"{until} (Retry-After), then go on by themselves."
        )
    if code == 429:
        if paused_until is not None:
            until = paused_until.strftime("%Y-%m-%d %H:%M:%S UTC")
            return (
                f"{host} is rate-limiting qhook; deliveries to it are paused until {until} "
                "(Retry-After). Consider a rate limit on this endpoint."
            )
        return f"{host} is rate-limiting qhook (429).{retries} Consider a rate limit on this endpoint."
    if code == 408:
        return f"{host} gave up waiting for the request (408).{retries}"
    if code in PERMANENT_SERVER_STATUSES:
        return (
            f"{host} answered {_reason(code)}: it does not take this request at this URL, and waiting "
            "will not change that, so qhook does not retry. Check the URL and the receiver's setup."
        )
    if 500 <= code < 600:
        return (
            f"{host} had a server error ({_reason(code)}).{retries} If it persists, check the receiving "
            "application's logs."
        )
    if 400 <= code < 500:
        return (
            f"{host} refused the request ({_reason(code)}): the receiver does not accept this payload. "
            "The response body usually says why."
        )
    return f"{host} answered {_reason(code)}, which qhook does not treat as a success."


def waiting(
    *,
    status: str,
    now: datetime,
    next_attempt_at: datetime | None,
    lease_expires_at: datetime | None,
    origin: str,
    endpoint_paused: bool = False,
    throttled_until: datetime | None = None,
    circuit_state: str = "closed",
    signal_paused: str | None = None,
    waits_for: tuple[int, str] | None = None,
) -> str | None:
    """Why a delivery that is not finished has not gone yet, for the Hub; None once it finished.

    The first cause that holds it wins, in the order a worker checks them.
    """
    if status not in ("pending", "retrying", "held"):
        return None
    if lease_expires_at is not None and lease_expires_at > now:
        # A worker holds it; the Hub cannot tell a live one from one killed mid-send.
        return (
            f"Being sent now (a worker holds it until {lease_expires_at:%H:%M:%S} UTC; should that "
            "worker have stopped, it is sent again then)."
        )
    if signal_paused is not None:
        return f"Waiting: its signal is paused ({signal_paused}). Resume the signal to send it."
    if waits_for is not None:
        earlier, earlier_status = waits_for
        return (
            f"Waiting: the signal keeps each result's deliveries in order, and delivery {earlier} of "
            f"the same result is still {earlier_status}. This one goes once that one succeeded, "
            "failed or was cancelled."
        )
    if endpoint_paused:
        return f"Waiting: an operator paused {origin}. Resume it on the Endpoints page to send it."
    if throttled_until is not None and throttled_until > now:
        return (
            f"Waiting: {origin} asked qhook to wait until {throttled_until:%Y-%m-%d %H:%M:%S} UTC "
            "(Retry-After). Send now on the Endpoints page ends the wait."
        )
    if circuit_state != "closed" or status == "held":
        return (
            f"Held: the circuit of {origin} is open after repeated failures. qhook probes it with one "
            "delivery now and then and sends what is held, without using up attempts, once it answers."
        )
    if next_attempt_at is not None and next_attempt_at > now:
        return f"Next try at {next_attempt_at:%Y-%m-%d %H:%M:%S} UTC."
    return "Due now: it goes when a worker has room within the endpoint's limits."
