"""The text form of label selectors: the `labelSelector` query parameter of the API
(apimachinery's `labels.Parse`) to and from the typed `LabelSelector`.

The grammar, as upstream:

    selector    ::= "" | requirement ("," requirement)*
    requirement ::= ["!"] KEY [ ("in" | "notin") "(" values ")" | ("=" | "==" | "!=") VALUE ]

Whitespace (space, tab, CR, LF) may separate any two tokens. `in` and `notin` are
keywords only where an operator is expected, so they are valid keys and values.
`>` and `<` lex like upstream but are refused: `LabelSelector` has no Gt/Lt.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.model.names import label_value_problems, qualified_name_problems
from agent.model.selectors import (
    DOES_NOT_EXIST,
    EXISTS,
    IN,
    NOT_IN,
    LabelSelector,
    Requirement,
)

_WHITESPACE = " \t\r\n"
_SPECIAL = "=!(),<>"
# The longest match wins, as in upstream's scanSpecialSymbol: "!=" before "!".
_SYMBOLS = ("!=", "==", "=", "!", "(", ")", ",", ">", "<")
_END = ""  # the kind and literal of the end-of-string token
_IDENT = "identifier"
_BINARY_OPERATORS = "in, notin, =, ==, !="


@dataclass(frozen=True)
class _Token:
    kind: str  # _IDENT, _END or the symbol itself
    text: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    tokens, i = [], 0
    while True:
        while i < len(text) and text[i] in _WHITESPACE:
            i += 1
        if i == len(text):
            tokens.append(_Token(_END, _END, i))
            return tokens
        start = i
        if text[i] in _SPECIAL:
            symbol = next(s for s in _SYMBOLS if text.startswith(s, i))
            tokens.append(_Token(symbol, symbol, start))
            i += len(symbol)
            continue
        while i < len(text) and text[i] not in _SPECIAL and text[i] not in _WHITESPACE:
            i += 1
        tokens.append(_Token(_IDENT, text[start:i], start))


class _Parser:
    """Recursive descent over the token list, mirroring upstream's Parser so that the
    same inputs are accepted and errors name the same token. (One exception: upstream
    refuses "(a,,)", a quirk of its list loop; here it is {"", "a"} like "(a,)".)"""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def next(self) -> _Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def fail(self, token: _Token, expected: str, prefix: str = "") -> ValueError:
        found = "end of string" if token.kind == _END else f"'{token.text}'"
        return ValueError(
            f"{prefix}found {found}, expected: {expected}"
            f" (at offset {token.pos} of label selector {self.text!r})"
        )

    def selector(self) -> list[tuple[str, str, tuple[str, ...]]]:
        reqs = []
        first = self.peek()
        if first.kind == _END:
            return reqs
        if first.kind not in (_IDENT, "!"):
            raise self.fail(first, "!, identifier, or 'end of string'")
        while True:
            reqs.append(self.requirement())
            token = self.next()
            if token.kind == _END:
                return reqs
            if token.kind != ",":
                raise self.fail(token, "',' or 'end of string'")
            if self.peek().kind not in (_IDENT, "!"):
                raise self.fail(self.peek(), "identifier after ','")

    def requirement(self) -> tuple[str, str, tuple[str, ...]]:
        negated = self.peek().kind == "!"
        if negated:
            self.next()
        key = self.next()
        if key.kind != _IDENT:
            raise self.fail(key, "identifier", "unable to parse requirement: ")
        self.check(key, qualified_name_problems(key.text), "label key")
        if negated or self.peek().kind in (_END, ","):
            return key.text, DOES_NOT_EXIST if negated else EXISTS, ()
        op = self.next()
        if op.kind == _IDENT and op.text in ("in", "notin"):
            values = self.value_set()
        elif op.kind in ("=", "==", "!="):
            values = (self.exact_value(),)
        elif op.kind in (">", "<"):
            raise ValueError(
                f"unable to parse requirement: operator '{op.text}' is not supported,"
                f" expected: {_BINARY_OPERATORS}"
                f" (at offset {op.pos} of label selector {self.text!r})"
            )
        else:
            raise self.fail(op, _BINARY_OPERATORS, "unable to parse requirement: ")
        return key.text, op.text, values

    def value_set(self) -> tuple[str, ...]:
        prefix = "unable to parse requirement: "
        token = self.next()
        if token.kind != "(":
            raise self.fail(token, "'('", prefix)
        values: set[str] = set()
        # A value slot left empty, as in "()", "(,a)", "(a,,b)" or "(a,)", is the
        # empty value, as upstream.
        expect_value = True
        while True:
            token = self.next()
            if token.kind == _IDENT and expect_value:
                self.check(token, label_value_problems(token.text), "label value")
                values.add(token.text)
                expect_value = False
            elif token.kind in (",", ")"):
                if expect_value:
                    values.add("")
                if token.kind == ")":
                    return tuple(sorted(values))
                expect_value = True
            else:
                raise self.fail(
                    token, "',', ')' or identifier" if expect_value else "',' or ')'", prefix
                )

    def exact_value(self) -> str:
        if self.peek().kind in (_END, ","):
            return ""
        token = self.next()
        if token.kind != _IDENT:
            raise self.fail(token, "identifier", "unable to parse requirement: ")
        self.check(token, label_value_problems(token.text), "label value")
        return token.text

    def check(self, token: _Token, problems: list[str], what: str) -> None:
        if problems:
            raise ValueError(
                f"unable to parse requirement: invalid {what} {token.text!r}: "
                f"{'; '.join(problems)} (at offset {token.pos} of label selector {self.text!r})"
            )


def parse_label_selector(text: str) -> LabelSelector:
    """Parse the `labelSelector` syntax; the empty string selects everything.

    `k=v` and `k==v` become matchLabels, except that a key given several different
    exact values becomes one single-valued In requirement per value, so the selector
    still requires all of them (and so matches nothing), as upstream's AND does.
    `k!=v` is NotIn, which like upstream's `!=` also matches objects without `k`.
    Raises ValueError saying what was found, what was expected and at which offset.
    """
    return _build(_Parser(text).selector())


def _build(parsed: Iterable[tuple[str, str, tuple[str, ...]]]) -> LabelSelector:
    exact: dict[str, set[str]] = {}
    reqs: set[Requirement] = set()
    for key, op, values in parsed:
        if op in ("=", "=="):
            exact.setdefault(key, set()).update(values)
        elif op == "!=":
            reqs.add(Requirement(key, NOT_IN, values))
        elif op in (EXISTS, DOES_NOT_EXIST):
            reqs.add(Requirement(key, op))
        else:
            reqs.add(Requirement(key, IN if op == "in" else NOT_IN, values))
    labels = []
    for key, values in exact.items():
        if len(values) == 1:
            labels.append((key, *values))
        else:
            reqs.update(Requirement(key, IN, (v,)) for v in values)
    return LabelSelector(match_labels=tuple(sorted(labels)), expressions=tuple(sorted(reqs)))


def format_label_selector(selector: LabelSelector) -> str:
    """The `labelSelector` text of a selector, ordered by key like upstream's
    `Selector.String()`; the empty selector is "" (which selects everything).

    Raises ValueError for a requirement the syntax cannot express (In or NotIn
    without values, Exists or DoesNotExist with values, an unknown operator).
    """
    parts = [(k, 0, f"{k}={v}") for k, v in selector.match_labels]
    for r in selector.expressions:
        if r.operator not in (IN, NOT_IN, EXISTS, DOES_NOT_EXIST):
            raise ValueError(f"operator {r.operator!r} of key {r.key!r} has no text form")
        if (r.operator in (IN, NOT_IN)) != bool(r.values):
            raise ValueError(f"requirement {r.key} {r.operator} {list(r.values)} is invalid")
        # str(Requirement) is already the upstream form: "k in (a,b)", "k", "!k".
        parts.append((r.key, 1, str(Requirement(r.key, r.operator, tuple(sorted(r.values))))))
    return ",".join(text for _, _, text in sorted(parts))
