"""One frozen settings object for every Driftline process.

Each field is declared once with its type, default, environment name and meaning
(faust's habit). Only the entry point (``driftline.streams.cli``) reads the environment: library
code receives a ``Settings`` and never looks at ``os.environ`` itself.

Kafka security settings (SASL/SSL) pass through as librdkafka properties: every
``DRIFTLINE_KAFKA_<NAME>`` variable becomes ``<name>`` with ``_`` -> ``.`` (for example
``DRIFTLINE_KAFKA_SASL_MECHANISM=PLAIN`` -> ``sasl.mechanism``); a ``..._FILE`` variant
reads the value from a file so secrets stay off the command line.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = Path(os.path.expanduser("~")) / ".driftline"


def _default_dsn() -> str:
    return f"chdb://{DEFAULT_DATA_DIR / 'clickhouse'}"


@dataclass(frozen=True)
class Settings:
    """Driftline's settings; ``Settings.from_env()`` builds it from ``DRIFTLINE_*``."""

    bootstrap: str = field(default="127.0.0.1:9092", metadata={"env": "DRIFTLINE_BOOTSTRAP", "help": "Kafka bootstrap servers"})
    clickhouse: str = field(default_factory=_default_dsn, metadata={"env": "DRIFTLINE_CLICKHOUSE", "help": "clickhouse-connect DSN: chdb:///path (embedded) or http://host:8123"})
    clickhouse_user: str = field(default="", metadata={"env": "DRIFTLINE_CLICKHOUSE_USER", "help": "ClickHouse user (server DSNs)"})
    clickhouse_password: str = field(default="", repr=False, metadata={"env": "DRIFTLINE_CLICKHOUSE_PASSWORD", "secret": True, "help": "ClickHouse password; DRIFTLINE_CLICKHOUSE_PASSWORD_FILE reads it from a file"})
    topic_prefix: str = field(default="driftline.", metadata={"env": "DRIFTLINE_TOPIC_PREFIX", "help": "prefix of every Driftline topic"})
    config_path: str = field(default="", metadata={"env": "DRIFTLINE_CONFIG", "help": "models file (YAML or TOML); empty = defaults for every model"})
    partitions: int = field(default=8, metadata={"env": "DRIFTLINE_PARTITIONS", "help": "partition count of new topics"})
    data_dir: str = field(default=str(DEFAULT_DATA_DIR), metadata={"env": "DRIFTLINE_DATA_DIR", "help": "worker state folder (RocksDB tables, logs)"})
    store: str = field(default="memory://", metadata={"env": "DRIFTLINE_STORE", "help": "faust table store: memory:// or rocksdb://"})
    standby_replicas: int = field(default=0, metadata={"env": "DRIFTLINE_STANDBY_REPLICAS", "help": "standby copies of each table partition kept by other workers (faster failover; each replica replays its partition's changelog: measured +10-35% CPU per event with two workers)"})
    app_id: str = field(default="", metadata={"env": "DRIFTLINE_APP_ID", "help": "consumer group and changelog-topic prefix (faust app id); empty: the topic prefix without its trailing '.', so each prefix is its own deployment"})
    web_host: str = field(default="127.0.0.1", metadata={"env": "DRIFTLINE_WEB_HOST", "help": "bind address of the health, metrics and query endpoints"})
    web_port: int = field(default=6066, metadata={"env": "DRIFTLINE_WEB_PORT", "help": "port of the health, metrics and query endpoints"})
    sink: bool = field(default=True, metadata={"env": "DRIFTLINE_SINK", "help": "run the ClickHouse sink inside this worker"})
    window_seconds: float = field(default=60.0, metadata={"env": "DRIFTLINE_WINDOW_SECONDS", "help": "event-time tumbling window length"})
    allowed_lateness: float = field(default=30.0, metadata={"env": "DRIFTLINE_ALLOWED_LATENESS", "help": "a window closes when the watermark passes end + this"})
    idle_close_seconds: float = field(default=10.0, metadata={"env": "DRIFTLINE_IDLE_CLOSE_SECONDS", "help": "close a partition's windows after this much wall-clock idleness"})
    flush_interval: float = field(default=2.0, metadata={"env": "DRIFTLINE_FLUSH_INTERVAL", "help": "at most one revision of a window per this many seconds"})
    max_message_bytes: int = field(default=1_048_576, metadata={"env": "DRIFTLINE_MAX_MESSAGE_BYTES", "help": "larger input messages go to the dead-letter topic"})
    max_pending: int = field(default=5_000_000, metadata={"env": "DRIFTLINE_MAX_PENDING", "help": "cap of predictions waiting for labels per worker (evictions are counted)"})
    max_series: int = field(default=10_000, metadata={"env": "DRIFTLINE_MAX_SERIES", "help": "cap of open window series (model, version, segment, window) per partition; events of further series are joined but not windowed (counted: series_overflow)"})
    max_models: int = field(default=1_000, metadata={"env": "DRIFTLINE_MAX_MODELS", "help": "cap of models (remembered tasks) and (model, version) detector banks per partition; further ones are joined and windowed without detectors (counted: models_overflow)"})
    max_segment_values: int = field(default=500, metadata={"env": "DRIFTLINE_MAX_SEGMENT_VALUES", "help": "distinct values kept per (model, segment key) on a partition; further values count in the segment value '__other__' (counted: segment_overflow)"})
    retention_days: int = field(default=90, metadata={"env": "DRIFTLINE_RETENTION_DAYS", "help": "ClickHouse TTL of metrics, alerts, drift events and outcomes"})
    outcome_sample_rate: float = field(default=1.0, metadata={"env": "DRIFTLINE_OUTCOME_SAMPLE_RATE", "help": "share of joined outcomes written to ClickHouse"})
    log_level: str = field(default="info", metadata={"env": "DRIFTLINE_LOG_LEVEL", "help": "debug, info, warning, error"})
    alertmanager_url: str = field(default="", metadata={"env": "DRIFTLINE_ALERTMANAGER_URL", "help": "Alertmanager base URLs, comma-separated (each of an HA pair gets every alert); empty = no Alertmanager delivery. user:password@ in a URL is sent as basic auth and never logged"})
    alert_webhook_url: str = field(default="", metadata={"env": "DRIFTLINE_ALERT_WEBHOOK_URL", "secret": True, "help": "URL that gets every alert transition as posted JSON (its path may hold a token: only scheme and host are logged); DRIFTLINE_ALERT_WEBHOOK_URL_FILE reads it from a file"})
    alert_webhook_secret: str = field(default="", repr=False, metadata={"env": "DRIFTLINE_ALERT_WEBHOOK_SECRET", "secret": True, "help": "HMAC-SHA256 key signing webhook bodies (X-Driftline-Signature); empty = unsigned; DRIFTLINE_ALERT_WEBHOOK_SECRET_FILE reads it from a file"})
    alert_repost_seconds: float = field(default=60.0, metadata={"env": "DRIFTLINE_ALERT_REPOST_SECONDS", "help": "re-post firing alerts to Alertmanager this often; each post holds endsAt = now + 4 x this (Prometheus' resend habit)"})
    alert_delivery_attempts: int = field(default=10, metadata={"env": "DRIFTLINE_ALERT_DELIVERY_ATTEMPTS", "help": "attempts per delivery (exponential backoff 0.5 s doubling to 30 s) before it is dropped and counted"})
    alert_delivery_queue: int = field(default=1000, metadata={"env": "DRIFTLINE_ALERT_DELIVERY_QUEUE", "help": "deliveries waiting per target before the alert delivery consumer pauses"})
    alert_delivery_timeout: float = field(default=10.0, metadata={"env": "DRIFTLINE_ALERT_DELIVERY_TIMEOUT", "help": "HTTP timeout of one delivery attempt, seconds"})
    kafka: Mapping[str, str] = field(default_factory=dict, metadata={"help": "extra librdkafka/aiokafka security properties"})

    def __post_init__(self) -> None:
        positive = ("partitions", "window_seconds", "idle_close_seconds", "flush_interval", "max_message_bytes", "max_pending",
                    "max_series", "max_models", "max_segment_values", "retention_days", "alert_repost_seconds",
                    "alert_delivery_attempts", "alert_delivery_queue", "alert_delivery_timeout")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"setting {name} must be > 0, got {getattr(self, name)!r}")
        if self.standby_replicas < 0:
            raise ValueError(f"setting standby_replicas must be >= 0, got {self.standby_replicas!r}")
        if self.allowed_lateness < 0:
            raise ValueError(f"setting allowed_lateness must be >= 0, got {self.allowed_lateness!r}")
        if not 0.0 <= self.outcome_sample_rate <= 1.0:
            raise ValueError(f"setting outcome_sample_rate must be in [0, 1], got {self.outcome_sample_rate!r}")
        for url in (*self.alertmanager_urls(), *([self.alert_webhook_url] if self.alert_webhook_url else [])):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"alert delivery URLs must start with http:// or https://, got {redact_url(url)!r}")
        if self.store.split(":", 1)[0] not in ("memory", "rocksdb"):
            raise ValueError(f"setting store must be memory:// or rocksdb://, got {self.store!r}")

    def __repr__(self) -> str:  # the dataclass repr would print the Kafka secrets
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in self.redacted().items())})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``DRIFTLINE_*`` variables, then explicit ``overrides`` (CLI flags).

        >>> Settings.from_env({"DRIFTLINE_PARTITIONS": "4"}).partitions
        4
        >>> Settings.from_env({}, topic_prefix="t.").topic_prefix
        't.'
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata.get("env")
            if name and name in env:
                values[f.name] = _coerce(f, env[name])
            elif name and f.metadata.get("secret") and f"{name}_FILE" in env:
                values[f.name] = Path(env[f"{name}_FILE"]).read_text().strip()
        values["kafka"] = kafka_properties_from_env(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def application_id(self) -> str:
        """The faust app id: ``app_id``, else derived from the topic prefix.

        Deployments that share a broker under different prefixes then get their own consumer
        groups and changelog topics, not each other's state.

        >>> Settings(topic_prefix="driftline.").application_id, Settings(topic_prefix="staging.dl.").application_id
        ('driftline', 'staging.dl')
        >>> Settings(topic_prefix="", app_id="").application_id, Settings(app_id="mine").application_id
        ('driftline', 'mine')
        """
        if self.app_id:
            return self.app_id
        return self.topic_prefix.rstrip(".-_") or "driftline"

    def with_overrides(self, **overrides: Any) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict safe to log: secrets and DSN passwords masked."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["kafka"] = {k: ("***" if _is_secret(k) else v) for k, v in self.kafka.items()}
        out["clickhouse"] = redact_dsn(self.clickhouse)
        out["clickhouse_password"] = "***" if self.clickhouse_password else ""
        out["alertmanager_url"] = ",".join(redact_url(u) for u in self.alertmanager_urls())
        out["alert_webhook_url"] = redact_url(self.alert_webhook_url, path=False)
        out["alert_webhook_secret"] = "***" if self.alert_webhook_secret else ""
        return out

    def alertmanager_urls(self) -> list[str]:
        """``alertmanager_url`` split on commas, blanks dropped.

        >>> Settings(alertmanager_url="http://am1:9093, http://am2:9093").alertmanager_urls()
        ['http://am1:9093', 'http://am2:9093']
        """
        return [u.strip() for u in self.alertmanager_url.split(",") if u.strip()]

    def clickhouse_client_settings(self) -> dict[str, Any]:
        """Keyword arguments for ``clickhouse_connect.get_client`` besides the DSN."""
        out: dict[str, Any] = {}
        if self.clickhouse_user:
            out["username"] = self.clickhouse_user
        if self.clickhouse_password:
            out["password"] = self.clickhouse_password
        return out


def _coerce(f: dataclasses.Field[Any], raw: str) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else None
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ValueError(f"environment {f.metadata['env']}={raw!r} is not a valid {type(default).__name__}") from None
    return raw


def _is_secret(key: str) -> bool:
    return any(word in key for word in ("password", "secret", "key.pem", "token"))


def kafka_properties_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """librdkafka properties from ``DRIFTLINE_KAFKA_*`` (``*_FILE`` reads a file).

    >>> kafka_properties_from_env({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    {'security.protocol': 'SASL_SSL'}
    """
    props: dict[str, str] = {}
    prefix = "DRIFTLINE_KAFKA_"
    for name, value in env.items():
        if not name.startswith(prefix):
            continue
        key = name[len(prefix):].lower()
        if key.endswith("_file"):
            key = key[: -len("_file")]
            value = Path(value).read_text().strip()
        props[key.replace("_", ".")] = value
    return props


def redact_dsn(dsn: str) -> str:
    """Mask the password of a DSN.

    >>> redact_dsn("http://user:pw@host:8123")
    'http://user:***@host:8123'
    """
    if "://" not in dsn or "@" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def redact_url(url: str, path: bool = True) -> str:
    """Mask a URL's password (and, with ``path=False``, drop everything after the host).

    >>> redact_url("https://u:pw@am:9093/base")
    'https://u:***@am:9093/base'
    >>> redact_url("https://hooks.example.com/T000/secret-token", path=False)
    'https://hooks.example.com/...'
    """
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    host, sep, tail = rest.partition("/")
    if "@" in host:
        creds, host = host.rsplit("@", 1)
        host = f"{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else f"***@{host}"
    if not path:
        return f"{scheme}://{host}/..." if sep else f"{scheme}://{host}"
    return f"{scheme}://{host}{sep}{tail}"


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def aiokafka_security(props: Mapping[str, str]) -> dict[str, Any]:
    """Translate librdkafka security properties into faust/aiokafka settings.

    ``security.protocol`` PLAINTEXT (or unset) -> nothing; SSL -> ``SSLCredentials``;
    SASL_PLAINTEXT / SASL_SSL -> ``SASLCredentials`` with ``sasl.mechanism`` (librdkafka's
    alias ``sasl.mechanisms`` too) PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, case-insensitive
    (faust's ``SASLMechanism`` enum only knows the upper-case names). TLS: ``ssl.ca.location``,
    ``ssl.certificate.location`` + ``ssl.key.location`` (+ ``ssl.key.password``),
    ``enable.ssl.certificate.verification=false`` and
    ``ssl.endpoint.identification.algorithm=none`` as in librdkafka.

    >>> aiokafka_security({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "scram-sha-512",
    ...                    "sasl.username": "u", "sasl.password": "p"})["broker_credentials"].mechanism.value
    'SCRAM-SHA-512'
    """
    out: dict[str, Any] = {}
    proto = (props.get("security.protocol") or "PLAINTEXT").strip().upper()
    if proto not in SECURITY_PROTOCOLS:
        raise ValueError(f"security.protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, got {proto!r}")
    if proto == "PLAINTEXT":
        return out
    import ssl

    from faust.auth import SASLCredentials, SSLCredentials

    context = None
    if proto in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=props.get("ssl.ca.location") or None)
        if props.get("ssl.certificate.location"):
            context.load_cert_chain(props["ssl.certificate.location"], props.get("ssl.key.location") or None,
                                    props.get("ssl.key.password") or None)
        if props.get("ssl.endpoint.identification.algorithm", "https").strip().lower() in ("", "none"):
            context.check_hostname = False
        if props.get("enable.ssl.certificate.verification", "true").strip().lower() in ("false", "0", "no", "off"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    if proto.startswith("SASL"):
        mechanism = (props.get("sasl.mechanism") or props.get("sasl.mechanisms") or "PLAIN").strip().upper()
        if mechanism not in SASL_MECHANISMS:
            raise ValueError(f"sasl.mechanism must be one of {', '.join(SASL_MECHANISMS)}, got {mechanism!r}")
        out["broker_credentials"] = SASLCredentials(
            username=props.get("sasl.username"),
            password=props.get("sasl.password"),
            mechanism=mechanism,
            ssl_context=context,
        )
    else:
        out["broker_credentials"] = SSLCredentials(context)
    return out
