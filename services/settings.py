"""One settings object for every carecoord process, read from CARECOORD_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    FilePath,
    NonNegativeInt,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.common import Discipline


class Settings(BaseSettings):
    # An error never echoes what was given: the input holds every secret setting.
    model_config = SettingsConfigDict(
        env_prefix="CARECOORD_", extra="ignore", hide_input_in_errors=True
    )

    # Where the embedded stack keeps its data (PostgreSQL cluster, generated dev secrets).
    data_dir: Path = Path(".carecoord")

    # PostgreSQL: when unset, `carecoord up` starts an embedded server under data_dir.
    # The services' URL: a login role that owns nothing (carecoord_app, migration 0008).
    database_url: str | None = None
    # The schema owner's URL, for `carecoord migrate` (and archiving) only; no service
    # reads it. Unset: migrations run with database_url, which must then be the owner's
    # (the services then run as the owner, and say so with a warning at start).
    migrate_database_url: str | None = None
    db_pool_min: int = 1
    db_pool_max: int = 10
    # The SQL migrations; unset: deploy/migrations of this source tree. An installed
    # package (an image) does not carry them, so it points here at its copy.
    migrations_dir: Path | None = None

    # Kafka protocol: when unset, `carecoord up` starts the embedded Tansu broker.
    kafka_bootstrap: str | None = None
    # Prepended to every topic name, so several stacks (or tests) can share one broker.
    topic_prefix: str = ""
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    # The idempotent producer needs InitProducerId, which the embedded broker refuses.
    kafka_idempotent_producer: bool = False
    # Consumers' fetch wait: low, because the embedded broker answers only when it runs out.
    kafka_fetch_max_wait_ms: int = Field(default=10, ge=1)
    # --- broker authentication (production clusters; the embedded broker is plaintext) ---
    # How every client (producers, consumers, admin, the Faust worker) talks to the broker:
    # PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS, the production choice).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # SCRAM never sends the password; PLAIN sends it as it is (only ever inside TLS).
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    # The service's principal: give the API, the worker and the relay one each, so the
    # broker's ACLs can say which may write which topic (deploy/README.md).
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # TLS: the CA that signed the brokers' certificates (unset: the system's trust store),
    # and a client certificate and its unencrypted key (PEM) for brokers that require mTLS.
    kafka_ssl_cafile: FilePath | None = None
    kafka_ssl_certfile: FilePath | None = None
    kafka_ssl_keyfile: FilePath | None = None
    # Check that a broker's certificate names the host connected to. Off only for a test
    # cluster whose certificates name no host; the chain is checked either way.
    kafka_ssl_check_hostname: bool = True
    # Faust's consumer-group session timeout, seconds; the embedded broker holds the
    # first JoinGroup for half of it, so it is kept short.
    worker_session_timeout: float = Field(default=6.0, gt=0)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)

    # HS256 secret for bearer tokens. `carecoord up` generates a dev secret when unset.
    jwt_secret: SecretStr | None = None
    jwt_ttl_seconds: int = Field(default=8 * 3600, gt=0)

    # OpenID Connect: with an issuer set, RS256/ES256 tokens from that provider are
    # verified against its published keys (discovery + JWKS), besides HS256 dev tokens.
    oidc_issuer: str | None = None
    # The token's 'aud' must contain this (the client id the provider issues tokens for).
    oidc_audience: str = "carecoord"
    # Where the roles list is in the token; dotted for nested claims (realm_access.roles).
    oidc_roles_claim: str = "roles"
    oidc_name_claim: str = "name"
    # How long the provider's keys are trusted before they are fetched again.
    oidc_jwks_cache_seconds: float = Field(default=300.0, gt=0)

    relay_batch_size: int = Field(default=500, ge=1)
    relay_idle_sleep: float = Field(default=0.05, gt=0)
    # How often the relay checks that the broker still holds what it acknowledged.
    relay_watermark_check_seconds: float = Field(default=2.0, gt=0)

    # How often a worker looks for tasks that became overdue (and tells subscribers).
    overdue_check_seconds: float = Field(default=60.0, gt=0)
    # Care signals: an urgent signal task still in TODO this long is escalated to the
    # team's leads; a monitoring plan silent for its interval plus this grace signals
    # READING_OVERDUE once; how often a worker looks for both (and sends queued signals).
    signal_escalate_after_seconds: float = Field(default=1800.0, gt=0)
    reading_overdue_grace_hours: float = Field(default=24.0, ge=0)
    signal_check_seconds: float = Field(default=30.0, gt=0)
    # How often a worker publishes board changes a crashed worker left queued.
    board_outbox_sweep_seconds: float = Field(default=1.0, gt=0)
    # Per WebSocket subscription: board updates held for a slow client before it is cut off.
    subscriber_queue_size: int = Field(default=256, ge=1)
    # How long the boards' change log keeps a change: a subscriber away for longer
    # resumes by reading the board again (`boardChanged(after:)` answers CONFLICT).
    board_history_hours: float = Field(default=24.0, gt=0, le=24 * 31)
    # How long `board`, `huddleAgenda` and the lists wait for their read model to reach
    # `atLeast` before they answer SERVICE_UNAVAILABLE.
    read_wait_seconds: float = Field(default=5.0, ge=0, le=30)

    # The audit log's keys (base64): record keys 'id:key,id:key' (the last is current),
    # the blind-index key and the Ed25519 signing key. Unset: a DEVELOPMENT key file in
    # data_dir, generated at first start.
    audit_keys: SecretStr | None = None
    audit_index_key: SecretStr | None = None
    # Only the audit writer (the worker) holds the signing key; the API must not have it
    # in its environment (`carecoord api` refuses to start if it does) and checks
    # checkpoints with the public key: base64 of its 32 raw bytes, or PEM (`carecoord audit
    # public-key` prints it). Unset: the DEVELOPMENT key file's.
    audit_signing_key: SecretStr | None = None
    audit_public_key: str | None = None
    # The role the audit writer works as (INSERT and SELECT only); '' keeps the login role.
    audit_db_role: str = "carecoord_audit"
    # A signed checkpoint of a chain head after this many entries, or this many seconds
    # (the writer's timer signs the heads that moved; an append signs when the chain's
    # last checkpoint is older): at most about 2 per second per chain at 0.5 s.
    audit_checkpoint_entries: int = Field(default=1000, ge=1)
    audit_checkpoint_seconds: float = Field(default=0.5, gt=0)
    # The audit log's name in its checkpoints (C2SP signed notes): the signing key's name,
    # and each chain's origin is '<name>/chain/<chain>'. Witnesses know the log by it.
    audit_log_name: str = Field(default="carecoord.local/audit", pattern=r"^[!-*,-~]{1,255}$")
    # Verifying the whole log (`carecoord audit verify`, verifyAuditLog): a log of 20,000
    # entries or more is split by chain over this many processes (1: in process).
    audit_verify_workers: int = Field(default=2, ge=1, le=64)
    # Archiving: a month may be archived once it ended this many days ago (late access
    # records, e.g. from an outbox after an outage, may still arrive for it until then).
    audit_archive_grace_days: int = Field(default=7, ge=1, le=366)
    # How long a request waits for the audit outbox (or, in processes without a database,
    # care.audit) to accept its access records; and the audit relay for care.audit.
    audit_produce_timeout_seconds: float = Field(default=5.0, gt=0)
    # The audit relay sends an outbox row again when the writer has not appended it this
    # long after it was sent (a broker that lost it); the writer skips a record it has.
    audit_resend_seconds: float = Field(default=30.0, gt=0)
    # Outbox rows the audit relay claims and produces at a time.
    audit_relay_batch_size: int = Field(default=500, ge=1)

    # --- Access policy: who documents a patient's consent ---
    # Besides the team's leads, members of these disciplines may document and revoke a
    # patient's consent (a JSON list, e.g. '["SOCIAL_WORKER", "CARE_COORDINATOR"]').
    # Empty, the safe default: leads only. Whoever documents it, a consent naming a
    # discipline they hold on the team is refused (another entitled member documents it).
    consent_recorder_disciplines: frozenset[Discipline] = frozenset()

    # --- Request limits and the production surface of the API --------------------------
    # Work one request may cause, checked before parsing (body) or before validation and
    # any resolver (document); a request past one is refused BAD_USER_INPUT naming it.
    # The largest legitimate body is a mutation with a long note: 256 KiB is ample.
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # GET /graphql carries the operation in the query string.
    max_query_string_bytes: int = Field(default=16 * 1024, ge=256)
    # The shipped operations (tests, board page, demo, README) need at most 142 tokens,
    # 5 aliases, 4 levels of nesting and 5 root fields; the defaults leave room.
    # graphql-core stops lexing past this many tokens (parsing 1,000 takes ~20-50 ms).
    max_document_tokens: int = Field(default=1000, ge=100)
    # Aliased fields per operation (fragments expanded).
    max_aliases: int = Field(default=20, ge=0)
    # Field nesting per operation (fragments expanded).
    max_depth: int = Field(default=10, ge=2)
    # The operation's cost: root fields reading or changing records (all but `me` and
    # __typename), fragments expanded.
    max_root_fields: int = Field(default=10, ge=1)
    # Times one response key (a field or alias) may appear in one selection set, fragments
    # merged in: validation compares such fields pairwise, so 500 repeats of `me { userId }`
    # (under 2,000 tokens) held the event loop 4 s. Shipped operations repeat none.
    max_field_repeats: int = Field(default=5, ge=1)
    # Parsed and validated documents kept for reuse, bounded by an estimate of their size.
    document_cache_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    # Reads of patient data (records opened through the access gate) per actor and API
    # process: a token bucket refilled at this rate per second, holding at most `burst`.
    read_rate_per_second: float = Field(default=20.0, gt=0)
    read_rate_burst: int = Field(default=200, ge=1)
    # GraphiQL at GET /graphql, and schema introspection (GraphiQL turns it on too). Off in
    # production; `carecoord up` (the development stack) turns both on.
    graphiql: bool = False
    introspection: bool = False

    # --- authentication: tokens, sockets, failed sign-ins -------------------------------
    # The longest a bearer token may live (exp - iat), HS256 and OIDC alike: longer-lived
    # tokens are refused, and `carecoord token` will not mint one. 12 h: a shift and its
    # handover; a stolen token is worthless by the next day.
    token_max_lifetime_seconds: int = Field(default=12 * 3600, gt=0)
    # The longest X-Break-Glass reason accepted (characters); it lands in the audit log.
    break_glass_reason_max_chars: int = Field(default=500, ge=1)
    # Failed sign-ins go to the audit log as security events: the first refusal per
    # (client address, record named, claimed subject) in each window is recorded at once,
    # later ones in that window as one count when it ends. At most this many such keys
    # are tracked at a time per API process; beyond that, refusals are counted together,
    # so an unsigned flood adds a bounded number of entries per window.
    sign_in_failure_window_seconds: float = Field(default=60.0, gt=0)
    sign_in_failure_keys_per_window: int = Field(default=60, ge=1)

    # --- pipeline integrity: who may write care.audit and care.board-updates ------------
    # HMAC-SHA256 keys the services sign those topics' messages with, 'id:base64key,...'
    # (32+ random bytes each; the last one signs, every listed one verifies, so a key is
    # rotated by adding the new one last everywhere, then dropping the old once no message
    # signed by it is left on the topics). The audit writer and the API hub refuse and
    # dead-letter a message that does not verify. Unset: a DEVELOPMENT key file
    # (dev-pipeline-keys in data_dir, 0600) that `carecoord up` generates.
    pipeline_keys: SecretStr | None = None
    # The worker serves its metrics (carecoord_pipeline_refused) on this port of api_host;
    # 0, the default: not served (the API's /metrics counts what its hub refuses).
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)

    # --- witnesses of the audit log (`carecoord audit witness`) ---------------------------
    # Where a witness keeps the last checkpoint it verified per chain: a file on storage
    # the database's owner cannot write (unset: witness-state.json in data_dir, the
    # embedded stack's own witness).
    witness_state: Path | None = None
    # How often a running witness looks at the newest checkpoints.
    witness_every_seconds: float = Field(default=10.0, gt=0)
    # The log's verifier key the witness trusts (`carecoord audit public-key --vkey`,
    # obtained out of band). Unset: derived from the local audit keys (embedded only).
    witness_vkey: str | None = None

    log_level: str = "info"
    # "auto": JSON when stderr is not a terminal, readable lines when it is.
    log_format: str = "auto"
    # Access records of subscription pushes handed to the audit outbox together: the
    # most records one statement carries (pushes made meanwhile share one hand-off).
    push_audit_batch_records: int = Field(default=1000, ge=1)
    # permessage-deflate on the API's WebSockets: its compressor and decompressor cost each
    # socket ~50 KB held for the socket's life, for pushes of a few hundred bytes. Off: a
    # client that offers it is answered without it (every client must accept that).
    ws_per_message_deflate: bool = False
    # How often the API pings each WebSocket to find a peer that went away without
    # closing (a screen switched off): it is cut off when the pong is 20 s late. Each ping
    # is a write and a read per socket: with 10,000 sockets, every 20 s (uvicorn's
    # default) cost the API about a tenth of a core. Clients ping too (the board page
    # every 15 s), and the proxy in deploy/ lets a quiet socket live an hour.
    ws_ping_seconds: float = Field(default=60.0, gt=0, le=3600)
    # The API process's garbage-collector thresholds (gc.set_threshold). Python's defaults
    # (700, 10, 10) run a full collection every few seconds under load, and with 10,000
    # WebSockets held a full collection walks every object of every socket: 0.5-2 s with
    # the event loop stopped (measured), so every push and answer meanwhile waits.
    # Objects that die young are freed by reference counting either way; these only say
    # how often cycles are looked for.
    api_gc_thresholds: tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt] = (50_000, 50, 1000)

    @field_validator(
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # A deployment passes these through from an env file or an empty secret file.
        return None if value == "" else value

    @model_validator(mode="after")
    def _kafka_security_is_whole(self) -> Settings:
        protocol = self.kafka_security_protocol
        sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
        password = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
        if sasl and not (self.kafka_sasl_username and password):
            raise ValueError(
                f"CARECOORD_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                "CARECOORD_KAFKA_SASL_USERNAME and CARECOORD_KAFKA_SASL_PASSWORD"
            )
        # Credentials or certificates a protocol would not use look secure and are not.
        if not sasl and (self.kafka_sasl_username or password):
            raise ValueError(
                "CARECOORD_KAFKA_SASL_USERNAME/PASSWORD are set but "
                f"CARECOORD_KAFKA_SECURITY_PROTOCOL={protocol} does not use them: "
                "set it to SASL_SSL (or SASL_PLAINTEXT)"
            )
        files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if not tls and any(files):
            raise ValueError(
                "CARECOORD_KAFKA_SSL_* files are set but "
                f"CARECOORD_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS: "
                "set it to SSL or SASL_SSL"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError(
                "CARECOORD_KAFKA_SSL_CERTFILE and CARECOORD_KAFKA_SSL_KEYFILE go together "
                "(a client certificate and its key)"
            )
        return self

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def events_topic(self) -> str:
        return self.topic("care.events")

    @property
    def board_updates_topic(self) -> str:
        return self.topic("care.board-updates")

    @property
    def audit_topic(self) -> str:
        return self.topic("care.audit")

    @property
    def dlq_topic(self) -> str:
        return self.topic("care.events.dlq")

    @property
    def all_topics(self) -> list[str]:
        return [self.events_topic, self.board_updates_topic, self.audit_topic, self.dlq_topic]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
