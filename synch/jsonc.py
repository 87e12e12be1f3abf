"""JSON with comments, parsed with line numbers so that every configuration problem can say
where it is. The leniencies (comments, trailing commas, invalid escapes kept as written) are
described in `synch.config`.

`loads()` and `set_member()` give other readers of a settings file (the appliance's first
boot) this same reading: a file `synch check-config` accepts is never refused by them.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, NoReturn

MAX_DEPTH = 32  # nesting deeper than this is junk, not settings
MAX_NUMBER_CHARS = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


Kind = Literal["object", "array", "string", "number", "bool", "null"]


class Member(NamedTuple):
    name: str
    line: int
    node: Node


@dataclass
class Node:
    kind: Kind
    line: int
    scalar: str | int | float | bool | None = None
    raw: str = ""  # a number's source text
    members: list[Member] = field(default_factory=list)
    elements: list[Node] = field(default_factory=list)
    bad_escapes: list[str] = field(default_factory=list)
    start: int = 0  # the value's text is source[start:end]
    end: int = 0


class JsonSyntaxError(Exception):
    def __init__(self, pos: int, message: str):
        super().__init__(message)
        self.pos = pos
        self.message = message


_STRING_CHUNK = re.compile(r'[^"\\\x00-\x1f]*')
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class JsoncParser:
    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line_col(self, pos: int) -> tuple[int, int]:
        line = bisect_right(self._line_starts, pos)
        return line, pos - self._line_starts[line - 1] + 1

    def fail(self, message: str, pos: int | None = None) -> NoReturn:
        raise JsonSyntaxError(self.i if pos is None else pos, message)

    def document(self) -> Node:
        self.skip()
        if self.i >= len(self.s):
            self.fail("the file is empty: expected a JSON object")
        if self.s[self.i] != "{":
            self.fail("expected '{': the settings are one JSON object")
        root = self.value(0)
        self.skip()
        if self.i < len(self.s):
            self.fail("unexpected text after the closing '}'")
        return root

    def skip(self) -> None:
        """Skip whitespace and comments."""
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r\n":
                self.i += 1
            elif s.startswith("//", self.i):
                end = s.find("\n", self.i)
                self.i = len(s) if end < 0 else end + 1
            elif s.startswith("/*", self.i):
                end = s.find("*/", self.i + 2)
                if end < 0:
                    self.fail("unterminated /* comment")
                self.i = end + 2
            elif c == "/":
                self.fail("unexpected '/': comments are // or /* */")
            else:
                return

    def value(self, depth: int) -> Node:
        self.skip()
        if self.i >= len(self.s):
            self.fail("unexpected end of file: expected a value")
        start = self.i
        node = self.parse_value(depth)
        node.start, node.end = start, self.i
        return node

    def parse_value(self, depth: int) -> Node:
        c = self.s[self.i]
        if c == "{":
            return self.obj(depth + 1)
        if c == "[":
            return self.array(depth + 1)
        if c == '"':
            return self.string()
        if c == "-" or c.isdigit():
            return self.number()
        return self.literal()

    def obj(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            self.fail(f"nested more than {MAX_DEPTH} levels deep")
        node = Node("object", self.line_col(self.i)[0])
        self.i += 1
        while True:
            self.skip()
            if self.i < len(self.s) and self.s[self.i] == "}":
                self.i += 1
                return node
            self.expect_key()
            line = self.line_col(self.i)[0]
            key = self.string()
            self.skip()
            if not self.s.startswith(":", self.i):
                self.fail(f"expected ':' after the key \"{key.scalar}\"")
            self.i += 1
            node.members.append(Member(str(key.scalar), line, self.value(depth)))
            if not self.separator("}"):
                return node

    def array(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            self.fail(f"nested more than {MAX_DEPTH} levels deep")
        node = Node("array", self.line_col(self.i)[0])
        self.i += 1
        while True:
            self.skip()
            if self.i < len(self.s) and self.s[self.i] == "]":
                self.i += 1
                return node
            node.elements.append(self.value(depth))
            if not self.separator("]"):
                return node

    def separator(self, closer: str) -> bool:
        """After an item: ',' → True (more may follow), closer → False (consumed)."""
        self.skip()
        if self.s.startswith(",", self.i):
            self.i += 1
            return True
        if self.s.startswith(closer, self.i):
            self.i += 1
            return False
        if self.i >= len(self.s):
            self.fail(f"unexpected end of file: expected ',' or '{closer}'")
        self.fail(f"expected ',' or '{closer}' (a comma missing at the end of the previous value?)")

    def expect_key(self) -> None:
        if self.i >= len(self.s):
            self.fail("unexpected end of file: expected a key or '}'")
        c = self.s[self.i]
        if c == '"':
            return
        if c == "'":
            self.fail("keys and strings need double quotes, not single quotes")
        if _WORD.match(self.s, self.i):
            self.fail("key names need double quotes")
        self.fail(f"expected a \"key\" or '}}', found {c!r}")

    def string(self) -> Node:
        start = self.i
        line = self.line_col(start)[0]
        s = self.s
        parts: list[str] = []
        bad: list[str] = []
        self.i += 1
        while True:
            m = _STRING_CHUNK.match(s, self.i)
            assert m is not None  # the pattern matches the empty string
            parts.append(m.group())
            self.i = m.end()
            if self.i >= len(s):
                self.fail("unterminated string", start)
            c = s[self.i]
            if c == '"':
                self.i += 1
                node = Node("string", line, scalar="".join(parts))
                node.bad_escapes = bad
                return node
            if c == "\\":
                parts.append(self.escape(start, bad))
                continue
            if c in "\r\n":
                self.fail("unterminated string (a string cannot span lines)", start)
            self.fail(f"control character U+{ord(c):04X} inside a string: write it as an escape")

    def escape(self, start: int, bad: list[str]) -> str:
        s = self.s
        if self.i + 1 >= len(s):
            self.fail("unterminated string", start)
        c = s[self.i + 1]
        if c in _ESCAPES:
            self.i += 2
            return _ESCAPES[c]
        if c == "u":
            return self.unicode_escape()
        if _CONTROL.match(c):
            self.fail("unterminated string (a backslash at the end of a line?)", start)
        # Lenient: an invalid escape is kept verbatim; the caller warns with the key's name.
        self.i += 2
        bad.append("\\" + c)
        return "\\" + c

    def unicode_escape(self) -> str:
        code = self.hex4(self.i + 2)
        self.i += 6
        if 0xD800 <= code <= 0xDBFF and self.s.startswith("\\u", self.i):
            low = self.hex4(self.i + 2)
            if 0xDC00 <= low <= 0xDFFF:
                self.i += 6
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
        if 0xD800 <= code <= 0xDFFF:
            self.fail("\\u escape of an unpaired surrogate", self.i - 6)
        return chr(code)

    def hex4(self, pos: int) -> int:
        digits = self.s[pos : pos + 4]
        if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
            self.fail("\\u must be followed by four hex digits", pos - 2)
        return int(digits, 16)

    def number(self) -> Node:
        m = _NUMBER.match(self.s, self.i)
        end = m.end() if m else self.i
        if (
            m is None
            or m.group() in ("", "-")
            or (end < len(self.s) and (self.s[end].isalnum() or self.s[end] in "._"))
        ):
            self.fail("invalid number")
        raw = m.group()
        if len(raw) > MAX_NUMBER_CHARS:
            self.fail("number too long")
        node = Node("number", self.line_col(self.i)[0], raw=raw)
        node.scalar = float(raw) if any(c in raw for c in ".eE") else int(raw)
        self.i = end
        return node

    def literal(self) -> Node:
        m = _WORD.match(self.s, self.i)
        line = self.line_col(self.i)[0]
        word = m.group() if m else ""
        if word in ("true", "false"):
            self.i += len(word)
            return Node("bool", line, scalar=word == "true")
        if word == "null":
            self.i += 4
            return Node("null", line)
        if self.s[self.i] == "'":
            self.fail("strings need double quotes, not single quotes")
        if word:
            # Shown only when it is a miswritten literal: it may be a password without quotes.
            shown = f" {word!r}" if word.lower() in ("true", "false", "null") else ""
            self.fail(
                f"unexpected word{shown}: text needs double quotes; "
                "literals are true, false and null (lowercase)"
            )
        self.fail(f"unexpected character {self.s[self.i]!r}: expected a value")


# --------------------------------------------------------------------------------------------
# For other readers of a settings file


def parse_document(text: str) -> Node:
    """The root object of a settings text (a leading BOM ignored, as synch.config does).
    Raises ValueError naming the line and column of a syntax error."""
    parser = JsoncParser(text.removeprefix("\ufeff"))
    try:
        return parser.document()
    except JsonSyntaxError as err:
        line, col = parser.line_col(err.pos)
        raise ValueError(f"line {line}:{col}: invalid JSON: {err.message}") from None


def loads(text: str) -> object:
    """The plain Python value of a settings text, read as synch reads it (comments, trailing
    commas, invalid escapes kept as written). Keys keep their spelling; of the same key twice
    the last wins (synch refuses such a file anyway). Raises ValueError."""
    return plain(parse_document(text))


def plain(node: Node) -> object:
    if node.kind == "object":
        return {m.name: plain(m.node) for m in node.members}
    if node.kind == "array":
        return [plain(e) for e in node.elements]
    return node.scalar


def set_member(text: str, section: str, key: str, value: str) -> str:
    """`text` with `section`.`key` set to the string `value`: names match case-insensitively,
    a missing section or key is added, and everything else (comments, layout, the spelling of
    every other value) stays exactly as written. Raises ValueError if the text is not a
    settings object or the section is not an object."""
    body = text.removeprefix("\ufeff")
    root = parse_document(body)
    encoded = json.dumps(value)
    found = _member(root, section)
    if found is None:
        return _insert(body, root, f"{json.dumps(section)}: {{{json.dumps(key)}: {encoded}}}")
    if found.kind == "null":
        return _replace(body, found, f"{{{json.dumps(key)}: {encoded}}}")
    if found.kind != "object":
        raise ValueError(f"{section} is not an object {{...}}")
    current = _member(found, key)
    if current is None:
        return _insert(body, found, f"{json.dumps(key)}: {encoded}")
    return _replace(body, current, encoded)


def _member(obj: Node, name: str) -> Node | None:
    return next((m.node for m in obj.members if m.name.lower() == name.lower()), None)


def _insert(text: str, obj: Node, member: str) -> str:
    """`member` as the first member of the object `obj` (right after its '{')."""
    at = obj.start + 1
    return text[:at] + " " + member + (", " if obj.members else " ") + text[at:]


def _replace(text: str, node: Node, value: str) -> str:
    return text[: node.start] + value + text[node.end :]
