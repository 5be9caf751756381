"""The agent's HTTP endpoint: /metrics (Prometheus text format), /healthz (the sync loop
is alive), /readyz (the dataplane is programmed). A small threaded server of the
standard library: prometheus-client's own server serves only /metrics.

Bounded, whoever connects (any pod can reach a node address): at most RATE requests a
second (BURST at once) get a thread, and at most MAX_REQUESTS at once; any other is
answered 503 by the accepting thread and closed, without a thread or a parse. A
connection that sends or reads nothing for TIMEOUT seconds is closed, and /metrics is
rendered at most once per RENDER_INTERVAL, concurrent scrapes sharing the body. The
agent's sync loop shares the interpreter with these threads: what they may take of it
is bounded, not only what they may take of the kernel."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from agent.droplog.folding import TokenBucket
from agent.metrics.health import Verdict

log = logging.getLogger("picket.metrics")

MAX_REQUESTS = 8
RATE, BURST = 20.0, 40.0  # requests per second served: Prometheus scrapes every 15-60 s
TIMEOUT = 5.0  # seconds
RENDER_INTERVAL = 1.0  # seconds
BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n"


class RenderedMetrics:
    """The registry's exposition, rendered again only once `interval` has passed."""

    def __init__(
        self, registry: CollectorRegistry, interval: float = RENDER_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.registry, self.interval, self.clock = registry, interval, clock
        self._lock = threading.Lock()
        self._body, self._at = b"", float("-inf")

    def body(self) -> bytes:
        with self._lock:  # the others wait for the one rendering, then share its body
            now = self.clock()
            if now - self._at >= self.interval:
                self._body, self._at = generate_latest(self.registry), now
            return self._body


def parse_address(address: str) -> tuple[str, int]:
    """':9402' (every address), '198.18.0.1:9402' or '[::1]:9402' -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics-addr {address!r}: expected [host]:port, e.g. :9402")
    return host.strip("[]"), int(port)


class MetricsServer:
    def __init__(
        self,
        address: str,
        registry: CollectorRegistry,
        liveness: Callable[[], Verdict],
        readiness: Callable[[], Verdict],
    ) -> None:
        rendered = RenderedMetrics(registry)
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, rendered.body()),
            "/healthz": lambda: _verdict(liveness()),
            "/readyz": lambda: _verdict(readiness()),
        }

        class Handler(BaseHTTPRequestHandler):
            timeout = TIMEOUT  # per socket operation: a silent client is let go

            def do_GET(self) -> None:
                route = routes.get(self.path.split("?")[0])
                if route is None:
                    status, ctype, body = 404, "text/plain", b"not found\n"
                else:
                    status, ctype, body = route()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        host, port = parse_address(address)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            slots = threading.BoundedSemaphore(MAX_REQUESTS)
            budget = TokenBucket(RATE, BURST)  # only the accepting thread takes from it
            request_queue_size = 64  # a burst is answered 503, not dropped at the SYN

            def process_request(self, request: Any, client_address: Any) -> None:
                if not self.budget.take(time.monotonic()):
                    self._busy(request)
                    return
                if not self.slots.acquire(blocking=False):
                    self._busy(request)
                    return
                super().process_request(request, client_address)

            def _busy(self, request: Any) -> None:
                with contextlib.suppress(OSError):  # it may be gone already
                    request.sendall(BUSY)
                self.shutdown_request(request)

            def process_request_thread(self, request: Any, client_address: Any) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    self.slots.release()

        self.httpd = Server((host, port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _verdict(verdict: Verdict) -> tuple[int, str, bytes]:
    status = 200 if verdict.ok else 503
    word = "ok" if verdict.ok else "unhealthy"
    return status, "text/plain; charset=utf-8", f"{word}: {verdict.reason}\n".encode()
