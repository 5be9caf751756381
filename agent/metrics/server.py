"""The agent's HTTP endpoint: /metrics (Prometheus text format), /healthz (the sync loop
is alive), /readyz (the dataplane is programmed). A small threaded server of the
standard library: prometheus-client's own server serves only /metrics."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from agent.metrics.health import Verdict

log = logging.getLogger("picket.metrics")


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
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
            "/healthz": lambda: _verdict(liveness()),
            "/readyz": lambda: _verdict(readiness()),
        }

        class Handler(BaseHTTPRequestHandler):
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
