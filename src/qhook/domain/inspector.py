"""The request inspector's decisions: scripted answers, bin options, its URLs and what a capture shows.

Pure: data in, data out. A script is a list of steps such as
``[{"status": 500, "times": 3}, {"status": 200}]``; the Nth capture of a bin (counting from 1)
gets the step that covers N, and once every counted step is used up the default answer
(200 ``{"ok": true}``). A single step may also be given as one object.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from qhook.domain import credentials
from qhook.domain import headers as header_names
from qhook.domain.signing import SECRET_EXPECTED, is_valid_secret
from qhook.errors import field_error
from qhook.settings import Settings

DEFAULT_TTL_DAYS = 7
MAX_TTL_DAYS = 90
DEFAULT_MAX_CAPTURES = 500
MAX_MAX_CAPTURES = 10_000
MAX_STEPS = 50
MAX_DELAY_MS = 120_000  # longer than the sender's 60 s timeout, so timeouts can be rehearsed
MAX_ANSWER_BODY_BYTES = 64 * 1024
INSPECT_PREFIX = "/inspect/"

SIGNATURE_VALID = "valid"
SIGNATURE_INVALID = "invalid"
SIGNATURE_UNSIGNED = "unsigned"
SIGNATURE_NO_SECRET = "no secret"

_BIN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A bin answers on qhook's own origin, where the UI and its session cookie live. Whoever may script
# a bin (an editor) must not reach a browser that opens it: every answer is a sandboxed document
# (no script, no same-origin access, whatever its Content-Type says), and a script sets only the
# headers a receiver's answer needs for a rehearsal. Others act on the whole origin or lead away
# from it: cookies, Clear-Site-Data, Strict-Transport-Security, NEL and Report-To (the browser
# would report every later qhook URL to the script's author), Service-Worker-Allowed, Refresh.
ANSWER_GUARDS = (
    ("Content-Security-Policy", "sandbox; default-src 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
)
_ANSWER_HEADERS = frozenset(
    {
        "content-type",
        "retry-after",
        "location",  # a path on qhook only (a redirect is rehearsed; a browser stays on qhook)
        "www-authenticate",
        "etag",
        "last-modified",
        "content-language",
        "server",
        "date",
    }
)
_ANSWER_HEADERS_SAID = (
    "Content-Type (not a script or style sheet type), Retry-After, Location (a path such as /moved),"
    " WWW-Authenticate, ETag, "
    "Last-Modified, Content-Language, Server, Date or an X- header"
)


# Types a browser runs or applies when a qhook page includes the URL: served from qhook's own
# origin, a bin's answer would pass the UI's own script-src 'self' (and style-src 'self') should an
# HTML injection ever appear there. A receiver's answer is never one of them.
_ACTIVE_TYPES = ("javascript", "ecmascript", "jscript", "livescript", "text/css")


def _answer_header(name: str, value: str) -> bool:
    lowered = name.lower()
    if lowered == "content-type":
        return not any(kind in value.lower() for kind in _ACTIVE_TYPES)
    if lowered == "location":
        return value.startswith("/") and not value.startswith("//") and "\\" not in value
    if lowered in _ANSWER_HEADERS:
        return True
    return lowered.startswith("x-") and lowered not in ("x-content-type-options", "x-frame-options")


_STEP_KEYS = frozenset({"status", "headers", "body", "delay_ms", "times"})
_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class Answer:
    """What the capture route sends back."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    delay_ms: int


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a script; ``times`` None means "from here on"."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: Any = None
    has_body: bool = False
    delay_ms: int = 0
    times: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.headers:
            out["headers"] = dict(self.headers)
        if self.has_body:
            out["body"] = self.body
        if self.delay_ms:
            out["delay_ms"] = self.delay_ms
        if self.times is not None:
            out["times"] = self.times
        return out


DEFAULT_STEP = Step()


def parse_responses(value: object, field: str = "responses") -> tuple[Step, ...]:
    """Validate a script (list of steps, one step object, or null) naming the offending field."""
    if value is None:
        return ()
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise field_error(field, "a list of responses like [{'status': 500, 'times': 3}, {'status': 200}]")
    if len(items) > MAX_STEPS:
        raise field_error(field, f"at most {MAX_STEPS} responses")
    steps = tuple(_parse_step(item, f"{field}[{i}]") for i, item in enumerate(items))
    for i, step in enumerate(steps[:-1]):
        if step.times is None:
            raise field_error(
                f"{field}[{i}].times", "a count of 1 or more; only the last response may leave it out"
            )
    return steps


def _parse_step(item: object, field: str) -> Step:
    if not isinstance(item, dict):
        raise field_error(field, "an object with status, headers, body, delay_ms and times")
    unknown = sorted(set(item) - _STEP_KEYS)
    if unknown:
        raise field_error(f"{field}.{unknown[0]}", "one of status, headers, body, delay_ms, times")
    status = _int_in(item.get("status", 200), f"{field}.status", 200, 599)
    delay_ms = _int_in(item.get("delay_ms", 0), f"{field}.delay_ms", 0, MAX_DELAY_MS)
    times = item.get("times")
    if times is not None:
        times = _int_in(times, f"{field}.times", 1, 1_000_000)
    headers = _parse_headers(item.get("headers"), f"{field}.headers")
    has_body = "body" in item
    body = item.get("body")
    if has_body:
        if len(_body_bytes(body)) > MAX_ANSWER_BODY_BYTES:
            raise field_error(f"{field}.body", f"at most {MAX_ANSWER_BODY_BYTES} bytes")
        if status in _NO_BODY_STATUSES and body not in (None, ""):
            raise field_error(f"{field}.body", f"empty: status {status} has no body")
    return Step(status, headers, body, has_body, delay_ms, times)


def _int_in(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise field_error(field, f"a whole number from {low} to {high}")
    return value


def _parse_headers(value: object, field: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise field_error(field, "an object of header names to text values")
    out: list[tuple[str, str]] = []
    for name, header_value in value.items():
        if isinstance(header_value, int | float) and not isinstance(header_value, bool):
            header_value = str(header_value)
        if not isinstance(header_value, str) or any(c in header_value for c in "\r\n\0"):
            raise field_error(f"{field}.{name}", "a text value on one line")
        if not header_names.is_name(name) or not _answer_header(name, header_value):
            raise field_error(
                f"{field}.{name}", f"one of the headers a bin answers with: {_ANSWER_HEADERS_SAID}"
            )
        out.append((name, header_value))
    return tuple(out)


def served_headers(scripted: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """The headers an answer goes out with: the script's and the guards."""
    return [*scripted, *ANSWER_GUARDS]


def _body_bytes(body: Any) -> bytes:
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, separators=(",", ":")).encode()


def answer_for(steps: tuple[Step, ...], n: int) -> Answer:
    """The answer to a bin's Nth capture (1-based)."""
    remaining = n
    chosen = DEFAULT_STEP
    for step in steps:
        if step.times is None or remaining <= step.times:
            chosen = step
            break
        remaining -= step.times
    return render(chosen)


def render(step: Step) -> Answer:
    headers = list(step.headers)
    names = {name.lower() for name, _ in headers}
    if step.status in _NO_BODY_STATUSES:
        body = b""
    elif step.has_body:
        body = _body_bytes(step.body)
        if "content-type" not in names:
            kind = "text/plain; charset=utf-8" if isinstance(step.body, str) else "application/json"
            headers.append(("Content-Type", kind))
    else:
        body = json.dumps({"ok": step.status < 400}, separators=(",", ":")).encode()
        if "content-type" not in names:
            headers.append(("Content-Type", "application/json"))
    return Answer(step.status, tuple(headers), body, step.delay_ms)


def steps_from_json(stored: object) -> tuple[Step, ...]:
    """A script as stored (already validated once); tolerant of null, and of headers a bin could
    set before they were refused (they are left out)."""
    if isinstance(stored, list):
        stored = [_without_refused_headers(step) for step in stored]
    return parse_responses(stored)


def _without_refused_headers(step: object) -> object:
    if not isinstance(step, dict) or not isinstance(step.get("headers"), dict):
        return step
    kept = {k: v for k, v in step["headers"].items() if isinstance(v, str) and _answer_header(k, v)}
    return {**step, "headers": kept}


def steps_to_json(steps: tuple[Step, ...]) -> list[dict[str, Any]] | None:
    return [step.to_json() for step in steps] or None


@dataclass(frozen=True, slots=True)
class BinOptions:
    steps: tuple[Step, ...]
    ttl_days: int
    max_captures: int
    secret: str | None


def parse_bin_options(
    responses: object, ttl_days: object, max_captures: object, secret: object
) -> BinOptions:
    steps = parse_responses(responses)
    ttl = _int_in(DEFAULT_TTL_DAYS if ttl_days is None else ttl_days, "ttl_days", 1, MAX_TTL_DAYS)
    cap = _int_in(
        DEFAULT_MAX_CAPTURES if max_captures is None else max_captures, "max_captures", 1, MAX_MAX_CAPTURES
    )
    if secret is not None and (not isinstance(secret, str) or not is_valid_secret(secret)):
        raise field_error("secret", SECRET_EXPECTED)
    return BinOptions(steps, ttl, cap, secret)


def is_bin_id(text: str) -> bool:
    return bool(_BIN_ID.match(text))


def bin_url(base: str, bin_id: str) -> str:
    """``<base>/inspect/<id>``; ``base`` is QHOOK_PUBLIC_URL or the base URL of the creating request."""
    return base.rstrip("/") + INSPECT_PREFIX + bin_id


def capture_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers by lower-case name (repeats joined by ", "), credentials masked."""
    out: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if credentials.is_credential(name):  # a capture must not hand them to whoever reads the bin
            value = mask_credential(value)
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def mask_credential(value: str) -> str:
    """Keep the scheme (``Basic``, ``Bearer``) so people see which kind arrived, hide the rest."""
    scheme, _, rest = value.partition(" ")
    if rest and header_names.is_name(scheme):  # an auth scheme has a header name's syntax (a token)
        return f"{scheme} [redacted {len(rest)} characters]"
    return f"[redacted {len(value)} characters]"


def body_for_display(body: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 text as is, anything else as base64."""
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


def is_own_inspector(url: str, settings: Settings) -> bool:
    """True when ``url`` is a bin of this qhook's own inspector, which deliveries may always reach.

    Matches QHOOK_PUBLIC_URL, or this server's host:port (loopback names when it listens on all
    interfaces), followed by ``/inspect/<id>``. Paths with dot segments or encoded separators are
    refused, so the exemption cannot be walked over to another route of this server.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return False
    port = port or (443 if parts.scheme == "https" else 80)
    for base_scheme, base_host, base_port, base_path in _own_bases(settings):
        if (parts.scheme, host, port) != (base_scheme, base_host, base_port):
            continue
        if _is_bin_path(parts.path, base_path):
            return True
    return False


def _own_bases(settings: Settings) -> list[tuple[str, str, int, str]]:
    bases: list[tuple[str, str, int, str]] = []
    if settings.public_url:
        try:
            public = urlsplit(settings.public_url)
            public_port = public.port
        except ValueError:
            public_port, public = None, None  # a broken setting exempts nothing
        if public is not None and public.scheme in ("http", "https") and public.hostname:
            default = 443 if public.scheme == "https" else 80
            bases.append(
                (public.scheme, public.hostname.lower(), public_port or default, public.path.rstrip("/"))
            )
    host = settings.host.strip("[]").lower()
    hosts = {host}
    if host in ("0.0.0.0", "::", "", "127.0.0.1", "localhost", "::1"):
        hosts |= {"127.0.0.1", "localhost", "::1"}
    bases.extend(
        ("http", name, settings.port, "") for name in sorted(hosts) if name not in ("0.0.0.0", "::", "")
    )
    return bases


def _is_bin_path(path: str, base_path: str) -> bool:
    prefix = base_path + INSPECT_PREFIX
    if not path.startswith(prefix):
        return False
    lowered = path.lower()
    if "\\" in path or "%2e" in lowered or "%2f" in lowered or "%5c" in lowered:
        return False
    rest = path[len(prefix) :].split("/")
    if not is_bin_id(rest[0]):
        return False
    return all(segment not in (".", "..") for segment in rest)
