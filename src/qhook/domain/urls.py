"""Webhook target URLs: validation, legacy ``user:pass@`` credentials, and the endpoint origin. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from qhook.errors import ValidationFailed, field_error

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class TargetUrl:
    """A validated target: the URL without credentials, its origin and host, and any legacy Basic pair."""

    url: str
    origin: str
    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def has_legacy_credentials(self) -> bool:
        return self.username is not None


def _split(url: str) -> SplitResult:
    parts = urlsplit(url.strip())
    parts.port  # noqa: B018 - raises ValueError for a bad port
    return parts


def _host(parts: SplitResult) -> str:
    host = (parts.hostname or "").rstrip(".")
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    return host.lower()


def netloc(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def origin_of(url: str) -> str:
    """``scheme://host:port`` with the default port written out: the endpoint key."""
    parts = _split(url)
    scheme = parts.scheme.lower()
    port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{netloc(_host(parts), port)}"


def origin_or_none(url: object) -> str | None:
    """``origin_of`` a stored URL, or None when it is none (not text, or not a URL): for
    comparing origins, where such a URL matches nothing."""
    try:
        return origin_of(url) if isinstance(url, str) else None
    except ValueError:
        return None


def host_of(url: str) -> str:
    """The lower-case host name (no port), or "" when the URL has none."""
    try:
        return _host(_split(url))
    except ValueError:
        return ""


def parse_target(url: str, *, allow_http: bool, allow_userinfo: bool = True, field: str = "url") -> TargetUrl:
    """Validate a webhook target; 422 naming ``field`` otherwise.

    ``https://user:pass@host`` (the original's way of sending Basic credentials) is split into the
    bare URL and the pair, so the credentials can be stored encrypted and never appear in the URL.
    """
    if not isinstance(url, str) or not url.strip():
        raise field_error(field, "an https:// URL")
    if len(url) > MAX_URL_LENGTH or any(c.isspace() or ord(c) < 32 for c in url.strip()):
        raise field_error(field, f"a URL without spaces, at most {MAX_URL_LENGTH} characters")
    try:
        parts = _split(url)
        host = _host(parts)
    except (ValueError, UnicodeError) as exc:
        raise field_error(field, "a valid URL (host and port)") from exc
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if allow_http else ("https",)
    if scheme not in allowed:
        expected = "an http:// or https:// URL" if allow_http else "an https:// URL (QHOOK_ALLOW_HTTP is off)"
        raise field_error(field, expected)
    if not host:
        raise field_error(field, "a URL with a host name")
    username = password = None
    if parts.username is not None or parts.password is not None:
        if not allow_userinfo:
            raise field_error(field, "a URL without user:password@ (use an auth profile)")
        username, password = unquote(parts.username or ""), unquote(parts.password or "")
    location = netloc(host, parts.port)
    bare = urlunsplit((scheme, location, parts.path or "/", parts.query, ""))
    port = parts.port or DEFAULT_PORTS[scheme]
    return TargetUrl(
        url=bare,
        origin=f"{scheme}://{netloc(host, port)}",
        scheme=scheme,
        host=host,
        port=port,
        username=username,
        password=password,
    )


def is_valid_target(url: str, *, allow_http: bool) -> bool:
    try:
        parse_target(url, allow_http=allow_http)
    except ValidationFailed:
        return False
    return True


def host_matches(host: str, pattern: str) -> bool:
    """``erp.example.com`` matches itself; ``*.example.com`` matches any sub-domain (not the apex)."""
    host, pattern = host.lower().rstrip("."), pattern.strip().lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def split_pattern(pattern: str) -> tuple[str, int | None] | None:
    """An allowed-domain pattern as (host pattern, port or None for any port); None when the port
    part is not one: ``erp.example.com:8443``, ``*.example.com``, ``10.0.0.5:443``, ``[::1]:8443``,
    ``::1`` (an IPv6 address takes a port only in brackets)."""
    text = pattern.strip().lower()
    port_text: str | None = None
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text
    if port_text is None:
        return host.rstrip("."), None
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return host.rstrip("."), int(port_text)


def url_matches(url: str, pattern: str) -> bool:
    """Whether ``url``'s host (and port, the scheme's default when not written) fits ``pattern``."""
    split = split_pattern(pattern)
    if split is None:
        return False
    host_pattern, port = split
    try:
        parts = _split(url)
    except ValueError:
        return False
    host = _host(parts)
    if not host or not host_matches(host, host_pattern):
        return False
    return port is None or (parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 0)) == port


def shown_target(url: str) -> str:
    """Host, with the port when the URL writes one: what a refusal names."""
    try:
        parts = _split(url)
    except ValueError:
        return url
    host = _host(parts)
    return netloc(host, parts.port) if host else url
