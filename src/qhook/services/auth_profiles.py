"""Auth profiles: reusable endpoint credentials (Basic, header, OAuth2 client credentials).

Secret parts (password, header_value, client_secret, client_key) are encrypted with ctx.box into
``secrets_enc``; the API shows only ``<name>_set: true``. Audit entries name what changed, never
a secret value. ``allowed_domains`` limits where a profile's credentials may ever be sent, and
``set_ids`` (absent: every set) which sets' workflows may use them, like an organisation secret
shared with selected repositories: an admin limited to some sets cannot send another team's
credentials to that team's ERP.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from qhook.clock import utcnow
from qhook.context import AppContext
from qhook.domain import headers as header_names
from qhook.domain.credentials import shown_url
from qhook.domain.hints import ALLOWED_DOMAINS_PREFIX, SET_IDS_PREFIX
from qhook.domain.urls import netloc, parse_target, shown_target, split_pattern, url_matches
from qhook.errors import Conflict, NotFound, ValidationFailed, field_error
from qhook.services import audit
from qhook.store import auth_profiles as store
from qhook.store import sets as set_store
from qhook.store.auth_profiles import AuthProfileRow
from qhook.store.db import Tx

TYPES = ("basic", "header", "oauth2_client_credentials")
CONFIG_FIELDS: dict[str, tuple[str, ...]] = {
    "basic": ("username",),
    "header": ("header_name",),
    "oauth2_client_credentials": ("token_url", "client_id", "scope", "audience", "client_auth"),
}
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "basic": ("password",),
    "header": ("header_value",),
    "oauth2_client_credentials": ("client_secret",),
}
COMMON_CONFIG = ("allowed_domains", "set_ids", "ca_cert", "client_cert")
COMMON_SECRETS = ("client_key",)
CLIENT_AUTH = ("basic", "body")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class AuthProfile:
    """A profile with its secrets decrypted: for building requests only, never for responses or logs."""

    id: int
    name: str
    type: str
    config: Mapping[str, Any]
    secrets: Mapping[str, str] = field(repr=False)
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AuthProfileView:
    """What the API shows: the non-secret config and which secrets are set."""

    id: int
    name: str
    type: str
    config: Mapping[str, Any]
    secrets_set: frozenset[str]
    created_at: datetime
    updated_at: datetime


class Scoped(Protocol):
    """Whatever carries a profile's name and non-secret config (a stored row, a view, a profile)."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> Mapping[str, Any]: ...


def domains_of(profile: Scoped) -> tuple[str, ...]:
    return tuple(str(d) for d in profile.config.get("allowed_domains") or ())


def sets_of(profile: Scoped) -> tuple[int, ...] | None:
    """The sets whose workflows may use the profile; None: every set."""
    set_ids = profile.config.get("set_ids")
    return None if set_ids is None else tuple(int(i) for i in set_ids)


def is_allowed(profile: Scoped, url: str) -> bool:
    """Whether the profile's credentials may go to ``url``'s host and port (an empty list allows none)."""
    return _allows(domains_of(profile), url)


def _allows(domains: Iterable[str], url: str) -> bool:
    return any(url_matches(url, pattern) for pattern in domains)


def serves_set(profile: Scoped, set_id: int | None) -> bool:
    """Whether a workflow of ``set_id`` may use the profile (None: no set, only an unlimited profile)."""
    set_ids = sets_of(profile)
    return set_ids is None or set_id in set_ids


def check_allowed(profile: Scoped, url: str, field_name: str = "url") -> None:
    """422 naming ``field_name`` when the profile may not send credentials to the URL's host."""
    if not is_allowed(profile, url):
        raise field_error(
            field_name,
            f"a host auth profile {profile.name!r} may send credentials to "
            f"({', '.join(domains_of(profile))}); {shown_target(url)} is not one",
        )


def check_serves(profile: Scoped, set_id: int, field_name: str = "auth_profile_id") -> None:
    """422 naming ``field_name`` when workflows of ``set_id`` may not use the profile."""
    if not serves_set(profile, set_id):
        raise field_error(
            field_name,
            f"an auth profile that workflows of set {set_id} may use; {profile.name!r} serves only "
            f"set(s) {_listed(sets_of(profile))}",
        )


def refusal_message(profile: Scoped, url: str) -> str:
    """The error text of a send-time refusal (``domain.hints`` recognises the prefix)."""
    return (
        f"{ALLOWED_DOMAINS_PREFIX} {shown_target(url)} is not in the allowed domains of auth profile "
        f"{profile.name!r} ({', '.join(domains_of(profile))})"
    )


def set_refusal_message(profile: Scoped, set_id: int | None) -> str:
    """The error text of a send-time refusal for a set the profile does not serve."""
    whose = f"set {set_id}" if set_id is not None else "a delivery of no set"
    return (
        f"{SET_IDS_PREFIX} auth profile {profile.name!r} serves only set(s) {_listed(sets_of(profile))}, "
        f"not {whose}"
    )


def _listed(set_ids: tuple[int, ...] | None) -> str:
    return ", ".join(map(str, set_ids)) if set_ids else "(none)"


# --- reading ----------------------------------------------------------------------------------------


def _view(row: AuthProfileRow, secret_names: frozenset[str]) -> AuthProfileView:
    return AuthProfileView(
        row.id, row.name, row.type, row.config, secret_names, row.created_at, row.updated_at
    )


def _secrets(ctx: AppContext, row: AuthProfileRow) -> dict[str, str]:
    loaded = json.loads(ctx.box.decrypt(row.secrets_enc))
    return {str(k): str(v) for k, v in loaded.items()}


def list_profiles(ctx: AppContext) -> list[AuthProfileView]:
    with ctx.db.reading() as tx:
        rows = store.list_profiles(tx)
    return [_view(r, frozenset(_secrets(ctx, r))) for r in rows]


def profile_names(ctx: AppContext) -> dict[int, str]:
    """Id -> name of every profile (no secret is decrypted): what a page may show of them."""
    with ctx.db.reading() as tx:
        return {row.id: row.name for row in store.list_profiles(tx)}


def get_profile(ctx: AppContext, profile_id: int) -> AuthProfileView:
    with ctx.db.reading() as tx:
        row = store.profile_by_id(tx, profile_id)
    if row is None:
        raise NotFound(f"No auth profile with id {profile_id}")
    return _view(row, frozenset(_secrets(ctx, row)))


def load_profile(ctx: AppContext, profile_id: int) -> AuthProfile:
    """The decrypted profile for sending (sync; call it from a thread in async code)."""
    with ctx.db.reading() as tx:
        row = store.profile_by_id(tx, profile_id)
    if row is None:
        raise NotFound(f"No auth profile with id {profile_id}")
    return AuthProfile(row.id, row.name, row.type, row.config, _secrets(ctx, row), row.updated_at)


# --- writing ----------------------------------------------------------------------------------------


def create_profile(ctx: AppContext, doc: Mapping[str, Any], actor: str) -> AuthProfileView:
    with ctx.db.transaction() as tx:
        return create_profile_tx(tx, ctx, doc, actor)


def create_profile_tx(tx: Tx, ctx: AppContext, doc: Mapping[str, Any], actor: str) -> AuthProfileView:
    """``create_profile`` inside the caller's transaction (a workflow saving a legacy URL)."""
    name, kind, config, secrets = _normalize(ctx, doc)
    _check_sets_exist(tx, config)
    if store.profile_by_name(tx, name) is not None:
        raise _name_taken(name)
    row = store.insert_profile(
        tx,
        name=name,
        type=kind,
        config=config,
        secrets_enc=ctx.box.encrypt(json.dumps(secrets)),
        now=utcnow(),
    )
    audit.record(
        tx,
        actor,
        "auth_profile.create",
        "auth_profile",
        row.id,
        {"name": name, "type": kind, "config": config, "secrets_set": sorted(secrets)},
    )
    return _view(row, frozenset(secrets))


LEGACY_BASIC_PREFIX = "legacy basic for "


def legacy_basic_profile_tx(
    tx: Tx, ctx: AppContext, *, host: str, username: str, password: str, set_id: int, actor: str
) -> int:
    """The id of a Basic profile for a legacy ``https://user:pass@host`` URL's credentials.

    The credentials go where every other secret goes (encrypted, write-only) and the URL keeps
    none of them. The profile serves the workflow's set. A profile made earlier for the same host
    and credentials is reused only where it serves this set already: one of another set was
    reused and extended, so an admin of one set could confirm another set's password by guessing
    (a right guess answered with the other set's profile id) and then use it.
    """
    for row in store.list_profiles(tx):
        served = sets_of(row)
        if (
            row.type == "basic"
            and row.name.startswith(LEGACY_BASIC_PREFIX)
            and (served is None or set_id in served)
            and list(row.config.get("allowed_domains") or []) == [host]
            and row.config.get("username") == username
            and _secrets(ctx, row).get("password") == password
        ):
            return row.id
    base = f"{LEGACY_BASIC_PREFIX}{host}"
    name, number = base, 2
    while store.profile_by_name(tx, name) is not None:
        name, number = f"{base} ({number})", number + 1
    doc = {
        "name": name,
        "type": "basic",
        "username": username,
        "password": password,
        "allowed_domains": [host],
        "set_ids": [set_id],
    }
    return create_profile_tx(tx, ctx, doc, actor).id


def update_profile(ctx: AppContext, profile_id: int, doc: Mapping[str, Any], actor: str) -> AuthProfileView:
    """Given keys replace the stored ones; secrets left out stay as they are; null removes a key."""
    with ctx.db.transaction() as tx:
        row = store.profile_by_id(tx, profile_id)
        if row is None:
            raise NotFound(f"No auth profile with id {profile_id}")
        if "type" in doc and doc["type"] != row.type:
            raise field_error("type", f"{row.type!r}: a profile keeps its type; create a new one instead")
        old_secrets = _secrets(ctx, row)
        merged: dict[str, Any] = {"name": row.name, "type": row.type, **row.config, **old_secrets}
        merged.update(doc)
        if merged.get("client_cert") is None:
            merged.pop("client_key", None)
        name, _, config, secrets = _normalize(ctx, {k: v for k, v in merged.items() if v is not None})
        _check_sets_exist(tx, config)
        _refuse_stranded_uses(tx, row.name, profile_id, config)
        if name != row.name:
            other = store.profile_by_name(tx, name)
            if other is not None and other.id != profile_id:
                raise _name_taken(name)
        now = utcnow()
        updated = store.update_profile(
            tx,
            profile_id,
            name=name,
            config=config,
            secrets_enc=ctx.box.encrypt(json.dumps(secrets)),
            updated_at=now,
        )
        assert updated is not None
        # A changed credential makes a cached OAuth token stale for every worker.
        store.delete_token(tx, profile_id)
        changed = sorted(k for k in set(config) | set(row.config) if config.get(k) != row.config.get(k))
        audit.record(
            tx,
            actor,
            "auth_profile.update",
            "auth_profile",
            profile_id,
            {
                "name": name,
                "changed": ([*changed, "name"] if name != row.name else changed),
                "config": config,
                "secrets_changed": sorted(
                    k for k in set(secrets) | set(old_secrets) if secrets.get(k) != old_secrets.get(k)
                ),
            },
        )
    return _view(updated, frozenset(secrets))


def delete_profile(ctx: AppContext, profile_id: int, actor: str) -> None:
    with ctx.db.transaction() as tx:
        row = store.profile_by_id(tx, profile_id)
        if row is None:
            raise NotFound(f"No auth profile with id {profile_id}")
        uses = store.uses_of(tx, profile_id)
        if uses:
            raise _in_use(
                None,
                f"auth profile {row.name!r} is used by signal(s) {_described(uses)}; "
                "change those signals first",
                uses,
            )
        store.delete_profile(tx, profile_id)
        audit.record(
            tx, actor, "auth_profile.delete", "auth_profile", profile_id, {"name": row.name, "type": row.type}
        )


def _refuse_stranded_uses(tx: Tx, name: str, profile_id: int, config: Mapping[str, Any]) -> None:
    """409 when a narrower ``set_ids`` or ``allowed_domains`` would leave signals with a profile
    they may not use: their deliveries would fail at send time, and their workflows refused
    every later save."""
    uses = store.uses_of(tx, profile_id)
    set_ids = config.get("set_ids")
    if set_ids is not None:
        stranded = [u for u in uses if u.set_id not in set_ids]
        if stranded:
            raise _in_use(
                "set_ids",
                f"auth profile {name!r} is used by signal(s) {_described(stranded)} of sets left out; "
                "give those signals another profile first, or keep their sets",
                stranded,
            )
    elsewhere = [u for u in uses if not _allows(config["allowed_domains"], u.url)]
    if elsewhere:
        raise _in_use(
            "allowed_domains",
            f"auth profile {name!r} is used by signal(s) {_described(elsewhere)} whose URL's host "
            "would no longer be allowed; change those signals first, or keep their hosts",
            elsewhere,
        )


def _name_taken(name: str) -> Conflict:
    expected = f"an auth profile named {name!r} exists already"
    return Conflict(f"name: {expected}", details=[{"field": "name", "error": expected}])


def _in_use(field: str | None, error: str, uses: list[store.ProfileUse]) -> Conflict:
    """409 naming the field that cannot change (None: the profile itself) and each signal in the
    way, so that a script or the UI can list them without reading the sentence."""
    detail: dict[str, Any] = {"field": field} if field else {}
    detail["error"] = error
    detail["signals"] = [
        {
            "signal_id": u.signal_id,
            "workflow_id": u.workflow_id,
            "workflow": u.workflow_name,
            "set_id": u.set_id,
            "url": shown_url(u.url),
        }
        for u in uses
    ]
    return Conflict(f"{field}: {error}" if field else error, details=[detail])


def _described(uses: list[store.ProfileUse]) -> str:
    return ", ".join(f"{u.signal_id} (workflow {u.workflow_name!r}, set {u.set_id})" for u in uses)


def forget_set_tx(tx: Tx, set_id: int) -> list[str]:
    """Take a deleted set out of every profile's ``set_ids``; the names of the profiles changed.
    A profile whose last set goes serves no set, never every set."""
    changed: list[str] = []
    for row in store.list_profiles(tx):
        set_ids = sets_of(row)
        if set_ids is not None and set_id in set_ids:
            config = {**row.config, "set_ids": [i for i in set_ids if i != set_id]}
            store.update_profile(tx, row.id, config=config, updated_at=utcnow())
            changed.append(row.name)
    return changed


# --- validation -------------------------------------------------------------------------------------


def _normalize(ctx: AppContext, doc: Mapping[str, Any]) -> tuple[str, str, dict[str, Any], dict[str, str]]:
    """(name, type, config, secrets) from a request body; 422 naming the first bad field."""
    kind = doc.get("type")
    if kind not in TYPES:
        raise field_error("type", "one of " + ", ".join(TYPES))
    known = {"name", "type", *CONFIG_FIELDS[kind], *SECRET_FIELDS[kind], *COMMON_CONFIG, *COMMON_SECRETS}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ValidationFailed(
            f"{unknown[0]}: not a field of a {kind} profile",
            details=[{"field": k, "error": f"not a field of a {kind} profile"} for k in unknown],
        )
    name = _text(doc, "name", max_length=200)
    config: dict[str, Any] = {"allowed_domains": _domains(doc.get("allowed_domains"))}
    if doc.get("set_ids") is not None:
        config["set_ids"] = _set_ids(doc["set_ids"])
    secrets: dict[str, str] = {}
    if kind == "basic":
        config["username"] = _text(doc, "username", max_length=200)
        if ":" in config["username"]:
            raise field_error("username", "a user name without ':' (Basic authentication forbids it)")
        secrets["password"] = _text(doc, "password", max_length=1000, strip=False)
    elif kind == "header":
        header = _text(doc, "header_name", max_length=100)
        if not header_names.is_name(header):
            raise field_error("header_name", "an HTTP header name such as 'X-API-Key'")
        if header_names.is_reserved(header):
            raise field_error("header_name", f"a header qhook does not set itself ({header} is reserved)")
        config["header_name"] = header
        value = _text(doc, "header_value", max_length=4000, strip=False)
        if any(c in value for c in "\r\n\0"):
            raise field_error("header_value", "a header value on one line")
        secrets["header_value"] = value
    else:
        config["token_url"] = parse_target(
            _text(doc, "token_url", max_length=2048),
            allow_http=ctx.settings.allow_http,
            allow_userinfo=False,
            field="token_url",
        ).url
        config["client_id"] = _text(doc, "client_id", max_length=500)
        secrets["client_secret"] = _text(doc, "client_secret", max_length=2000, strip=False)
        for optional in ("scope", "audience"):
            if doc.get(optional) not in (None, ""):
                config[optional] = _text(doc, optional, max_length=1000)
        client_auth = doc.get("client_auth", "basic")
        if client_auth not in CLIENT_AUTH:
            raise field_error("client_auth", "'basic' (HTTP Basic) or 'body' (client_secret in the form)")
        config["client_auth"] = client_auth
    _tls_parts(doc, config, secrets)
    return name, kind, config, secrets


def _text(doc: Mapping[str, Any], name: str, *, max_length: int, strip: bool = True) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value.strip():
        raise field_error(name, "a non-empty string")
    if len(value) > max_length:
        raise field_error(name, f"at most {max_length} characters")
    return value.strip() if strip else value


def _domains(value: Any) -> list[str]:
    expected = (
        "a non-empty list of host names, '*.example.com' for sub-domains (not of a whole top-level "
        "domain), ':8443' after one for that port only"
    )
    if not isinstance(value, list) or not value:
        raise field_error("allowed_domains", expected)
    domains: list[str] = []
    for index, item in enumerate(value):
        split = split_pattern(item) if isinstance(item, str) else None
        if split is None or not _valid_pattern(split[0]):
            raise field_error(f"allowed_domains[{index}]", expected)
        host, port = split
        shown = host if port is None else netloc(host, port)
        if shown not in domains:
            domains.append(shown)
    return domains


def _set_ids(value: Any) -> list[int]:
    expected = "a list of set ids ([] for none), or null for every set"
    if not isinstance(value, list):
        raise field_error("set_ids", expected)
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise field_error(f"set_ids[{index}]", "a set id (a positive integer)")
    return sorted(set(value))


def _check_sets_exist(tx: Tx, config: Mapping[str, Any]) -> None:
    # A profile limited to an id no set has would serve whatever set gets that id next.
    set_ids = config.get("set_ids")
    missing = set_store.missing_ids(tx, set_ids) if set_ids else []
    if missing:
        raise field_error(
            "set_ids", f"ids of existing sets; there is no set {', '.join(str(i) for i in missing)}"
        )


def _valid_pattern(pattern: str) -> bool:
    try:
        ipaddress.ip_address(pattern.strip("[]"))
        return True
    except ValueError:
        pass
    labels = pattern.removeprefix("*.").split(".")
    # "*.com" let the credentials go to every host of a top-level domain.
    least = 2 if pattern.startswith("*.") else 1
    return len(pattern) <= 253 and len(labels) >= least and all(_LABEL.match(label) for label in labels)


def _tls_parts(doc: Mapping[str, Any], config: dict[str, Any], secrets: dict[str, str]) -> None:
    ca_cert = doc.get("ca_cert")
    if ca_cert is not None:
        if not isinstance(ca_cert, str) or not _is_certificate(ca_cert):
            raise field_error(
                "ca_cert", "PEM certificate(s) of the CA that signed the endpoint's certificate"
            )
        config["ca_cert"] = ca_cert
    client_cert, client_key = doc.get("client_cert"), doc.get("client_key")
    if (client_cert is None) != (client_key is None):
        missing = "client_key" if client_key is None else "client_cert"
        raise field_error(missing, "client_cert and client_key together (mutual TLS), or neither")
    if client_cert is not None:
        if not isinstance(client_cert, str) or not _is_certificate(client_cert):
            raise field_error("client_cert", "a PEM client certificate")
        if not isinstance(client_key, str) or not _is_private_key(client_key):
            raise field_error("client_key", "an unencrypted PEM private key")
        config["client_cert"] = client_cert
        secrets["client_key"] = client_key


def _is_certificate(pem: str) -> bool:
    try:
        return bool(x509.load_pem_x509_certificates(pem.encode()))
    except ValueError:
        return False


def _is_private_key(pem: str) -> bool:
    try:
        serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return False
    return True
