"""Settings from QHOOK_* environment variables (pydantic-settings)."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB_POOL_SIZE = 20  # also what a Database made without settings (tests, tools) keeps


class Settings(BaseSettings):
    """Every knob qhook reads; the README's configuration table lists each one."""

    # populate_by_name: Settings(error_mail_interval=...) works beside the aliased environment names.
    model_config = SettingsConfigDict(
        env_prefix="QHOOK_", env_file=None, extra="ignore", frozen=True, populate_by_name=True
    )

    data_dir: Path = Field(Path("var"), description="Folder for the embedded SQLite database and secret key.")
    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite at <data_dir>/qhook.db.")
    secret_key: SecretStr | None = Field(
        None, description="Fernet key for secrets at rest; generated into <data_dir>/secret.key when unset."
    )
    db_pool_size: int = Field(
        DEFAULT_DB_POOL_SIZE,
        ge=2,  # a worker's LISTEN connection is one of them: with one, nothing else ever ran
        description="PostgreSQL connections a process keeps open and never exceeds; more requests wait.",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    public_url: str = Field("", description="Base URL people and receivers reach qhook at.")
    api_rate_limit: str = Field(
        "30/minute",
        description="Requests per API key, e.g. 1000/minute; also per client address without a valid key.",
    )
    ui_rate_limit: str = Field(
        "600/minute", description="API requests per signed-in UI user (the pages' own calls)."
    )
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Largest accepted request body.")
    timezone: str = Field("UTC", description="Time zone for on_date triggers on date fields.")
    max_chain_depth: int = Field(8, ge=0, description="How many transfer signals may follow one another.")
    allowed_target_networks: str = Field("", description="Comma-separated networks exempt from SSRF refusal.")
    allow_http: bool = Field(False, description="Allow plain http:// webhook targets.")
    ca_bundle: Path | None = Field(None, description="Extra CA bundle for webhook TLS verification.")
    smtp_url: str = Field(
        "",
        description="smtp://, smtp+starttls:// or smtps://user:pass@host:port for error reports and"
        " e-mail signals; empty disables them.",
    )
    smtp_from: str = "qhook@localhost"
    error_mail_interval: int = Field(
        900,
        validation_alias=AliasChoices("QHOOK_ERROR_MAIL_INTERVAL", "QHOOK_ERROR_MAIL_INTERVAL_S"),
        description="At most one error digest per endpoint per interval: seconds or an ISO 8601 duration"
        " such as PT15M (QHOOK_ERROR_MAIL_INTERVAL_S, seconds, is read too).",
    )
    retention_days: int = Field(
        30,
        ge=1,
        description="Succeeded and cancelled deliveries and their attempts are purged after this many days.",
    )
    failed_retention_days: int = Field(
        90,
        ge=1,
        description="Failed deliveries are kept this many days, unless resolved earlier (a redelivery that"
        " succeeds then follows QHOOK_RETENTION_DAYS).",
    )
    retention_interval_s: int = Field(300, ge=1, description="How often the scheduler purges old deliveries.")
    # Each bound below was accepted and then stopped or repeated deliveries: no room in flight
    # (claimed rows never sent, their leases renewed for ever), no claim, a lease too short to
    # renew (the same delivery sent again and again).
    worker_concurrency: int = Field(100, ge=1, description="Deliveries in flight per worker process.")
    worker_batch_size: int = Field(200, ge=1)
    worker_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Delivery processes `qhook worker` runs (one per core to use); they split each"
        " endpoint's max_in_flight and share the SQLite worker lock.",
    )
    worker_cpu_affinity: bool = Field(
        False,
        description="Bind delivery process i of `qhook worker` to the i-th CPU it may use (Linux;"
        " `qhook serve` binds its other delivery processes, never its own). For a machine whose"
        " cores the worker has to itself, or shares with its database.",
    )
    worker_metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="`qhook worker` serves its Prometheus metrics on this port (unset: no metrics server).",
    )
    worker_metrics_host: str = Field("127.0.0.1", description="Address the worker's metrics server binds.")
    lease_seconds: int = Field(120, ge=3, description="A worker renews its leases every third of this.")
    circuit_cool_off_s: float = Field(
        60.0, gt=0, description="After an endpoint's circuit opens, wait this long before one probe goes."
    )
    poll_interval_s: float = Field(
        2.0,
        gt=0,
        description=(
            "How often an idle worker looks for work when no wake-up arrives (an API commit in the"
            " same process, NOTIFY on PostgreSQL); rows that come due sooner (retries, scheduled"
            " sends) are still claimed on time, and a busy worker keeps a maintenance beat of at most 1 s."
        ),
    )
    response_body_limit: int = Field(64 * 1024, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("api_rate_limit", "ui_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        from qhook.domain.rates import parse_rate
        from qhook.errors import ValidationFailed

        try:
            parse_rate(value)
        except ValidationFailed as exc:  # a ValueError names the variable; it said "rate_limit"
            raise ValueError(str(exc).removeprefix("rate_limit: ")) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        # Checked here: a typo in the scheme ("postgresq://") or another database ("mysql://")
        # ended in a traceback of SQLAlchemy's plugin loader. The URL is not repeated: it may
        # hold a password.
        url = value.strip()
        scheme = url.partition("://")[0].lower() if "://" in url else None
        if url and scheme not in ("sqlite", "postgresql", "postgres", "postgresql+psycopg"):
            raise ValueError(
                "expected postgresql://user:password@host:5432/database, or sqlite:///path/qhook.db,"
                " or empty (SQLite in QHOOK_DATA_DIR)"
            )
        return url

    @field_validator("ca_bundle", mode="before")
    @classmethod
    def _ca_bundle(cls, value: object) -> object:
        # Checked here: a missing file stopped serve's worker at its first send, while /readyz
        # said ready and nothing was delivered. Empty is unset.
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str | Path):
            return value
        import ssl

        try:
            ssl.create_default_context().load_verify_locations(cafile=str(value))
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ValueError(
                f"cannot use {value}: {reason}; expected a PEM file of CA certificates"
            ) from None
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str) -> str:
        # Checked here: "mail.example.com:587" was read as a host-less URL and mail went to localhost:25.
        return _url_with_host(
            value,
            ("smtp", "smtp+starttls", "smtps"),
            "expected smtp://, smtp+starttls:// or smtps:// with a host, e.g."
            " smtps://user:password@mail.example.com:465",
        )

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        # Links in e-mails and the start banner are built on it ("Open qhook.example.com/ui").
        return _url_with_host(
            value,
            ("http", "https"),
            "expected http:// or https:// with a host, e.g. https://qhook.example.com",
        )

    @field_validator("allowed_target_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        # Checked here: a bad entry stopped qhook serve with a traceback as the worker started.
        from qhook.delivery.ssrf import parse_networks

        try:
            parse_networks(value)
        except ValueError as exc:
            raise ValueError(
                f"{exc}: expected networks such as 10.20.0.0/16 or 192.168.1.7, comma-separated"
            ) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        # Checked here: an unknown zone would otherwise fail every save in a set with an on_date workflow.
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(
                f"unknown time zone {value!r}: expected an IANA name such as 'Europe/Amsterdam' or 'UTC'"
            ) from exc
        return value

    @field_validator("error_mail_interval", mode="before")
    @classmethod
    def _interval(cls, value: object) -> object:
        """Seconds, or an ISO 8601 duration (the issue's PT15M); at least one second."""
        if isinstance(value, str) and value.strip().upper().startswith("P"):
            import isodate

            try:
                duration = isodate.parse_duration(value.strip().upper())
            except (isodate.ISO8601Error, ValueError) as exc:
                raise ValueError(
                    f"expected seconds or an ISO 8601 duration such as PT15M, got {value!r}"
                ) from exc
            if not isinstance(duration, timedelta):
                raise ValueError(f"expected a duration in days, hours, minutes or seconds, got {value!r}")
            value = int(duration.total_seconds())
        if isinstance(value, int | str) and str(value).strip().lstrip("-").isdigit() and int(value) < 1:
            raise ValueError(f"expected at least one second, got {value!r}")
        return value

    @property
    def error_mail_interval_s(self) -> int:
        """The interval in seconds (the name the mailer reads)."""
        return self.error_mail_interval

    @cached_property
    def resolved_database_url(self) -> str:
        """The URL SQLAlchemy gets: the SQLite default, and psycopg 3 for postgresql:// URLs."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'qhook.db').as_posix()}"
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")


def _url_with_host(value: str, schemes: tuple[str, ...], expected: str) -> str:
    """``value`` stripped, empty, or a URL of one of ``schemes`` with a host and a valid port."""
    url = value.strip()
    if not url:
        return ""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or 1 <= parts.port <= 65535
    except ValueError:
        port_ok = False
    if parts.scheme not in schemes or not parts.hostname or not port_ok:
        raise ValueError(expected)
    return url
