"""A plain webhook: each alert transition POSTed as it is on the alerts topic, optionally signed.

Request: ``POST <DRIFTLINE_ALERT_WEBHOOK_URL>``, ``Content-Type: application/json``, the body the
Kafka message's value byte for byte (one alert, ``driftline.schemas.messages.Alert``), and:

* ``X-Driftline-Alert-Id``: the transition's ``alert_id`` (the same on every retry and replay);
* with ``DRIFTLINE_ALERT_WEBHOOK_SECRET`` set, ``X-Driftline-Timestamp`` (integer epoch seconds
  of this attempt) and ``X-Driftline-Signature: sha256=<hex>``, the HMAC-SHA256 with the
  secret as key over ``<timestamp>.<body>`` (the timestamp's ASCII digits, a ``.``, the raw
  body bytes). Signing the timestamp lets a receiver refuse old replays (e.g. older than 5
  minutes); compare signatures in constant time (``hmac.compare_digest``).

Delivery is at least once: a receiver deduplicates by ``alert_id`` (it already names one
transition of one incident: ``status`` is part of it).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from driftline.sinks.alertmanager import split_credentials
from driftline.sinks.delivery import http_post

SIGNATURE_HEADER = "X-Driftline-Signature"
TIMESTAMP_HEADER = "X-Driftline-Timestamp"
ALERT_ID_HEADER = "X-Driftline-Alert-Id"


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """``sha256=<hex>`` of ``<timestamp>.<body>`` keyed with ``secret``.

    >>> signature(b'{"a":1}', "k", 1800000000)
    'sha256=a776b22fd93f756bb625f275db2abe8a55e6c7d8b59d2533b90bc67b8569d2b7'
    """
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookTarget:
    """Posts one alert message (raw bytes) per item; items are ``(body, alert_id)``."""

    def __init__(self, url: str, *, secret: str = "", timeout: float = 10.0) -> None:
        self.url, self._auth, host = split_credentials(url)
        self.name = f"webhook@{host}"
        self._secret, self.timeout = secret, timeout

    def headers(self, body: bytes, alert_id: str, now: float | None = None) -> dict[str, str]:
        out = {**self._auth, ALERT_ID_HEADER: alert_id}
        if self._secret:
            ts = int(time.time() if now is None else now)
            out[TIMESTAMP_HEADER] = str(ts)
            out[SIGNATURE_HEADER] = signature(body, self._secret, ts)
        return out

    def send(self, item: tuple[bytes, str]) -> None:
        body, alert_id = item
        http_post(self.url, body, self.headers(body, alert_id), self.timeout)
