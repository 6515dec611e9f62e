"""A workflow document (triggers, filter, signals) validated as a whole, and overlap warnings; pure."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from qhook.domain import credentials, filters, payloads, retry, signing, triggers
from qhook.domain import headers as headers_mod
from qhook.domain.filters import FieldLike
from qhook.domain.ids import is_id
from qhook.domain.rates import parse_rate
from qhook.errors import ValidationFailed

SIGNAL_TYPES = ("webhook", "update_result", "transfer", "email")
MAX_STATIC_HEADERS = 50
MAX_HEADER_VALUE = 4_000  # well under the 8 KiB most servers take for all headers
WEBHOOK_DEFAULTS: dict[str, Any] = {
    "auth_profile_id": None,
    "payload": "envelope",
    "subject": "",
    "message": "",
    "body_template": None,
    "headers": {},
    "timeout_s": 15,
    "max_attempts": 12,
    "max_age": "P2D",
    "ordered": False,
    "rate_limit": None,
    "max_in_flight": 10,
}


@dataclass(frozen=True, slots=True)
class SignalSpec:
    type: str
    config: dict[str, Any]  # never holds the secret
    id: int | None = None  # given on PATCH to keep a signal (and its secret and deliveries)
    secret: str | None = None  # a webhook's whsec_ secret when the caller gave one


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    name: str
    set_id: int
    active: bool
    triggers: triggers.Triggers
    filter: dict[str, Any] | None
    error_email: str | None
    signals: tuple[SignalSpec, ...]
    filter_node: filters.Node | None = field(default=None, compare=False)


def _fail(path: str, expected: str) -> ValidationFailed:
    return ValidationFailed(f"{path}: {expected}", details=[{"field": path, "error": expected}])


def simple_url_check(url: str, *, allow_http: bool) -> None:
    """Scheme and host; the delivery engine also checks every address it connects to (SSRF)."""
    parts = urlsplit(url)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(
            "an https:// URL with a host" + ("" if allow_http else " (plain http needs QHOOK_ALLOW_HTTP)")
        )


def transfer_set_ids(doc: Mapping[str, Any]) -> set[int]:
    """Sets named by transfer signals, so the caller can load their fields before validating."""
    found = set()
    for signal in doc.get("signals") or []:
        if isinstance(signal, dict) and signal.get("type") == "transfer":
            set_id = signal.get("set_id")
            if is_id(set_id):  # others are refused by the signal's own check
                found.add(set_id)
    return found


# What GET shows but nobody sets: accepted and ignored, so GET -> edit -> PATCH works.
READ_ONLY_WORKFLOW_KEYS = frozenset({"id", "created_at", "updated_at"})
READ_ONLY_SIGNAL_KEYS = frozenset({"secret_set", "paused_reason"})


def parse_workflow(
    doc: Any,
    fields: Sequence[FieldLike],
    *,
    other_sets: Mapping[int, Sequence[FieldLike]],
    check_url: Callable[[str], str | None],
    inactive: Collection[str] = (),
) -> WorkflowSpec:
    """Validate a whole workflow document against its set's (active) fields; 422 names the place,
    and says so when a trigger or the filter names one of the ``inactive`` (deactivated) fields."""
    if not isinstance(doc, dict):
        raise _fail("body", "a workflow object")
    allowed = {"name", "set_id", "active", "triggers", "filter", "signals", "error_email"}
    unknown = sorted(set(doc) - allowed - READ_ONLY_WORKFLOW_KEYS)
    if unknown:
        raise _fail(unknown[0], f"not a workflow key ({', '.join(sorted(allowed))})")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise _fail("name", "a name of 1 to 200 characters")
    set_id = doc.get("set_id")
    if not is_id(set_id):
        raise _fail("set_id", "the id of a set")
    active = doc.get("active", True)
    if not isinstance(active, bool):
        raise _fail("active", "true or false")
    parsed_triggers = triggers.parse_triggers(doc.get("triggers"), fields, inactive=inactive)
    raw_filter = doc.get("filter") or None
    node = filters.parse_filter(raw_filter, fields, inactive=inactive)
    error_email = doc.get("error_email")
    if error_email == "":
        error_email = None
    if error_email is not None:  # the rule of an e-mail signal's addresses ("a@" was taken), one only
        if not isinstance(error_email, str) or len(email_addresses(error_email, "error_email")) != 1:
            raise _fail("error_email", "one e-mail address such as ops@example.com")
        error_email = error_email.strip()
    raw_signals = doc.get("signals") or []
    if not isinstance(raw_signals, list):
        raise _fail("signals", "a list of signals")
    signals = tuple(
        _signal(raw, f"signals[{i}]", fields, other_sets, check_url) for i, raw in enumerate(raw_signals)
    )
    ids = [s.id for s in signals if s.id is not None]
    if len(ids) != len(set(ids)):
        raise _fail("signals", "each signal id at most once")
    return WorkflowSpec(
        name=name.strip(),
        set_id=set_id,
        active=active,
        triggers=parsed_triggers,
        filter=raw_filter,
        error_email=error_email,
        signals=signals,
        filter_node=node,
    )


def _int(raw: Mapping[str, Any], key: str, path: str, low: int, high: int, default: int) -> int:
    value = raw.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(f"{path}.{key}", f"an integer from {low} to {high}")
    return value


def _signal(
    raw: Any,
    path: str,
    fields: Sequence[FieldLike],
    other_sets: Mapping[int, Sequence[FieldLike]],
    check_url: Callable[[str], str | None],
) -> SignalSpec:
    if not isinstance(raw, dict):
        raise _fail(path, "a signal object with a 'type'")
    kind = raw.get("type")
    if kind not in SIGNAL_TYPES:
        raise _fail(f"{path}.type", f"one of {', '.join(SIGNAL_TYPES)}, got {kind!r}")
    signal_id = raw.get("id")
    if signal_id is not None and (isinstance(signal_id, bool) or not isinstance(signal_id, int)):
        raise _fail(f"{path}.id", "the id of an existing signal of this workflow")
    if kind == "webhook":
        config, secret = _webhook(raw, path, fields, check_url)
        return SignalSpec(kind, config, signal_id, secret)
    if kind == "update_result":
        return SignalSpec(kind, {"values": _values(raw, path, fields, "the set")}, signal_id)
    if kind == "transfer":
        return SignalSpec(kind, _transfer(raw, path, other_sets), signal_id)
    return SignalSpec(kind, _email(raw, path), signal_id)


def _only(raw: Mapping[str, Any], path: str, keys: set[str]) -> None:
    extra = sorted(set(raw) - keys - {"type", "id"} - READ_ONLY_SIGNAL_KEYS)
    if extra:
        raise _fail(f"{path}.{extra[0]}", f"one of {', '.join(sorted(keys))}")


def _webhook(
    raw: Mapping[str, Any], path: str, fields: Sequence[FieldLike], check_url: Callable[[str], str | None]
) -> tuple[dict[str, Any], str | None]:
    _only(raw, path, set(WEBHOOK_DEFAULTS) | {"url", "secret"})
    url = raw.get("url")
    if not isinstance(url, str) or not url.strip():
        raise _fail(f"{path}.url", "the receiver's URL")
    if credentials.has_redacted_value(url):
        # A URL copied from what qhook shows: the placeholder would be sent as the key.
        raise _fail(f"{path}.url", f"the key itself in place of {credentials.REDACTED}")
    try:
        url = check_url(url.strip()) or url.strip()
    except ValueError as exc:
        raise _fail(f"{path}.url", str(exc)) from exc
    except ValidationFailed as exc:
        expected = exc.details[0]["error"] if exc.details else exc.message
        raise _fail(f"{path}.url", str(expected)) from exc
    config = {"url": url, **WEBHOOK_DEFAULTS}
    profile = raw.get("auth_profile_id")
    if profile is not None and not is_id(profile):
        raise _fail(f"{path}.auth_profile_id", "the id of an auth profile")
    config["auth_profile_id"] = profile
    kind = raw.get("payload", "envelope")
    if kind not in payloads.PAYLOAD_KINDS:
        raise _fail(f"{path}.payload", f"one of {', '.join(payloads.PAYLOAD_KINDS)}")
    config["payload"] = kind
    for key in ("subject", "message"):
        value = raw.get(key) or ""
        config[key] = payloads.check_template(value, f"{path}.{key}")
    if kind == "template":
        config["body_template"] = payloads.check_body_template(
            raw.get("body_template"), f"{path}.body_template", fields
        )
    elif raw.get("body_template") is not None:
        raise _fail(f"{path}.body_template", 'only with "payload": "template"')
    headers = raw.get("headers")
    headers = {} if headers is None else headers  # [] was taken as no headers
    if not isinstance(headers, dict):
        raise _fail(f"{path}.headers", "an object of header names to text values")
    if len(headers) > MAX_STATIC_HEADERS:
        raise _fail(f"{path}.headers", f"at most {MAX_STATIC_HEADERS} headers")
    seen: dict[str, str] = {}
    for name, value in headers.items():
        if isinstance(name, str) and name.lower() in seen:
            # Header names ignore case: one of the two was silently not sent.
            raise _fail(
                f"{path}.headers.{name}", f"a name other than {seen[name.lower()]} (header names ignore case)"
            )
        seen[str(name).lower()] = str(name)
        if not headers_mod.is_name(name):
            raise _fail(f"{path}.headers.{name}", headers_mod.NAME_EXPECTED)
        if headers_mod.is_reserved(name):
            raise _fail(
                f"{path}.headers.{name}", f"a header name qhook does not set itself ({name} is qhook's)"
            )
        if credentials.is_credential(name):
            # Static headers are shown to every viewer and kept unencrypted; a profile is neither.
            raise _fail(
                f"{path}.headers.{name}",
                "a header other than a credential: put credentials in an auth profile "
                '(type "header", or basic / oauth2), which keeps them encrypted and never shows them',
            )
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise _fail(f"{path}.headers.{name}", "a single-line text value")
        if len(value) > MAX_HEADER_VALUE:
            # Receivers refuse long headers (431): every delivery of the signal failed.
            raise _fail(f"{path}.headers.{name}", f"at most {MAX_HEADER_VALUE:,} characters")
    config["headers"] = dict(headers)
    timeout = raw.get("timeout_s", 15)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
        raise _fail(f"{path}.timeout_s", "seconds, more than 0 and at most 60")
    config["timeout_s"] = timeout
    config["max_attempts"] = _int(
        raw, "max_attempts", path, 1, retry.MAX_ATTEMPTS_LIMIT, retry.DEFAULT_MAX_ATTEMPTS
    )
    config["max_in_flight"] = _int(raw, "max_in_flight", path, 1, 100, 10)
    max_age = raw.get("max_age") or WEBHOOK_DEFAULTS["max_age"]
    try:
        retry.parse_max_age(max_age)  # the same parser the worker uses at send time
    except ValueError as exc:
        raise _fail(f"{path}.max_age", str(exc)) from exc
    config["max_age"] = max_age
    ordered = raw.get("ordered", False)
    if not isinstance(ordered, bool):
        raise _fail(f"{path}.ordered", "true or false")
    config["ordered"] = ordered
    rate = raw.get("rate_limit")
    if rate is not None:
        if not isinstance(rate, str):
            raise _fail(f"{path}.rate_limit", "a rate such as '30/minute'")
        parse_rate(rate, f"{path}.rate_limit")
    config["rate_limit"] = rate
    secret = raw.get("secret")
    if secret is not None and not signing.is_valid_secret(secret):
        raise _fail(f"{path}.secret", signing.SECRET_EXPECTED)
    return config, secret


def _values(raw: Mapping[str, Any], path: str, fields: Sequence[FieldLike], where: str) -> dict[str, Any]:
    values = raw.get("values")
    if not isinstance(values, dict) or not values:
        raise _fail(f"{path}.values", "an object of field names to values or templates")
    names = {f.name for f in fields}
    for name, value in values.items():
        if name not in names:
            raise _fail(f"{path}.values.{name}", f"a field of {where} ({', '.join(sorted(names))})")
        if isinstance(value, str):
            payloads.check_template(value, f"{path}.values.{name}")
        elif value is not None and not isinstance(value, bool | int | float):
            raise _fail(f"{path}.values.{name}", "a constant (text, number, boolean, null) or a template")
    return dict(values)


def _transfer(
    raw: Mapping[str, Any], path: str, other_sets: Mapping[int, Sequence[FieldLike]]
) -> dict[str, Any]:
    _only(raw, path, {"set_id", "key_field", "values"})
    set_id = raw.get("set_id")
    if isinstance(set_id, bool) or not isinstance(set_id, int) or set_id not in other_sets:
        raise _fail(f"{path}.set_id", "the id of an existing set")
    target = other_sets[set_id]
    values = _values(raw, path, target, f"set {set_id}")
    key_field = raw.get("key_field")
    if key_field is not None:
        if key_field not in {f.name for f in target}:
            raise _fail(f"{path}.key_field", f"a field of set {set_id}")
        if key_field not in values:
            raise _fail(f"{path}.values.{key_field}", "a value for the key field")
    return {"set_id": set_id, "key_field": key_field, "values": values}


_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
MAX_RECIPIENTS = 20


def email_addresses(raw: Any, path: str) -> list[str]:
    """A list of plain addresses (a single string, or comma-separated ones, is accepted too)."""
    given_as_text = isinstance(raw, str)
    if isinstance(raw, str):
        raw = [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_RECIPIENTS:
        raise _fail(path, f"a list of 1 to {MAX_RECIPIENTS} e-mail addresses")
    addresses = []
    for i, address in enumerate(raw):
        # A plain address only: no display names, no line breaks (nothing to inject into headers).
        if not isinstance(address, str) or len(address) > 320 or not _ADDRESS.match(address.strip()):
            place = path if given_as_text else f"{path}[{i}]"
            raise _fail(place, "an e-mail address such as qa@example.com")
        addresses.append(address.strip())
    return addresses


def _email(raw: Mapping[str, Any], path: str) -> dict[str, Any]:
    _only(raw, path, {"to", "subject", "message"})
    return {
        "to": email_addresses(raw.get("to"), f"{path}.to"),
        "subject": payloads.check_template(raw.get("subject") or "", f"{path}.subject"),
        "message": payloads.check_template(raw.get("message") or "", f"{path}.message"),
    }


@dataclass(frozen=True, slots=True)
class OverlapView:
    """What overlap detection needs of a workflow."""

    id: int
    name: str
    active: bool
    actions: frozenset[str]
    filter: Any
    urls: frozenset[str]


def overlaps(workflow: OverlapView, others: Sequence[OverlapView]) -> list[str]:
    """Warnings for active workflows of the same set that would send the same event to the same URL."""
    warnings = []
    for other in others:
        if other.id == workflow.id or not (workflow.active and other.active):
            continue
        shared_actions = workflow.actions & other.actions
        shared_urls = workflow.urls & other.urls
        same_filter = workflow.filter is None or other.filter is None or workflow.filter == other.filter
        if shared_actions and shared_urls and same_filter:
            warnings.append(
                f"workflow {other.id} ({other.name!r}) also fires on {', '.join(sorted(shared_actions))}"
                f" and sends to {', '.join(sorted(credentials.shown_url(u) for u in shared_urls))}:"
                " receivers may get the event twice"
            )
    return warnings
