"""Every table. Alembic migrations are generated from this metadata; a test checks they agree."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from qhook.store.types import JSONType, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Integer keys that must grow past 2**31 over years of deliveries use BigInteger on PostgreSQL.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# SQLite gives a new row the highest id plus one unless the table says AUTOINCREMENT: delete the
# newest result, set or workflow and the next one got its id. Receivers then saw "deleted @id 6"
# and "new @id 6" for two batches, the Hub mixed two workflows' history, and a user limited to a
# deleted set saw the next set. These tables never give an id again (migration 0008); PostgreSQL's
# sequences never did.
NEVER_REUSED = ("users", "sets", "fields", "results", "workflows", "signals", "auth_profiles")

# --- people and access -------------------------------------------------------------------------

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("password_hash", Text, nullable=True),
    Column("role", String(20), nullable=False),  # admin | editor | viewer
    Column("set_ids", JSONType, nullable=True),  # null: all sets; else list of set ids the user may use
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", UTCDateTime, nullable=False),
    sqlite_autoincrement=True,  # SQLite: an id is never given again (see NEVER_REUSED)
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("label", String(200), nullable=False, server_default=""),
    Column("prefix", String(16), nullable=False),  # shown in listings so people recognise a key
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 hex of the whole key
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
)

ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

# One row: bumped in the same transaction as any change to a set's fields or its workflows, so
# every process knows when its shared copy of those definitions is stale (store/definitions.py).
definitions_state = Table(
    "definitions_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)

# Fixed-window counters shared by every process (rate limits of the API and of endpoints).
rate_counters = Table(
    "rate_counters",
    metadata,
    Column("bucket", String(200), primary_key=True),  # e.g. "apikey:12"
    Column("window_start_ms", BigInteger, nullable=False),  # window opens at the first hit after the last
    Column("count", Integer, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),  # e.g. workflow.create
    Column("target_type", String(50), nullable=False),
    Column("target_id", String(100), nullable=True),
    Column("details", JSONType, nullable=True),
)

# --- sets, fields, results, events --------------------------------------------------------------

sets = Table(
    "sets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(20), nullable=False),  # analysis_set | selection_list
    Column("group_id", Integer, nullable=False, server_default=text("1")),
    Column("group_name", String(200), nullable=False, server_default="Default"),
    Column("top_level_menu", String(200), nullable=False, server_default="Quality"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    sqlite_autoincrement=True,  # SQLite: an id is never given again (see NEVER_REUSED)
)

fields = Table(
    "fields",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("set_id", Integer, ForeignKey("sets.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("label", String(200), nullable=False),
    Column("type", String(20), nullable=False),  # text number integer boolean date datetime list
    Column("required", Boolean, nullable=False, server_default=text("false")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("position", Integer, nullable=False),
    Column("options", JSONType, nullable=True),  # list: [{"id": 1, "label": "draft", "active": true}]
    UniqueConstraint("set_id", "name", name="uq_fields_set_id_name"),
    sqlite_autoincrement=True,  # SQLite: an id is never given again (see NEVER_REUSED)
)

results = Table(
    "results",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("set_id", Integer, ForeignKey("sets.id", ondelete="CASCADE"), nullable=False),
    Column("date", UTCDateTime, nullable=False),
    Column("values", JSONType, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("updated_by", String(200), nullable=False),
    Index("ix_results_set_id_id", "set_id", "id"),
    Index("ix_results_set_id_date", "set_id", "date"),
    sqlite_autoincrement=True,  # SQLite: an id is never given again (see NEVER_REUSED)
)

# The audit trail and the outbox: one row per change or firing, written in the change's transaction.
events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("uid", String(40), nullable=False, unique=True),  # evt_<ulid>, what receivers see
    Column("set_id", Integer, nullable=False),
    Column("result_id", Integer, nullable=True),  # no FK: the trail outlives the result
    Column("action", String(20), nullable=False),  # new modified deleted date manual
    Column("actor", String(200), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("before", JSONType, nullable=True),  # flat result as it was (null for new)
    Column("after", JSONType, nullable=True),  # flat result as it is (null for deleted)
    Column("changes", JSONType, nullable=False),  # {"field": {"old": .., "new": ..}}
    Column("evaluations", JSONType, nullable=False),  # [{"workflow_id", "fired", "reason"}]
    Column("chain", JSONType, nullable=True),  # {"depth": n, "origin_event": uid, "workflows": [ids]}
    # The result's version the event shows (a deletion: its last + 1); null before migration 0011.
    Column("result_version", Integer, nullable=True),
    Column("due_at", UTCDateTime, nullable=True),  # a date event's due time; null for the others
    Index("ix_events_result_id_id", "result_id", "id"),
    Index("ix_events_set_id_id", "set_id", "id"),
)

# --- workflows ------------------------------------------------------------------------------------

workflows = Table(
    "workflows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("set_id", Integer, ForeignKey("sets.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("triggers", JSONType, nullable=False),
    Column("filter", JSONType, nullable=True),
    Column("error_email", String(320), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    sqlite_autoincrement=True,  # SQLite: an id is never given again (see NEVER_REUSED)
)

signals = Table(
    "signals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "workflow_id", Integer, ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("position", Integer, nullable=False),
    Column("type", String(30), nullable=False),  # webhook email update_result transfer
    Column("config", JSONType, nullable=False),  # everything but secrets
    Column("secret_enc", Text, nullable=True),  # whsec_ signing secret, encrypted
    Column("previous_secret_enc", Text, nullable=True),  # still signs until previous_secret_until
    Column("previous_secret_until", UTCDateTime, nullable=True),
    Column("paused_reason", Text, nullable=True),  # e.g. the receiver answered 410 Gone
    Column("active", Boolean, nullable=False, server_default=text("true")),
    sqlite_autoincrement=True,  # SQLite: an id is never given again (see NEVER_REUSED)
)

# on_date triggers: one row per (workflow, result), computed when the result is written.
schedules = Table(
    "schedules",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("workflow_id", Integer, ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False),
    Column("result_id", Integer, ForeignKey("results.id", ondelete="CASCADE"), nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("fired_at", UTCDateTime, nullable=True),
    Column("timezone", String(64), nullable=True),  # QHOOK_TIMEZONE of due_at; null: from before 0006
    UniqueConstraint("workflow_id", "result_id", name="uq_schedules_workflow_id_result_id"),
    Index("ix_schedules_due", "fired_at", "due_at"),
)

# --- delivery -------------------------------------------------------------------------------------

auth_profiles = Table(
    "auth_profiles",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("type", String(40), nullable=False),  # basic header oauth2_client_credentials
    Column("config", JSONType, nullable=False),  # non-secret parts, allowed_domains
    Column("secrets_enc", Text, nullable=False),  # encrypted JSON of the secret parts
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    sqlite_autoincrement=True,  # SQLite: an id is never given again (see NEVER_REUSED)
)

oauth_tokens = Table(
    "oauth_tokens",
    metadata,
    Column("auth_profile_id", Integer, ForeignKey("auth_profiles.id", ondelete="CASCADE"), primary_key=True),
    Column("token_enc", Text, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("fetched_at", UTCDateTime, nullable=False),
)

# The partial indexes' predicates (SQL text: the queue's claim uses the very same terms).
DUE_FIRST_SQL = "status IN ('pending', 'retrying') AND attempt_count = 0"
DUE_RETRY_SQL = "status IN ('pending', 'retrying') AND attempt_count > 0"
UNFINISHED_SQL = "status IN ('pending', 'retrying', 'held')"
ORDERED_UNFINISHED_SQL = f"order_key IS NOT NULL AND {UNFINISHED_SQL}"

# One row per delivery: the queue row and the Integration Hub's log line at once.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("webhook_id", String(40), nullable=False, unique=True),  # msg_<ulid>, stable across retries
    Column("event_id", BigInteger, nullable=True),
    Column("workflow_id", Integer, nullable=True),
    Column("signal_id", Integer, nullable=True),
    Column("set_id", Integer, nullable=True),
    Column("result_id", Integer, nullable=True),
    Column("action", String(20), nullable=False),
    Column("url", Text, nullable=False),
    Column("endpoint", String(300), nullable=False),  # origin: scheme://host:port
    Column("body", Text, nullable=False),  # frozen at event time; sent byte for byte
    Column("status", String(20), nullable=False),  # pending retrying held succeeded failed cancelled
    Column("attempt_count", Integer, nullable=False, server_default=text("0")),
    # Failed probes of an open circuit among attempt_count: they use up none of max_attempts.
    Column("probe_failures", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("lease_owner", String(100), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("ordered", Boolean, nullable=False, server_default=text("false")),
    Column("order_key", String(100), nullable=True),  # "<signal_id>:<result_id>" for ordered signals
    Column("is_test", Boolean, nullable=False, server_default=text("false")),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error_kind", String(30), nullable=True),
    Column("hint", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    # "manual" after a redelivery, "replay" after a replay from the Hub: the worker stamps it on the
    # next attempt, then resets it.
    Column("next_trigger", String(20), nullable=False, server_default="scheduled"),
    # The worker's claim walks one lane's index in (next_attempt_at, id) order and stops at its
    # LIMIT; partial, so each holds only the waiting rows of its lane, not the delivered history.
    # store/queue.py repeats these predicates literally so both planners can match them.
    Index(
        "ix_deliveries_due_first",
        "next_attempt_at",
        "id",
        postgresql_where=text(DUE_FIRST_SQL),
        sqlite_where=text(DUE_FIRST_SQL),
    ),
    Index(
        "ix_deliveries_due_retry",
        "next_attempt_at",
        "id",
        postgresql_where=text(DUE_RETRY_SQL),
        sqlite_where=text(DUE_RETRY_SQL),
    ),
    # An endpoint's unfinished rows in id order: circuit hold/unhold, the half-open probe and the
    # per-endpoint queue depth, without reading the endpoint's delivered history.
    Index(
        "ix_deliveries_unfinished_endpoint",
        "endpoint",
        "id",
        postgresql_where=text(UNFINISHED_SQL),
        sqlite_where=text(UNFINISHED_SQL),
    ),
    # What an ordered delivery waits for: the unfinished rows of its order key before it. Only those
    # are indexed (unordered rows have no key, finished rows hold nothing up), so most deliveries
    # never write to it, and the claim's check has an index keyed by order_key even when the
    # statistics say every key is NULL (it used the endpoint's index and read every earlier row).
    Index(
        "ix_deliveries_unfinished_order_key",
        "order_key",
        "id",
        postgresql_where=text(ORDERED_UNFINISHED_SQL),
        sqlite_where=text(ORDERED_UNFINISHED_SQL),
    ),
    Index("ix_deliveries_workflow_id_id", "workflow_id", "id"),
    Index("ix_deliveries_result_id_id", "result_id", "id"),
    Index("ix_deliveries_endpoint_id", "endpoint", "id"),
    Index("ix_deliveries_created_at", "created_at"),
    # Integration Hub filters: each one walks its index in id order (keyset pagination by id desc).
    Index("ix_deliveries_status_id", "status", "id"),
    Index("ix_deliveries_signal_id_id", "signal_id", "id"),
    Index("ix_deliveries_set_id_id", "set_id", "id"),
    Index("ix_deliveries_action_id", "action", "id"),
    # No index on body: the Hub's body search reads delivery_search (PostgreSQL: a copy of each
    # body with a trigram index, migration 0003; SQLite: FTS5, 0002), which the worker's two
    # updates per row never touch.
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("delivery_id", BigInteger, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("trigger", String(20), nullable=False),  # scheduled manual replay test probe
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_ms", Integer, nullable=True),
    Column("request_headers", JSONType, nullable=False),  # secrets redacted
    Column("status_code", Integer, nullable=True),
    Column("response_headers", JSONType, nullable=True),
    Column("response_body", Text, nullable=True),  # truncated
    Column("error_kind", String(30), nullable=True),
    Column("error", Text, nullable=True),
    Column("hint", Text, nullable=True),
    Column("url", Text, nullable=True),  # where it went; null before 0010: the delivery's url
    Index("ix_attempts_delivery_id_number", "delivery_id", "number"),
    Index("ix_attempts_started_at", "started_at"),  # endpoint health and stats windows
)

# Per origin: operator pause, Retry-After pause, circuit state, limits. Shared by every worker.
endpoints = Table(
    "endpoints",
    metadata,
    Column("origin", String(300), primary_key=True),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("throttled_until", UTCDateTime, nullable=True),
    Column("circuit_state", String(20), nullable=False, server_default="closed"),  # closed open half_open
    Column("circuit_opened_at", UTCDateTime, nullable=True),
    Column("circuit_probe_at", UTCDateTime, nullable=True),
    Column("rate_limit", String(40), nullable=True),
    Column("max_in_flight", Integer, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

endpoint_log = Table(
    "endpoint_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("origin", String(300), nullable=False, index=True),
    Column("at", UTCDateTime, nullable=False),
    Column("change", String(40), nullable=False),  # circuit_open circuit_closed paused resumed throttled
    Column("detail", Text, nullable=True),
)

error_reports = Table(
    "error_reports",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("endpoint", String(300), nullable=False),
    Column("email", String(320), nullable=False),
    Column("kind", String(30), nullable=False),  # delivery_failed circuit_open
    Column("delivery_id", BigInteger, nullable=True),
    Column("text", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    Index("ix_error_reports_unsent", "sent_at", "endpoint"),
)

# E-mail signals: rendered and queued in the event's transaction, mailed by the worker with retries.
email_outbox = Table(
    "email_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", BigInteger, nullable=True),
    Column("workflow_id", Integer, nullable=True),
    Column("signal_id", Integer, nullable=True),
    Column("set_id", Integer, nullable=True),
    Column("result_id", Integer, nullable=True),
    Column("recipients", JSONType, nullable=False),  # ["a@example.com", ...]
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(20), nullable=False),  # pending sent failed
    Column("attempt_count", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime, nullable=True),  # also the lease while being sent
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    Index("ix_email_outbox_due", "status", "next_attempt_at"),
    Index("ix_email_outbox_event_id", "event_id"),
)

# --- request inspector ----------------------------------------------------------------------------

inspector_bins = Table(
    "inspector_bins",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("responses", JSONType, nullable=True),  # [{"status", "delay_ms", "body", "headers", "times"}]
    Column("max_captures", Integer, nullable=False),
    Column("secret_enc", Text, nullable=True),  # to check signatures of captures
    # Captures ever answered (not rows kept): picks the scripted response for the Nth request.
    Column("capture_count", Integer, nullable=False, server_default=text("0")),
    # Who may change or delete it besides admins; null: made before migration 0009 (any editor).
    Column("created_by", String(200), nullable=True),
)

inspector_requests = Table(
    "inspector_requests",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("bin_id", String(64), ForeignKey("inspector_bins.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("method", String(10), nullable=False),
    Column("path", Text, nullable=False),
    Column("query", Text, nullable=False),
    Column("headers", JSONType, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("source", String(100), nullable=False),
    Column("status", Integer, nullable=False),
    # Checked when captured, while the Standard Webhooks timestamp is still within tolerance.
    Column("signature", String(20), nullable=False, server_default="unsigned"),
    Index("ix_inspector_requests_bin_id_id", "bin_id", "id"),
)
