"""How a pod's resolver turns a name into queries (pure).

A kubelet writes each ClusterFirst pod's resolv.conf as

    nameserver <kube-dns ClusterIP>
    search <ns>.svc.<zone> svc.<zone> <zone>
    options ndots:5

and glibc's resolver walks it: a name with fewer dots than ndots is tried with each
search domain first and then as given, any other name as given first; a name ending in
a dot is tried as given only. The walk goes on past a name that does not exist
(NXDOMAIN), has no address (NODATA) or failed on the server (SERVFAIL), and stops at
the first answer, and at any other reply: a timeout, an unreachable server (there is
no other server to try), REFUSED.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

NDOTS = 5
MAX_NAME, MAX_LABEL = 253, 63

ANSWER, NXDOMAIN, NODATA, SERVFAIL = "answer", "NXDOMAIN", "NODATA", "SERVFAIL"
TIMEOUT, UNREACHABLE = "timeout", "unreachable"
GO_ON = (NXDOMAIN, NODATA, SERVFAIL)  # outcomes after which the next candidate is tried


@dataclass(frozen=True)
class Reply:
    """What one query got: an outcome (ANSWER, NXDOMAIN, NODATA, TIMEOUT, UNREACHABLE,
    or another response code by name, e.g. SERVFAIL) and the addresses answered."""

    outcome: str
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resolution:
    outcome: str
    name: str | None  # the name that answered
    addresses: tuple[str, ...]
    tried: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.outcome == ANSWER


def search_list(namespace: str, zone: str) -> list[str]:
    return [f"{namespace}.svc.{zone}", f"svc.{zone}", zone]


def check_name(name: str) -> None:
    """Raises ValueError for what no resolver would send."""
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if not name or name == "." or any(not label for label in labels):
        raise ValueError(f"{name!r} is not a domain name (an empty label)")
    if len(name.rstrip(".")) > MAX_NAME or any(len(label) > MAX_LABEL for label in labels):
        raise ValueError(f"{name!r} is too long for a domain name")


def candidates(name: str, namespace: str, zone: str, ndots: int = NDOTS) -> list[str]:
    """The absolute names a pod in `namespace` queries for `name`, in order."""
    check_name(name)
    if name.endswith("."):
        return [name]
    searched = [f"{name}.{domain}." for domain in search_list(namespace, zone)]
    return [*searched, f"{name}."] if name.count(".") < ndots else [f"{name}.", *searched]


def walk(names: Iterable[str], ask: Callable[[str], Reply]) -> Resolution:
    """Query the names in turn as the resolver does. The outcome is the first answer,
    or the reply that stopped the walk, or else, as glibc ranks them, NODATA if some
    name had no address, SERVFAIL if some query failed, NXDOMAIN if no name exists."""
    tried: list[str] = []
    seen: set[str] = set()
    for name in names:
        tried.append(name)
        reply = ask(name)
        if reply.outcome == ANSWER:
            return Resolution(ANSWER, name, reply.addresses, tuple(tried))
        if reply.outcome not in GO_ON:
            return Resolution(reply.outcome, None, (), tuple(tried))
        seen.add(reply.outcome)
    final = next((o for o in (NODATA, SERVFAIL) if o in seen), NXDOMAIN)
    return Resolution(final, None, (), tuple(tried))
