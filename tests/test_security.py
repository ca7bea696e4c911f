"""Security: Kafka SASL/TLS settings reach every client, secrets stay out of the command line,
logs and endpoints, the query endpoint is read-only and bound to loopback, inserts are
parameterised.

- ``DRIFTLINE_KAFKA_*`` (and ``*_FILE``) -> librdkafka properties -> the SDK's producer, the
  sink's consumer (``SinkRunner.config``) and topic creation (librdkafka takes them as is), and
  -> faust/aiokafka credentials for the workers (``aiokafka_security``: ``SASLCredentials`` with
  PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512, ``SSLCredentials``), checked down to the keyword
  arguments aiokafka receives and to an ``AIOKafkaConsumer`` accepting them.
- ClickHouse credentials from ``DRIFTLINE_CLICKHOUSE_USER`` / ``_PASSWORD`` / ``_PASSWORD_FILE``.
- The CLI has no secret flags; ``Settings.redacted()`` and ``repr`` mask secrets.
- A real worker started with sentinel secrets never shows them in its log, ``/health`` or
  ``/metrics``; its web server listens on 127.0.0.1 only; ``/query`` refuses writes.
- Sink inserts are column-oriented parameters, never SQL built from values.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from worker_harness import Worker

from driftline.streams.cli import build_parser
from driftline.streams.settings import (
    Settings,
    aiokafka_security,
    kafka_properties_from_env,
    redact_dsn,
)

REPO = Path(__file__).resolve().parent.parent
SENTINEL_KAFKA = "kafka-sentinel-7f3a9c"
SENTINEL_CH = "clickhouse-sentinel-51be20"


# ---- env -> librdkafka properties ----------------------------------------------------------------


def test_sasl_scram_env_becomes_librdkafka_properties(tmp_path: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text("s3cr3t\n")
    props = kafka_properties_from_env(
        {
            "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "DRIFTLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "DRIFTLINE_KAFKA_SASL_USERNAME": "driftline",
            "DRIFTLINE_KAFKA_SASL_PASSWORD_FILE": str(secret),
            "DRIFTLINE_KAFKA_SSL_CA_LOCATION": "/etc/ssl/ca.pem",
            "DRIFTLINE_BOOTSTRAP": "kafka:9092",  # not a Kafka property
        }
    )
    assert props == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "driftline",
        "sasl.password": "s3cr3t",  # read from the file, trailing newline stripped
        "ssl.ca.location": "/etc/ssl/ca.pem",
    }


def test_tls_client_certificate_env(tmp_path: Path) -> None:
    keypass = tmp_path / "keypass"
    keypass.write_text("kp")
    props = kafka_properties_from_env(
        {
            "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SSL",
            "DRIFTLINE_KAFKA_SSL_CERTIFICATE_LOCATION": "/c.pem",
            "DRIFTLINE_KAFKA_SSL_KEY_LOCATION": "/k.pem",
            "DRIFTLINE_KAFKA_SSL_KEY_PASSWORD_FILE": str(keypass),
        }
    )
    assert props == {
        "security.protocol": "SSL",
        "ssl.certificate.location": "/c.pem",
        "ssl.key.location": "/k.pem",
        "ssl.key.password": "kp",
    }


def test_settings_carry_kafka_properties_and_redact_them(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "DRIFTLINE_KAFKA_SASL_MECHANISM": "PLAIN",
            "DRIFTLINE_KAFKA_SASL_USERNAME": "u",
            "DRIFTLINE_KAFKA_SASL_PASSWORD": SENTINEL_KAFKA,
            "DRIFTLINE_CLICKHOUSE": "http://analyst:dsnpw@ch:8123",
            "DRIFTLINE_CLICKHOUSE_PASSWORD": SENTINEL_CH,
        }
    )
    assert s.kafka["sasl.password"] == SENTINEL_KAFKA
    red = s.redacted()
    assert red["kafka"]["sasl.password"] == "***" and red["kafka"]["sasl.username"] == "u"
    assert red["clickhouse_password"] == "***" and red["clickhouse"] == "http://analyst:***@ch:8123"
    for text in (repr(s), str(s), str(red), orjson.dumps(red).decode()):
        assert SENTINEL_KAFKA not in text and SENTINEL_CH not in text and "dsnpw" not in text


def test_clickhouse_credentials_from_env_and_file(tmp_path: Path) -> None:
    pw = tmp_path / "ch-password"
    pw.write_text(SENTINEL_CH + "\n")
    s = Settings.from_env(
        {"DRIFTLINE_CLICKHOUSE_USER": "driftline", "DRIFTLINE_CLICKHOUSE_PASSWORD_FILE": str(pw)}
    )
    assert s.clickhouse_client_settings() == {"username": "driftline", "password": SENTINEL_CH}
    s = Settings.from_env({"DRIFTLINE_CLICKHOUSE_PASSWORD": "direct"})
    assert s.clickhouse_client_settings() == {"password": "direct"}
    assert Settings.from_env({}).clickhouse_client_settings() == {}
    assert redact_dsn("http://u:p@h:8123") == "http://u:***@h:8123"


# ---- librdkafka properties -> faust / aiokafka ---------------------------------------------------


def _aiokafka_kwargs(props: dict[str, str]) -> dict[str, Any]:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    return dict(credentials_to_aiokafka_auth(aiokafka_security(props).get("broker_credentials")))


def test_plaintext_needs_no_credentials() -> None:
    assert aiokafka_security({}) == {}
    assert aiokafka_security({"security.protocol": "plaintext", "sasl.password": "ignored"}) == {}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "scram-sha-512"])
def test_sasl_mechanisms_become_faust_credentials(mechanism: str) -> None:
    from faust.auth import SASLCredentials

    props = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": "u",
        "sasl.password": SENTINEL_KAFKA,
    }
    creds = aiokafka_security(props)["broker_credentials"]
    assert isinstance(creds, SASLCredentials)
    assert creds.mechanism.value == mechanism.upper()
    assert SENTINEL_KAFKA not in repr(creds)
    kw = _aiokafka_kwargs(props)
    assert kw["security_protocol"] == "SASL_PLAINTEXT" and kw["sasl_mechanism"] == mechanism.upper()
    assert kw["sasl_plain_username"] == "u" and kw["sasl_plain_password"] == SENTINEL_KAFKA
    assert kw["ssl_context"] is None


def test_librdkafka_plural_mechanisms_alias() -> None:
    kw = _aiokafka_kwargs(
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "SCRAM-SHA-256",
            "sasl.username": "u",
            "sasl.password": "p",
        }
    )
    assert kw["sasl_mechanism"] == "SCRAM-SHA-256"


def test_sasl_ssl_and_ssl_get_a_tls_context(tmp_path: Path) -> None:
    import ssl

    import certifi
    from faust.auth import SSLCredentials

    kw = _aiokafka_kwargs(
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": "u",
            "sasl.password": "p",
            "ssl.ca.location": certifi.where(),
        }
    )
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "SCRAM-SHA-256"
    ctx = kw["ssl_context"]
    assert (
        isinstance(ctx, ssl.SSLContext)
        and ctx.verify_mode == ssl.CERT_REQUIRED
        and ctx.check_hostname
    )

    cert, key = _self_signed(tmp_path)
    creds = aiokafka_security(
        {
            "security.protocol": "SSL",
            "ssl.ca.location": str(cert),
            "ssl.certificate.location": str(cert),
            "ssl.key.location": str(key),
        }
    )
    assert isinstance(creds["broker_credentials"], SSLCredentials)
    kw = _aiokafka_kwargs(
        {
            "security.protocol": "SSL",
            "ssl.ca.location": str(cert),
            "ssl.endpoint.identification.algorithm": "none",
        }
    )
    assert kw["security_protocol"] == "SSL" and not kw["ssl_context"].check_hostname
    kw = _aiokafka_kwargs(
        {"security.protocol": "SSL", "enable.ssl.certificate.verification": "false"}
    )
    assert kw["ssl_context"].verify_mode == ssl.CERT_NONE


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_bad_security_settings_fail_early() -> None:
    with pytest.raises(ValueError, match="sasl.mechanism"):
        aiokafka_security({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "KERBEROS-ISH"})
    with pytest.raises(ValueError, match="security.protocol"):
        aiokafka_security({"security.protocol": "TLS"})


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_aiokafka_accepts_the_translated_settings(mechanism: str) -> None:
    """aiokafka validates mechanism and protocol in its constructor (no connection made)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    kw = _aiokafka_kwargs(
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism,
            "sasl.username": "u",
            "sasl.password": "p",
        }
    )

    async def build() -> None:
        c = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", **kw)
        p = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **kw)
        assert c._client._sasl_mechanism == mechanism  # noqa: SLF001
        await c.stop()
        await p.stop()

    asyncio.run(build())


def test_worker_app_gets_the_credentials() -> None:
    """``driftline.streams.app.DriftlineApp`` hands them to faust (``broker_credentials``)."""
    from faust.auth import SASLCredentials

    from driftline.streams.app import DriftlineApp
    from driftline.streams.models import ModelsConfig

    s = Settings.from_env(
        {
            "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "DRIFTLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "DRIFTLINE_KAFKA_SASL_USERNAME": "u",
            "DRIFTLINE_KAFKA_SASL_PASSWORD": "p",
        }
    )
    dl = DriftlineApp(s, ModelsConfig())
    creds = dl.app.conf.broker_credentials
    assert isinstance(creds, SASLCredentials) and creds.mechanism.value == "SCRAM-SHA-512"
    assert (creds.username, creds.password) == ("u", "p")


# ---- librdkafka clients: SDK, sink, topics --------------------------------------------------------

SCRAM = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "u",
    "sasl.password": SENTINEL_KAFKA,
}


def test_sdk_passes_security_properties_to_librdkafka(monkeypatch: pytest.MonkeyPatch) -> None:
    import confluent_kafka

    from driftline.streams.sdk import DriftlineProducer

    seen: list[dict[str, Any]] = []
    real = confluent_kafka.Producer

    def spy(conf: dict[str, Any]) -> Any:
        seen.append(dict(conf))
        return real(conf)  # librdkafka itself accepts the SCRAM settings

    monkeypatch.setattr(confluent_kafka, "Producer", spy)
    dl = DriftlineProducer("127.0.0.1:1", client_config=dict(SCRAM), num_partitions=4)
    dl.close(timeout=1)
    assert seen and {k: seen[0][k] for k in SCRAM} == SCRAM


def test_librdkafka_rejects_an_unknown_mechanism() -> None:
    """Proof that the properties are interpreted by librdkafka, not ignored."""
    from confluent_kafka import KafkaException, Producer

    with pytest.raises(KafkaException):
        Producer({"bootstrap.servers": "127.0.0.1:1", **SCRAM, "sasl.mechanism": "NOPE"})


def test_sink_runner_and_topics_get_the_properties() -> None:
    import inspect

    from driftline.sinks.runner import SinkRunner
    from driftline.streams import worker

    runner = SinkRunner("127.0.0.1:1", ["t"], sink=object(), client_config=dict(SCRAM))  # type: ignore[arg-type]
    assert {k: runner.config[k] for k in SCRAM} == SCRAM
    # the worker passes Settings.kafka to the sink's consumer and to topic creation
    src = inspect.getsource(worker)
    assert (
        "client_config=dict(settings.kafka)"
        in src.split("SinkRunner(", 1)[1].split(")", 1)[0] + ")"
    )
    assert (
        "client_config=dict(settings.kafka)"
        in src.split("create_topics(", 1)[1].split(")", 1)[0] + ")"
    )


# ---- the command line ------------------------------------------------------------------------------


def _all_options(parser: Any) -> list[str]:
    import argparse

    out: list[str] = []
    for action in parser._actions:  # noqa: SLF001 - argparse exposes no public walk
        out += list(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                out += _all_options(sub)
    return out


def test_cli_has_no_secret_flags() -> None:
    options = _all_options(build_parser())
    assert "--clickhouse" in options and "--bootstrap" in options  # the walk sees subcommands
    secretish = [o for o in options if re.search(r"pass|secret|token|sasl|cred|key|auth", o, re.I)]
    assert secretish == []
    for argv in (
        ["worker", "--clickhouse-password", "x"],
        ["worker", "--sasl-password", "x"],
        ["query", "SELECT 1", "--password", "x"],
    ):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(argv)
        assert exc.value.code == 2


def test_dsn_with_password_on_the_command_line_is_masked_in_logs() -> None:
    """``--clickhouse`` takes a DSN; a password in it never reaches a log line."""
    s = Settings.from_env({}, clickhouse=f"http://u:{SENTINEL_CH}@h:8123")
    assert SENTINEL_CH not in str(s.redacted()) and SENTINEL_CH not in repr(s)


# ---- a real worker: secrets, bind address, read-only queries ---------------------------------------


def _http(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url,
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST" if data is not None else "GET",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* shows them) of LISTEN sockets on ``port``."""
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            addr, hexport = parts[1].split(":")
            if int(hexport, 16) == port and parts[3] == "0A":  # 0A = LISTEN
                out.append(addr)
    return out


def _non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: it only picks a route
            ip = str(s.getsockname()[0])
        except OSError:
            return None
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


@pytest.mark.integration
def test_worker_keeps_secrets_out_of_logs_and_endpoints_and_is_local_and_read_only(
    bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    # The embedded broker is PLAINTEXT: security.protocol stays unset (PLAINTEXT), so the SASL
    # password is a librdkafka property carried by every client but unused on the wire.
    worker = Worker(
        bootstrap,
        topic_prefix,
        tmp_path,
        extra_env={
            "DRIFTLINE_KAFKA_SASL_PASSWORD": SENTINEL_KAFKA,
            "DRIFTLINE_KAFKA_SASL_USERNAME": "driftline",
            "DRIFTLINE_CLICKHOUSE_PASSWORD": SENTINEL_CH,
            "DRIFTLINE_LOG_LEVEL": "debug",
        },
    ).start()
    try:
        # secrets
        health = orjson.dumps(worker.health()).decode()
        metrics = _http(worker.url + "/metrics")[1].decode()
        for text in (health, metrics):
            assert SENTINEL_KAFKA not in text and SENTINEL_CH not in text

        # the web server listens on loopback only
        addrs = _listening(worker.port)
        assert addrs and all(
            a in ("0100007F", "00000000000000000000000001000000") for a in addrs
        ), addrs
        ip = _non_loopback_ip()
        if ip is not None:
            with pytest.raises(OSError), socket.create_connection((ip, worker.port), timeout=2):
                pass

        # /query answers reads and refuses writes with a clear error
        assert worker.query("SELECT 1 AS one") == [{"one": 1}]
        for sql in (
            "INSERT INTO driftline.alerts (alert_id) VALUES ('x')",
            "DROP TABLE driftline.metrics",
            "SELECT 1; DROP TABLE driftline.metrics",
            "ALTER TABLE driftline.outcomes DELETE WHERE 1",
            "SELECT 1 INTO OUTFILE '/tmp/x'",
        ):
            status, body = _http(
                worker.url + "/query", orjson.dumps({"sql": sql, "format": "json"})
            )
            assert status == 400, (sql, status, body)
            err = orjson.loads(body)["error"]
            assert "read-only" in err or "one statement" in err, err
        assert worker.query("SELECT count() AS n FROM driftline.metrics") == [{"n": 0}]
        status, _ = _http(worker.url + "/query")  # GET: not a query
        assert status in (404, 405)
    finally:
        worker.stop()
    log = worker.log()
    assert '"worker starting"' in log and "***" in log  # the settings are logged, redacted
    assert SENTINEL_KAFKA not in log and SENTINEL_CH not in log


def test_web_server_binds_loopback_by_default() -> None:
    assert Settings.from_env({}).web_host == "127.0.0.1"


# ---- parameterised inserts --------------------------------------------------------------------------


def test_sink_sql_is_never_built_from_values() -> None:
    """No INSERT statement text in the sink code but one: rows go through ``client.insert``
    (column data sent as parameters in a binary format) and no f-string/format/% builds a VALUES
    clause. The one is ``raw_outcomes_sql`` (outcome envelopes parsed by ClickHouse from a file);
    its text holds no value: checked below."""
    import inspect

    from driftline.sinks.clickhouse import raw_outcomes_sql

    src = inspect.getsource(raw_outcomes_sql)
    offenders = []
    for path in sorted((REPO / "sinks").glob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\blog\.\w+\(", code):  # log messages are not SQL
                continue
            if path.name == "clickhouse.py" and line.strip() and line in src:
                continue
            if re.search(r"""(f["']|\.format\(|%\s*\(|["']\s*%)""", code) and re.search(
                r"\b(INSERT|VALUES)\b", code, re.I
            ):
                offenders.append(f"{path.name}:{n}: {line.strip()}")
            if re.search(r"""["'][^"']*\bINSERT\s+INTO\b""", code, re.I):
                offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert offenders == []
    # The exception: a constant statement around the database name; the file and its schema are
    # bound parameters, its string literals are the format, a default and an error message, and a
    # bad database name is refused.
    sql = raw_outcomes_sql("driftline")
    assert "driftline.outcomes" in sql
    assert set(re.findall(r"\{[^}]*\}", sql)) == {"{path:String}", "{schema:String}"}
    assert set(re.findall(r"'[^']*'", sql)) == {
        "'JSONEachRow'", "''", "'outcome without prediction_id, model_id or prediction_ts'"}
    with pytest.raises(ValueError):
        raw_outcomes_sql("driftline; DROP TABLE x")


def test_values_with_quotes_round_trip_through_the_sink(tmp_path: Path) -> None:
    from driftline.sinks.clickhouse import ClickHouseSink

    nasty = "it's \"quoted\" \\ back`tick'); DROP TABLE driftline.outcomes; -- \u00e9\u4e2d"
    outcome = {
        "prediction_id": nasty,
        "model_id": "m'" + nasty,
        "model_version": "v'1",
        "segments": {"k'": nasty},
        "task": "binary",
        "y_pred": "1",
        "y_true": "0",
        "score": 0.5,
        "value_pred": None,
        "value_true": None,
        "latency_ms": 1.0,
        "prediction_ts": 1.8e9,
        "label_ts": 1.8e9 + 5,
        "label_delay_s": 5.0,
        "correct": False,
        "abs_error": None,
    }
    sink = ClickHouseSink(f"chdb://{tmp_path.resolve()}/ch", backoff_s=0.001)
    sink.setup()
    try:
        sink.add("driftline.outcomes", 0, 0, outcome)
        sink.flush()
        rows = sink.client.query(
            "SELECT prediction_id, model_id, model_version, segments FROM driftline.outcomes "
            "WHERE prediction_id = {pid:String}",
            parameters={"pid": nasty},
        ).result_rows
        assert rows == [(nasty, "m'" + nasty, "v'1", {"k'": nasty})]
        assert sink.client.query("SELECT count() FROM driftline.outcomes").result_rows[0][0] == 1
        # the raw path (outcome envelopes as bytes, parsed by ClickHouse from a file) likewise
        raw = {**outcome, "prediction_id": nasty + "-raw"}
        sink.add("driftline.outcomes", 0, 1, orjson.dumps({"events": [raw]}))
        sink.flush()
        assert sink.stats()["raw_fallbacks"] == 0
        rows = sink.client.query(
            "SELECT prediction_id, model_id, model_version, segments FROM driftline.outcomes "
            "WHERE prediction_id = {pid:String}",
            parameters={"pid": nasty + "-raw"},
        ).result_rows
        assert rows == [(nasty + "-raw", "m'" + nasty, "v'1", {"k'": nasty})]
        assert sink.client.query("SELECT count() FROM driftline.outcomes").result_rows[0][0] == 2
    finally:
        sink.close()
