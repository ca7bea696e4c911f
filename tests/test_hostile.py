"""Hostile and bad input: every rejection is a dead letter with a reason code, counted, and
never stops the worker.

One corpus (:func:`corpus`) of bad messages, each with the reason codes it must produce:
malformed and truncated JSON, non-UTF-8 bytes, wrong types, missing ids, 10 KB ids, NaN and
infinity (literals and ``1e999``), scores outside [0, 1], negative latency, timestamps far in
the future or past, a 10 MB message, deep nesting, 100k features, unknown models
(``allow_unlisted_models: false``), a prediction whose task differs from its model's, labels of
the wrong kind, and envelopes mixing good and bad events (a bad event rejects that event only).

- ``test_corpus_in_the_processor``: the corpus through ``PartitionProcessor`` (fast, no broker).
- ``test_corpus_through_a_real_worker``: the same corpus through a real worker subprocess on
  the session broker: the dead-letter topic holds exactly the expected reasons, source
  coordinates and raw input; ``/metrics`` counts them per reason
  (``driftline_dlq_total{reason=...}``); ``/health`` is ok and good events still join.
- Message size limits: librdkafka's producer refuses a 10 MB message by default
  (``message.max.bytes`` = 1,000,000: ``MSG_SIZE_TOO_LARGE`` before it leaves the process);
  with ``message.max.bytes`` raised, the embedded Tansu broker accepted 10 MB (and 10 MiB + 1000
  bytes) when measured here, and the worker's consumer fetches up to 16 MiB per partition
  (``consumer_max_fetch_size`` in ``driftline.streams.app``). So the 10 MB message goes through the real
  worker (``oversize_message``, only the first KiB travels to the DLQ) and is also checked at
  the ``decode_message`` level. A Kafka cluster with the default ``message.max.bytes``
  (1 MiB) would refuse it at the broker: the producer's delivery report carries the error, the
  worker never sees it.
- Throughput with 10% bad input, and property tests of ``PartitionProcessor.process``.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from worker_harness import Worker

from driftline.schemas import decode_message, encode_envelope
from driftline.schemas.partitioning import partition_for
from driftline.streams.models import ModelConfig, ModelsConfig, parse_models_config
from driftline.streams.partition import Message, PartitionProcessor

MODELS_YAML = """\
allow_unlisted_models: false
defaults:
  label_horizon_s: 3600
  early_label_wait_s: 3600
models:
  fraud: {task: binary, segment_keys: [country]}
  eta: {task: regression}
  feed: {task: ranking}
"""

#: Every reason code of the wire contract (docs/wire-contract.md, "Reason codes").
REASON_CODES = {
    "empty",
    "malformed_json",
    "not_utf8",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "not_finite",
    "too_long",
    "oversize_message",
    "too_deep",
    "too_many_features",
    "bad_timestamp",
    "bad_envelope",
    "mixed_kinds",
    "conflicting_fields",
    "length_mismatch",
    "unknown_model",
    "task_mismatch",
    "label_kind_mismatch",
    "processing_error",
}

TEN_MB = 10 * 1000 * 1000


def _pred(pid: str, ts: float, model: str = "fraud", **prediction: Any) -> dict[str, Any]:
    return {
        "prediction_id": pid,
        "model_id": model,
        "model_version": "v1",
        "timestamp": ts,
        "prediction": prediction or {"label": 1, "score": 0.8},
        "latency_ms": 5.0,
        "segments": {"country": "DE"},
    }


def _hundred_k_features() -> dict[str, int]:
    """100,000 distinct short names: the message stays under the 1 MiB limit."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    names = (a + b + c for a in digits for b in digits for c in digits)
    return {n: 0 for n, _ in zip(names, range(100_000), strict=False)}


def corpus(now: float, tag: str) -> list[tuple[str, bytes, bytes | None, list[str]]]:
    """(kind, key, value, expected reason codes) of every bad message; ``tag`` makes ids unique.

    Every message carries a key (a prediction id where there is one), so the predictions a
    label refers to land on the label's partition (murmur2, as the SDK does).
    """
    ts = now - 100.0

    def p(**kw: Any) -> bytes:
        ev = _pred(f"{tag}-x", ts)
        ev.update(kw)
        return orjson.dumps(ev)

    good = _pred(f"{tag}-env-good-0", ts)
    good2 = _pred(f"{tag}-env-good-1", ts)
    deep = b'{"a":' * 2000 + b"1" + b"}" * 2000
    hundred_k = orjson.dumps(_pred(f"{tag}-features", ts) | {"features": _hundred_k_features()})
    assert len(hundred_k) < 1_048_576
    ten_mb = (
        b'{"prediction_id":"'
        + tag.encode()
        + b'-big","model_id":"fraud","timestamp":1,"features":{"a":"'
        + b"x" * TEN_MB
        + b'"}}'
    )
    P, L = "prediction", "label"
    items: list[tuple[str, bytes, bytes | None, list[str]]] = [
        (
            P,
            b"k1",
            b'{"prediction_id": "a", "model_id": "fraud", "timest',
            ["malformed_json"],
        ),  # truncated
        (P, b"k2", b"this is not json", ["malformed_json"]),
        (P, b"k3", b"", ["empty"]),
        (P, b"k4", b'\xff\xfe{"prediction_id": "\xc3\x28"}', ["not_utf8"]),
        (P, b"k5", b"[1, 2, 3]", ["not_an_object"]),
        (P, b"k6", b'"just a string"', ["not_an_object"]),
        (P, b"k7", p(prediction={"score": "0.9"}), ["wrong_type"]),
        (P, b"k8", p(timestamp=True), ["wrong_type"]),
        (P, b"k9", p(model_id=17), ["wrong_type"]),
        (
            P,
            b"k10",
            orjson.dumps({k: v for k, v in _pred("zz", ts).items() if k != "prediction_id"}),
            ["missing_field"],
        ),
        (P, b"k11", p(prediction_id=None), ["missing_field"]),
        (P, b"k12", p(prediction_id=""), ["out_of_range"]),
        (P, b"k13", p(prediction_id="i" * 10_240), ["too_long"]),
        (P, b"k14", p(model_id="m" * 10_240), ["too_long"]),
        (P, b"k15", p().replace(b'"score":0.8', b'"score":NaN'), ["malformed_json"]),
        (P, b"k16", p().replace(b'"score":0.8', b'"score":Infinity'), ["malformed_json"]),
        (P, b"k17", p().replace(b'"score":0.8', b'"score":-Infinity'), ["malformed_json"]),
        (P, b"k18", p().replace(b'"score":0.8', b'"score":1e999'), ["malformed_json"]),
        (P, b"k19", p().replace(b'"latency_ms":5.0', b'"latency_ms":-1e999'), ["malformed_json"]),
        (P, b"k20", p(prediction={"score": 1.7}), ["out_of_range"]),
        (P, b"k21", p(prediction={"score": -0.01}), ["out_of_range"]),
        (P, b"k22", p(prediction={"label": "cat", "scores": {"cat": 3.0}}), ["out_of_range"]),
        (P, b"k23", p(latency_ms=-5.0), ["out_of_range"]),
        (P, b"k24", p(timestamp=now + 30 * 86400), ["bad_timestamp"]),
        (P, b"k25", p(timestamp=4102444800.0 * 10), ["bad_timestamp"]),
        (P, b"k26", p(timestamp=100.0), ["bad_timestamp"]),
        (P, b"k27", p(timestamp=-1e300), ["bad_timestamp"]),
        (P, b"k28", p(timestamp="2026-02-30T00:00:00Z"), ["bad_timestamp"]),
        (P, b"k29", ten_mb, ["oversize_message"]),
        (P, b"k30", deep, ["too_deep"]),
        (P, b"k31", p(features={"a": {"b": {"c": 1}}}), ["too_deep"]),
        (P, b"k32", p(segments={"country": ["DE"]}), ["too_deep"]),
        (P, b"k33", hundred_k, ["too_many_features"]),
        (P, b"k34", p(model_id="not-in-the-models-file"), ["unknown_model"]),
        (P, b"k35", p(model_id="eta", prediction={"score": 0.4}), ["task_mismatch"]),
        (P, b"k36", p(features={"f": "x" * 2000}), ["too_long"]),
        (P, b"k37", orjson.dumps({"events": "nope"}), ["bad_envelope"]),
        (P, b"k38", orjson.dumps({"events": [{}] * 10_001}), ["bad_envelope"]),
        (
            P,
            b"k39",
            orjson.dumps({"prediction_id": f"{tag}-lbl", "timestamp": ts, "label": 1}),
            ["mixed_kinds"],
        ),
        (P, b"k40", None, ["empty"]),  # a tombstone
        # an envelope mixing good and bad events: only the bad ones are rejected
        (
            P,
            b"k41",
            encode_envelope(
                [
                    good,
                    _pred(f"{tag}-env-bad", ts, score=2.0),
                    "str",
                    good2,
                    _pred(f"{tag}-env-unknown", ts, model="nobody"),
                ]
            ),
            ["out_of_range", "not_an_object", "unknown_model"],
        ),
        # labels
        (
            L,
            b"l1",
            orjson.dumps({"prediction_id": f"{tag}-y", "timestamp": ts, "label": 1, "value": 2.0}),
            ["conflicting_fields"],
        ),
        (
            L,
            b"l2",
            orjson.dumps({"prediction_id": f"{tag}-y", "timestamp": ts, "label": 1.5}),
            ["wrong_type"],
        ),
        (L, b"l3", orjson.dumps({"prediction_id": f"{tag}-y", "timestamp": ts}), ["missing_field"]),
        (L, b"l4", orjson.dumps({"timestamp": ts, "label": 1}), ["missing_field"]),
        # an integer wider than 64 bits: orjson reads it as a float -> not a class label
        (
            L,
            b"l5",
            f'{{"prediction_id":"{tag}-y","timestamp":{ts},"label":{2**70}}}'.encode(),
            ["wrong_type"],
        ),
        (
            L,
            b"l6",
            orjson.dumps({"prediction_id": f"{tag}-y", "timestamp": now + 5 * 86400, "label": 1}),
            ["bad_timestamp"],
        ),
        (L, b"l7", orjson.dumps(_pred(f"{tag}-y", ts)), ["mixed_kinds"]),
        (L, b"l8", b'{"prediction_id":"y","timestamp":1.7e9,"value":NaN}', ["malformed_json"]),
        # ranking predictions and feedback (docs/wire-contract.md, task ranking)
        (P, b"r1", p(model_id="feed", prediction={"items": "sku-1"}), ["wrong_type"]),
        (
            P,
            b"r2",
            p(model_id="feed", prediction={"items": [f"s{i}" for i in range(1001)]}),
            ["too_long"],
        ),
        (P, b"r3", p(model_id="feed", prediction={"items": ["ok", "i" * 10_240]}), ["too_long"]),
        (P, b"r4", p(model_id="feed", prediction={"items": ["ok", 7]}), ["wrong_type"]),
        (P, b"r5", p(model_id="feed", prediction={"items": []}), ["out_of_range"]),
        (
            P,
            b"r6",
            p(model_id="feed", prediction={"items": ["a", "b"], "scores": [0.9]}),
            ["length_mismatch"],
        ),
        (
            P,
            b"r7",
            p(model_id="feed", prediction={"items": ["a", "b"], "scores": [0.1, 0.9]}),
            ["out_of_range"],
        ),
        (
            P,
            b"r8",
            p(model_id="feed", prediction={"items": ["a"], "label": 1}),
            ["conflicting_fields"],
        ),
        (P, b"r9", p(model_id="feed", prediction={"items": [["a"]]}), ["too_deep"]),
        (
            P,
            b"r10",
            p(model_id="feed"),
            ["task_mismatch"],
        ),  # a binary prediction for a ranking model
        (
            P,
            b"r11",
            p(prediction={"items": ["a", "b"]}),
            ["task_mismatch"],
        ),  # a ranked list for fraud
        (
            L,
            b"r12",
            orjson.dumps({"prediction_id": f"{tag}-y", "timestamp": ts, "feedback": ["a"]}),
            ["wrong_type"],
        ),
        (
            L,
            b"r13",
            orjson.dumps(
                {"prediction_id": f"{tag}-y", "timestamp": ts, "feedback": {"clicked": ["a", 3]}}
            ),
            ["wrong_type"],
        ),
        (
            L,
            b"r14",
            orjson.dumps(
                {
                    "prediction_id": f"{tag}-y",
                    "timestamp": ts,
                    "label": 1,
                    "feedback": {"clicked": []},
                }
            ),
            ["conflicting_fields"],
        ),
        (
            L,
            b"r15",
            orjson.dumps(
                {
                    "prediction_id": f"{tag}-y",
                    "timestamp": ts,
                    "feedback": {"converted": ["x"] * 1001},
                }
            ),
            ["too_long"],
        ),
        (
            P,
            b"r16",
            orjson.dumps({"prediction_id": f"{tag}-fb", "timestamp": ts, "feedback": {}}),
            ["mixed_kinds"],
        ),
    ]
    # labels whose kind does not match their model's task: the predictions first, then the labels
    items += [
        (P, f"{tag}-kind-b".encode(), orjson.dumps(_pred(f"{tag}-kind-b", ts)), []),
        (
            P,
            f"{tag}-kind-r".encode(),
            orjson.dumps(_pred(f"{tag}-kind-r", ts, model="eta", value=3.0)),
            [],
        ),
        (
            L,
            f"{tag}-kind-b".encode(),
            orjson.dumps({"prediction_id": f"{tag}-kind-b", "timestamp": ts + 1, "value": 1.0}),
            ["label_kind_mismatch"],
        ),
        (
            L,
            f"{tag}-kind-r".encode(),
            orjson.dumps({"prediction_id": f"{tag}-kind-r", "timestamp": ts + 1, "label": "cat"}),
            ["label_kind_mismatch"],
        ),
        # feedback for a binary model, and a class label for a ranking model
        (P, f"{tag}-kind-f".encode(), orjson.dumps(_pred(f"{tag}-kind-f", ts)), []),
        (
            P,
            f"{tag}-kind-k".encode(),
            orjson.dumps(_pred(f"{tag}-kind-k", ts, model="feed", items=["a", "b"])),
            [],
        ),
        (
            L,
            f"{tag}-kind-f".encode(),
            orjson.dumps(
                {
                    "prediction_id": f"{tag}-kind-f",
                    "timestamp": ts + 1,
                    "feedback": {"clicked": ["a"]},
                }
            ),
            ["label_kind_mismatch"],
        ),
        (
            L,
            f"{tag}-kind-k".encode(),
            orjson.dumps({"prediction_id": f"{tag}-kind-k", "timestamp": ts + 1, "label": 1}),
            ["label_kind_mismatch"],
        ),
        # the envelope's good events get their labels: they join (same key as the prediction
        # envelope k41: co-partitioned, as the SDK does by prediction id)
        (
            L,
            b"k41",
            encode_envelope(
                [
                    {"prediction_id": f"{tag}-env-good-{i}", "timestamp": ts + 1, "label": 1}
                    for i in (0, 1)
                ]
            ),
            [],
        ),
    ]
    return items


def expected_reasons(items: list[tuple[str, bytes, bytes | None, list[str]]]) -> Counter[str]:
    return Counter(code for *_, codes in items for code in codes)


# ---- the corpus in the processor (fast) ----------------------------------------------------------


def test_corpus_in_the_processor() -> None:
    """One partition, no broker: each bad message's reasons, nothing else; good events join."""
    models = parse_models_config(yaml.safe_load(MODELS_YAML))
    store: dict[bytes, bytes] = {}
    proc = PartitionProcessor(0, models, store_get=store.get)
    offsets = {"prediction": 0, "label": 0}
    reasons: list[str] = []
    joins = 0
    for kind, key, value, codes in corpus(time.time(), "t"):
        res = proc.process([Message(kind, kind + "s", 0, offsets[kind], key, value)])
        offsets[kind] += 1
        got = [rec["reason"] for _, rec in res.dlq]
        assert got == codes, (
            key,
            value[:200] if value else value,
            [rec["detail"] for _, rec in res.dlq],
        )
        for k, rec in res.dlq:
            assert k == key and rec["partition"] == 0 and len(rec["raw"].encode()) <= 65536
        reasons += got
        store.update(res.sets)
        for k in res.deletes:
            store.pop(k, None)
        joins += len(res.outcomes)
        assert res.counters.get("dlq_" + codes[0], 0) >= 1 if codes else True
    assert joins == 2


def test_ten_megabyte_message_at_the_decoder() -> None:
    big = (
        b'{"prediction_id":"p","model_id":"m","timestamp":1.7e9,"prediction":{"score":0.5},"features":{"a":"'
        + b"x" * TEN_MB
        + b'"}}'
    )
    t = time.perf_counter()
    events, rejected = decode_message(big, "prediction")
    assert time.perf_counter() - t < 0.1  # rejected by size, never parsed
    assert events == [] and [r.code for r, _ in rejected] == ["oversize_message"]
    assert rejected[0][1] == big[:1024]
    # with a limit above its size it is parsed, and rejected for the 10 MB string feature
    events, rejected = decode_message(big, "prediction", max_bytes=2 * TEN_MB)
    assert [(r.code, r.field) for r, _ in rejected] == [("too_long", "features.a")]


def test_default_producer_refuses_ten_megabytes_locally(bootstrap: str) -> None:
    from confluent_kafka import KafkaError, KafkaException, Producer

    prod = Producer({"bootstrap.servers": bootstrap})
    with pytest.raises(KafkaException) as exc:
        prod.produce("any-topic", b"x" * TEN_MB)
    assert exc.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE


# ---- the corpus through a real worker ------------------------------------------------------------


def _dlq_metrics(text: str) -> dict[str, float]:
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^driftline_dlq_total\{reason="([^"]+)"\} (\S+)$', text, re.M)
    }


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


@pytest.mark.integration
def test_corpus_through_a_real_worker(
    bootstrap: str, topics: dict[str, str], topic_prefix: str, tmp_path: Path, consume: Any
) -> None:
    from confluent_kafka import Producer

    models = tmp_path / "models.yaml"
    models.write_text(MODELS_YAML)
    worker = Worker(bootstrap, topic_prefix, tmp_path, config=str(models), sink=False).start()
    try:
        now = time.time()
        tag = uuid.uuid4().hex[:6]
        items = corpus(now, tag)
        prod = Producer(
            {
                "bootstrap.servers": bootstrap,
                "message.max.bytes": 16 * 1024 * 1024,
                "partitioner": "murmur2_random",
                "allow.auto.create.topics": False,
            }
        )
        errors: list[Any] = []

        def report(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err)

        nparts = 4
        for kind, key, value, _ in items:
            topic = topics["predictions" if kind == "prediction" else "labels"]
            prod.produce(
                topic,
                value,
                key=key,
                partition=partition_for(key.decode(), nparts),
                on_delivery=report,
            )
            prod.poll(0)
            if kind == "prediction" and value is not None and len(value) > 1_000_000:
                prod.flush(60)
        assert prod.flush(60) == 0 and errors == [], errors  # Tansu took the 10 MB message

        # good traffic after the bad: it still joins
        n_good = 50
        good = [_pred(f"{tag}-g{i}", now - 50) for i in range(n_good)]
        for ev in good:
            pid = ev["prediction_id"]
            prod.produce(
                topics["predictions"],
                orjson.dumps(ev),
                key=pid.encode(),
                partition=partition_for(pid, nparts),
            )
        prod.flush(30)
        for ev in good:
            pid = ev["prediction_id"]
            lab = {"prediction_id": pid, "timestamp": now - 40, "label": 0}
            prod.produce(
                topics["labels"],
                orjson.dumps(lab),
                key=pid.encode(),
                partition=partition_for(pid, nparts),
            )
        assert prod.flush(30) == 0

        want = expected_reasons(items)
        total = sum(want.values())
        worker.wait_for(
            lambda: worker.health()["counters"].get("joins", 0) >= n_good + 2,
            90,
            "good events to join",
        )
        worker.wait_for(
            lambda: sum(_dlq_metrics(_get(worker.url + "/metrics")).values()) >= total,
            60,
            "DLQ counters",
        )

        # Prometheus: exactly the expected count per reason
        assert _dlq_metrics(_get(worker.url + "/metrics")) == {k: float(v) for k, v in want.items()}
        # the dead-letter topic: the same reasons, with coordinates and raw input
        msgs = consume(topics["dlq"], total, timeout=60)
        recs = [orjson.loads(m.value()) for m in msgs]
        assert Counter(r["reason"] for r in recs) == want
        sent_keys = {key for _, key, _, codes in items if codes}
        for m, r in zip(msgs, recs, strict=True):
            assert r["reason"] in REASON_CODES
            assert m.key() in sent_keys
            assert r["topic"] in (topics["predictions"], topics["labels"])
            assert 0 <= r["partition"] < nparts and r["offset"] >= 0
            assert isinstance(r["raw"], str) and len(r["raw"].encode()) <= 65536
        big = [r for r in recs if r["reason"] == "oversize_message"]
        assert len(big) == 1 and big[0]["raw"].startswith('{"prediction_id":"' + tag)
        long_id = [r for m, r in zip(msgs, recs, strict=True) if m.key() == b"k13"]
        assert long_id[0]["field"] == "prediction_id" and "i" * 10_240 in long_id[0]["raw"]

        h = worker.health()
        assert h["status"] == "ok" and worker.proc is not None and worker.proc.poll() is None
        assert h["counters"]["joins"] == n_good + 2
        assert h["counters"].get("dlq_processing_error", 0) == 0
    finally:
        worker.stop()


# ---- throughput with 10% bad input ---------------------------------------------------------------
# Measured at the PartitionProcessor level, not through the worker: the processor is where a bad
# event costs anything (decode, validation, the dead-letter record); end to end, the shared Tansu
# broker, faust's per-message overhead and the CI machine's load dominate and vary run to run by
# more than the 20% this test must resolve. Pure CPU timing of the same code path is repeatable.


def _envelopes(n_env: int, bad_share: float, now: float) -> list[tuple[str, bytes]]:
    bad_kinds = [
        lambda pid, ts: _pred(pid, ts, score="0.5"),  # wrong_type
        lambda pid, ts: _pred(pid, ts, score=1.5),  # out_of_range
        lambda pid, ts: {
            k: v for k, v in _pred(pid, ts).items() if k != "model_id"
        },  # missing_field
        lambda pid, ts: _pred(pid, ts, model="nobody"),  # unknown_model
        lambda pid, ts: _pred(pid, now + 10 * 86400),  # bad_timestamp
    ]
    out: list[tuple[str, bytes]] = []
    every = round(1 / bad_share) if bad_share else 0
    for e in range(n_env):
        preds, labs = [], []
        for i in range(500):
            n = e * 500 + i
            pid, ts = f"p{n}", now - 3000 + n * 0.01
            if every and n % every == 0:
                preds.append(bad_kinds[(n // every) % len(bad_kinds)](pid, ts))
                labs.append({"prediction_id": pid, "timestamp": ts + 1, "label": 1.5})  # wrong_type
            else:
                preds.append(_pred(pid, ts))
                labs.append({"prediction_id": pid, "timestamp": ts + 1, "label": n % 2})
        out += [("prediction", encode_envelope(preds)), ("label", encode_envelope(labs))]
    return out


def _events_per_second(msgs: list[tuple[str, bytes]], models: ModelsConfig) -> tuple[float, int]:
    store: dict[bytes, bytes] = {}
    proc = PartitionProcessor(0, models, store_get=store.get)
    offsets = {"prediction": 0, "label": 0}
    dlq = 0
    t = time.perf_counter()
    for kind, value in msgs:
        res = proc.process([Message(kind, kind + "s", 0, offsets[kind], None, value)])
        offsets[kind] += 1
        store.update(res.sets)
        for k in res.deletes:
            store.pop(k, None)
        proc.outbox_delivered()
        dlq += len(res.dlq)
    return len(msgs) * 500 / (time.perf_counter() - t), dlq


def test_throughput_with_ten_percent_bad_input() -> None:
    models = ModelsConfig(
        models={"fraud": ModelConfig(task="binary", segment_keys=("country",))},
        allow_unlisted_models=False,
    )
    now = time.time()
    n_env = 6
    clean, bad = _envelopes(n_env, 0.0, now), _envelopes(n_env, 0.1, now)
    _events_per_second(clean[:4], models)  # warm-up
    best_clean = best_bad = 0.0
    for _ in range(3):  # interleaved, best of three: robust to a busy machine
        eps, dlq = _events_per_second(clean, models)
        assert dlq == 0
        best_clean = max(best_clean, eps)
        eps, dlq = _events_per_second(bad, models)
        assert dlq == 2 * n_env * 50
        best_bad = max(best_bad, eps)
    ratio = best_bad / best_clean
    print(f"clean {best_clean:,.0f} ev/s, 10% bad {best_bad:,.0f} ev/s, ratio {ratio:.2f}")
    assert ratio >= 0.8


# ---- property tests: process() never raises ------------------------------------------------------

PROP_MODELS = ModelsConfig(
    models={
        "fraud": ModelConfig(task="binary", segment_keys=("country",)),
        "eta": ModelConfig(task="regression"),
        "pets": ModelConfig(task="multiclass"),
        "feed": ModelConfig(task="ranking", ranking_k=3),
    },
    allow_unlisted_models=False,
)
PROP_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["fraud", "eta", "pets", "nobody", "2026-11-23T17:00:00Z", "cat", "1", ""]),
    st.sampled_from([0.0, 0.5, 1.0, 1.5, -1.0, 1e308, 946684800.0, time.time(), 4e9]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "prediction_id",
        "model_id",
        "model_version",
        "timestamp",
        "prediction",
        "features",
        "latency_ms",
        "segments",
        "label",
        "value",
        "score",
        "scores",
        "events",
        "items",
        "feedback",
    ]
)


@st.composite
def near_valid_events(draw: Any) -> dict[str, Any]:
    """A valid prediction or label with a few fields replaced, removed or added."""
    pid = draw(st.sampled_from(["a", "b", "c", "d"]))
    ts = time.time() - draw(st.floats(min_value=0, max_value=10_000))
    if draw(st.booleans()):
        model = draw(st.sampled_from(["fraud", "eta", "pets", "feed", "nobody"]))
        pred = {
            "fraud": {"label": 1, "score": 0.7},
            "eta": {"value": 2.0},
            "pets": {"label": "cat", "scores": {"cat": 0.6, "dog": 0.4}},
            "feed": {"items": ["a", "b", "c", "a"], "scores": [0.9, 0.5, 0.5, 0.1]},
            "nobody": {"score": 0.1},
        }[model]
        ev: dict[str, Any] = _pred(pid, ts, model, **pred)
    else:
        ev = {
            "prediction_id": pid,
            "timestamp": ts,
            draw(st.sampled_from(["label", "value", "feedback"])): draw(
                st.sampled_from([0, 1, "cat", 2.5, True, {"clicked": ["a"], "converted": []}, {}])
            ),
        }
    for _ in range(draw(st.integers(0, 3))):
        name = draw(field_names)
        if draw(st.booleans()):
            ev[name] = draw(json_values)
        else:
            ev.pop(name, None)
    return ev


def _as_bytes(doc: Any) -> bytes:
    try:
        return orjson.dumps(doc)
    except TypeError:  # e.g. an integer wider than 64 bits
        return str(doc).encode()


messages_values = st.one_of(
    st.binary(max_size=200),
    st.none(),
    json_values.map(_as_bytes),
    near_valid_events().map(_as_bytes),
    st.lists(st.one_of(near_valid_events(), json_values), max_size=8).map(
        lambda evs: _as_bytes({"events": evs})
    ),
    st.text(max_size=50).map(lambda s: s.encode("utf-8", "surrogatepass")),
)
batches = st.lists(
    st.tuples(st.sampled_from(["prediction", "label"]), messages_values), min_size=1, max_size=6
)


@PROP_SETTINGS
@given(batches)
def test_process_never_raises_and_rejects_into_the_dlq(
    batch: list[tuple[str, bytes | None]],
) -> None:
    store: dict[bytes, bytes] = {}
    proc = PartitionProcessor(0, PROP_MODELS, store_get=store.get)
    offsets = {"prediction": 0, "label": 0}
    msgs = []
    for kind, value in batch:
        msgs.append(Message(kind, kind + "s", 0, offsets[kind], b"k", value))
        offsets[kind] += 1
    decoded_rejections = sum(len(decode_message(m.value, m.kind)[1]) for m in msgs)  # type: ignore[arg-type]
    res = proc.process(msgs)  # must not raise
    assert (
        len(res.dlq) >= decoded_rejections
    )  # every decoder rejection is a dead letter (plus worker codes)
    for key, rec in res.dlq:
        assert key == b"k" and rec["reason"] in REASON_CODES
        assert rec["reason"] != "processing_error", rec  # no processing step raised on this input
        orjson.dumps(rec)
    assert sum(v for k, v in res.counters.items() if k.startswith("dlq_")) == len(res.dlq)
    # the state survives a round trip and the partition keeps working
    store.update(res.sets)
    for k in res.deletes:
        store.pop(k, None)
    store[proc.state_key()] = res.state
    again = PartitionProcessor(0, PROP_MODELS, store_get=store.get)
    again.load_state(store[proc.state_key()])
    now = time.time()
    res2 = again.process(
        [
            Message(
                "prediction",
                "predictions",
                0,
                offsets["prediction"],
                None,
                orjson.dumps(_pred("fresh", now)),
            ),
            Message(
                "label",
                "labels",
                0,
                offsets["label"],
                None,
                orjson.dumps({"prediction_id": "fresh", "timestamp": now, "label": 1}),
            ),
        ]
    )
    assert len(res2.outcomes) == 1 and res2.dlq == []


@PROP_SETTINGS
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=5))
def test_non_finite_numbers_from_any_producer_never_reach_the_windows(xs: list[float]) -> None:
    """NaN/Infinity as literals (Python's json writes them) are malformed JSON, never numbers."""
    import json

    store: dict[bytes, bytes] = {}
    proc = PartitionProcessor(0, PROP_MODELS, store_get=store.get)
    ev = _pred("n", time.time(), score=xs[0])
    ev["latency_ms"] = xs[-1]
    raw = json.dumps(ev).encode()  # allow_nan=True by default
    res = proc.process([Message("prediction", "predictions", 0, 0, None, raw)])
    finite_ok = all(math.isfinite(x) for x in (xs[0], xs[-1])) and 0 <= xs[0] <= 1 and xs[-1] >= 0
    assert (res.dlq == []) == finite_ok
    for w in proc.windows.values():
        assert w.prediction_count == 1
