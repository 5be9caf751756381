"""`PORT[/PROTO]` and `svc/NS/NAME` as the command line and expectation files write them."""

from __future__ import annotations

from agent.model.objects import PROTOCOLS, TCP


def parse_port_protocol(text: str) -> tuple[int, str]:
    """'5432' -> (5432, 'TCP'); '53/udp' -> (53, 'UDP'). Raises ValueError with a reason."""
    number, _, protocol = text.partition("/")
    protocol = (protocol or TCP).upper()
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if not number.isdigit() or not 1 <= int(number) <= 65535:
        raise ValueError(f"port {number!r} is not a number from 1 to 65535")
    return int(number), protocol


# A probe target naming a Service (`picket lab probe`, expected.txt): its ClusterIP.
SERVICE_TARGET = "svc/"


def parse_service_target(text: str) -> tuple[str, str]:
    """'svc/NS/NAME' -> (NS, NAME). Raises ValueError with a reason."""
    namespace, _, name = text.removeprefix(SERVICE_TARGET).partition("/")
    if not text.startswith(SERVICE_TARGET) or not namespace or not name or "/" in name:
        raise ValueError(f"{text!r} is not svc/NAMESPACE/NAME")
    return namespace, name
