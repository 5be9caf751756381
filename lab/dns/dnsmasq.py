"""dnsmasq as the lab's cluster DNS server: its command line, and running it inside a
pod's network namespace.

It answers from the hosts files of one directory (re-read by inotify whenever a file
there is replaced), holds `cluster.local` itself (`--local`: a name it does not have is
NXDOMAIN) and never forwards anything: no upstream (`--no-resolv`), and every other
name is NXDOMAIN too (`--address=/#/`), since the lab has no internet to ask. It
listens on UDP and TCP 53 on every address of the pod's namespace, of both families
(wildcard sockets on 0.0.0.0 and ::, so no --listen-address or --bind-interfaces): the
DNS pod's IPv4 and IPv6 addresses, and so each ClusterIP kube-dns has. A and AAAA
records both come from the hosts files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

DNSMASQ = "dnsmasq"
TTL = 5  # seconds; CoreDNS's kubernetes plugin answers with this TTL by default


def dnsmasq_argv(hosts_dir: Path, zone: str) -> list[str]:
    return [
        DNSMASQ,
        "--keep-in-foreground",
        "--conf-file=/dev/null",  # no /etc/dnsmasq.conf: only what is given here
        "--no-hosts",  # nor the host's /etc/hosts
        "--no-resolv",
        "--no-poll",
        f"--hostsdir={hosts_dir}",
        f"--local=/{zone}/",
        "--address=/#/",
        f"--local-ttl={TTL}",
        "--pid-file=",  # none: the process that started it knows its pid
        "--user=nobody",
        "--log-facility=-",  # to stderr, which is the DNS pod's log
        "--log-queries",
    ]


def start_in(netns: str, argv: list[str]) -> subprocess.Popen:
    """Start `argv` inside network namespace `netns`, writing to our own output (the
    DNS pod's log). It gets SIGTERM when the process
    that started it dies (setpriv --pdeathsig), so no dnsmasq outlives its pod process,
    even one killed with SIGKILL. Call from the main thread: the signal follows the
    thread that forked."""
    command = [
        # nsenter, not `ip netns exec`, as lab/processes.py explains.
        "nsenter",
        f"--net=/run/netns/{netns}",
        "setpriv",
        "--pdeathsig",
        "TERM",
        *argv,
    ]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL)


def stop(proc: subprocess.Popen, grace: float = 3.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
