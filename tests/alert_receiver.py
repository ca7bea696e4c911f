"""Test helpers for alert delivery: an HTTP receiver that records posts, and Alertmanager configs."""

from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Receiver:
    """Records every POST; ``fail[path] = n`` answers the next n posts to ``path`` with 503."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.fail: dict[str, int] = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner.lock:
                    failing = owner.fail.get(self.path, 0) > 0
                    if failing:
                        owner.fail[self.path] -= 1
                    else:
                        owner.posts.append(Post(self.path, dict(self.headers.items()), body))
                self.send_response(503 if failing else 200)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[Post]:
        with self.lock:
            return [p for p in self.posts if p.path == path]

    def wait(self, path: str, predicate: Any, timeout: float = 30.0, what: str = "posts") -> list[Post]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.at(path)
            if predicate(got):
                return got
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what} at {path}: {[p.body[:200] for p in self.at(path)]}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def am_config(webhook_url: str) -> str:
    """Every alert its own group (all labels), notified at once, resolves notified, no repeats."""
    return f"""\
route:
  receiver: test
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 24h
receivers:
  - name: test
    webhook_configs:
      - url: {webhook_url}
        send_resolved: true
"""


def am_notified(posts: list[Post]) -> list[dict[str, Any]]:
    """The alerts of Alertmanager's webhook notifications, in order: each with the notification's status."""
    return [a for p in posts for a in p.json()["alerts"]]
