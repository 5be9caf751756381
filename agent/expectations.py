"""Expected connectivity files (`examples/*/expected.txt`): what a scenario must do.

The format is the text `picket explain --matrix` prints, so a reviewer can diff it:

    # comment
    matrix 5432/TCP namespaces=shop
    from\\to       shop/api shop/db
    shop/api      -        .
    shop/db       X        -

    check shop/api 198.19.200.7 443/TCP allowed
    check shop/web svc/shop/api 80/TCP allowed

    matrix 5432/TCP namespaces=shop family=6


Blocks are separated by blank lines; '.' means connects, 'X' denied, '-' self. A check
goes FROM a pod or an address TO a pod, an address or `svc/NS/NAME`: a new connection
to that Service's ClusterIP on the Service port PORT, which kube-proxy sends to one of
its backend pods (policy judges that connection; agent/model/service_backends.py).
A matrix with `family=4` or `family=6` is over the pods' addresses of that family (by
default their primary ones); a check naming an address is over that address's family.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.portspec import SERVICE_TARGET, parse_port_protocol, parse_service_target


@dataclass(frozen=True)
class MatrixExpectation:
    port: int
    protocol: str
    namespaces: tuple[str, ...]
    results: dict[str, dict[str, bool]] = field(hash=False)
    family: int | None = None  # 4 or 6; None: the pods' primary addresses


@dataclass(frozen=True)
class CheckExpectation:
    src: str
    dst: str
    port: int
    protocol: str
    allowed: bool

    @property
    def service(self) -> tuple[str, str] | None:
        """(namespace, name) when the target is a Service (svc/NS/NAME), else None."""
        return parse_service_target(self.dst) if self.dst.startswith(SERVICE_TARGET) else None


Expectation = MatrixExpectation | CheckExpectation


class ExpectationSyntaxError(ValueError):
    pass


def parse_expectations(text: str, source: str = "<expectations>") -> list[Expectation]:
    out: list[Expectation] = []
    lines = [ln.rstrip() for ln in text.splitlines()]
    i = 0
    while i < len(lines):
        line = lines[i]
        where = f"{source}:{i + 1}"
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
        elif line.startswith("check "):
            out.append(_parse_check(line, where))
            i += 1
        elif line.startswith("matrix "):
            block = []
            i += 1
            while i < len(lines) and lines[i].strip():
                if not lines[i].lstrip().startswith("#"):
                    block.append(lines[i])
                i += 1
            out.append(_parse_matrix(line, block, where))
        else:
            raise ExpectationSyntaxError(f"{where}: expected 'matrix' or 'check', got {line!r}")
    return out


def _parse_check(line: str, where: str) -> CheckExpectation:
    words = line.split()
    if len(words) != 5 or words[4] not in ("allowed", "denied"):
        raise ExpectationSyntaxError(f"{where}: want 'check FROM TO PORT/PROTO allowed|denied'")
    src, dst = words[1], words[2]
    if src.startswith(SERVICE_TARGET):
        raise ExpectationSyntaxError(f"{where}: {src!r}: a Service is a target, not a source")
    if dst.startswith(SERVICE_TARGET):
        try:
            parse_service_target(dst)
        except ValueError as exc:
            raise ExpectationSyntaxError(f"{where}: {exc}") from None
    port, protocol = _port(words[3], where)
    return CheckExpectation(src, dst, port, protocol, words[4] == "allowed")


def _parse_matrix(line: str, block: list[str], where: str) -> MatrixExpectation:
    words = line.split()
    port, protocol = _port(words[1] if len(words) > 1 else "", where)
    namespaces: tuple[str, ...] = ()
    family: int | None = None
    for word in words[2:]:
        key, _, value = word.partition("=")
        if key == "namespaces" and value:
            namespaces = tuple(value.split(","))
        elif key == "family" and value in ("4", "6"):
            family = int(value)
        else:
            raise ExpectationSyntaxError(f"{where}: unknown matrix option {word!r}")
    if not block:
        raise ExpectationSyntaxError(f"{where}: matrix without a table")
    columns = block[0].split()[1:]
    results: dict[str, dict[str, bool]] = {}
    for row in block[1:]:
        src, *marks = row.split()
        if len(marks) != len(columns):
            raise ExpectationSyntaxError(
                f"{where}: row {src!r} has {len(marks)} cells, want {len(columns)}"
            )
        results[src] = {}
        for dst, mark in zip(columns, marks, strict=True):
            if mark not in ".X-":
                raise ExpectationSyntaxError(f"{where}: cell {mark!r} is not '.', 'X' or '-'")
            if dst != src:
                results[src][dst] = mark == "."
    return MatrixExpectation(port, protocol, namespaces, results, family)


def _port(text: str, where: str) -> tuple[int, str]:
    try:
        return parse_port_protocol(text)
    except ValueError as exc:
        raise ExpectationSyntaxError(f"{where}: {exc}") from None
