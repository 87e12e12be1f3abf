"""Asterisk configuration as ordered data: an AMI GetConfig reply or a .conf text → ConfigFile.

Order is kept everywhere (categories and their lines), duplicate keys are kept (`allow=` twice),
duplicate category names are kept (FreePBX has `[1001]` endpoint and `[1001]` aor), and values
are kept whole (`setvar=A=B` is key `setvar`, value `A=B`). Pure: no sockets, no files.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

V = TypeVar("V")


class ConfigParseError(ValueError):
    """A GetConfig reply or a .conf text that cannot be trusted; the message says why."""


@dataclass(frozen=True)
class Category:
    """One `[name]` section. `lines` are (key, value) pairs in file order.

    `templates` names the templates it inherited from (GetConfig's `Templates-`): their
    variables are already in `lines` (GetConfig flattens them, inherited ones first).
    """

    name: str
    lines: tuple[tuple[str, str], ...]
    templates: tuple[str, ...] = ()
    is_template: bool = False

    def values(self, key: str) -> list[str]:
        """Every value of `key` in order (Asterisk variable names are case-insensitive)."""
        wanted = key.lower()
        return [value for k, value in self.lines if k.lower() == wanted]

    def get(self, key: str) -> str | None:
        """The first value of `key`, as Asterisk's ast_variable_retrieve() finds it."""
        wanted = key.lower()
        for k, value in self.lines:
            if k.lower() == wanted:
                return value
        return None

    @cached_property
    def type(self) -> str:
        """The `type=` value, stripped and lowercased ("" when there is none)."""
        return (self.get("type") or "").strip().lower()


def _category(
    name: str, lines: tuple[tuple[str, str], ...], templates: tuple[str, ...], is_template: bool
) -> Category:
    """Category(name, lines, templates, is_template) for the parsers' bulk use: the frozen
    dataclass's __init__ (object.__setattr__ per field) took a quarter of the time of building
    20,000 small sections. Arguments must have the field types; nothing is checked."""
    category: Category = object.__new__(Category)
    category.__dict__.update(name=name, lines=lines, templates=templates, is_template=is_template)
    return category


@dataclass(frozen=True)
class ConfigFile:
    """An ordered collection of categories; names may repeat."""

    categories: tuple[Category, ...] = field(default_factory=tuple)

    def __iter__(self) -> Iterator[Category]:
        return iter(self.categories)

    def __len__(self) -> int:
        return len(self.categories)

    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    def find(self, name: str, type_: str | None = None) -> Category | None:
        """The first category called `name` (exact), optionally with `type=type_`."""
        for cat in self._by_name.get(name, ()):
            if type_ is None or cat.type == type_:
                return cat
        return None

    @cached_property
    def _by_name(self) -> dict[str, list[Category]]:
        # Built once: lookups per account would otherwise make a 10k-account diff quadratic.
        index: dict[str, list[Category]] = {}
        for cat in self.categories:
            index.setdefault(cat.name, []).append(cat)
        return index


# -- AMI GetConfig ------------------------------------------------------------------------------

_CATEGORY = re.compile(r"Category-([0-9]+)", re.IGNORECASE)
_TEMPLATES = re.compile(r"Templates-([0-9]+)", re.IGNORECASE)
_IS_TEMPLATE = re.compile(r"IsTemplate-([0-9]+)", re.IGNORECASE)
_LINE = re.compile(r"Line-([0-9]+)-([0-9]+)", re.IGNORECASE)
_NO_CATEGORIES = "No categories found"


def parse_getconfig(
    headers: Sequence[tuple[str, str]], body: str = "", *, names: Container[str] | None = None
) -> ConfigFile:
    """Build a ConfigFile from a GetConfig reply's header lines (in any order) and body.

    Indices are Asterisk's `%06d` counters, which start at 0 and have no gaps: a gap, a
    duplicate, or a line of a category never announced means the reply was cut or mangled and
    raises ConfigParseError rather than syncing a partial user list. (A reply cut after a
    complete line cannot be told from a whole one: the transport must see the blank line that
    ends every AMI message.)

    `names`: keep only the categories with one of these names (the whole reply is checked all
    the same); a sync needs 2,500 of 10,000 aors, and building the rest cost time and memory.
    """
    if not body:
        config = _parse_as_asterisk_sends(headers, names)
        if config is not None:
            return config
    config = _parse_any_order(headers, body)
    if names is None:
        return config
    return ConfigFile(tuple(cat for cat in config if cat.name in names))


# "000000", "000001", ...: line indices as Asterisk writes them (grown on demand).
_INDEX: list[str] = [f"{i:06d}" for i in range(256)]
_CRLF = frozenset("\r\n")


def _parse_as_asterisk_sends(
    headers: Sequence[tuple[str, str]], names: Container[str] | None
) -> ConfigFile | None:
    """The reply as Asterisk writes it, or None for anything else (_parse_any_order decides).

    Asterisk's action_getconfig writes `Response: Success`, `ActionID`, then for each category
    in order `Category-i`, maybe `IsTemplate-i` and `Templates-i`, and `Line-i-j` from j = 0.
    Checking that each header is exactly the one expected next is far cheaper than sorting
    indices (~200,000 lines for 10k accounts), and a reply that passes holds no duplicate, gap
    or stray index: _parse_any_order would build exactly the same from it.
    """
    categories: list[Category] = []
    position = -1  # the current category's index
    name = ""
    lines: list[tuple[str, str]] = []
    templates: tuple[str, ...] | None = None
    is_template: bool | None = None
    next_category = "Category-000000"
    line_prefix = category_suffix = ""
    index = _INDEX
    seen: dict[str, str] = {}
    same = seen.setdefault
    keep = False  # build the current category (else only check it)
    count = 0  # its lines so far
    for key, value in headers:
        if key[:5] == "Line-":
            if count >= len(index):
                index.extend(f"{i:06d}" for i in range(len(index), 2 * count))
            if key != line_prefix + index[count] or value[-1:] in _CRLF:
                return None
            if keep:
                var, sep, val = value.partition("=")
                if not sep:
                    return None
                # One string object per distinct key and value: 10k accounts repeat
                # `type=aor` ~10,000 times, and the copies were a third of the peak memory.
                lines.append((same(var, var), same(val, val)))
            elif "=" not in value:
                return None
            count += 1
        elif key == next_category:
            if keep:
                categories.append(_category(name, tuple(lines), templates or (), bool(is_template)))
            if value[-1:] in _CRLF:
                return None
            position += 1
            name, lines, templates, is_template, count = value, [], None, None, 0
            keep = names is None or value in names
            category_suffix = f"-{position:06d}"
            line_prefix = f"Line{category_suffix}-"
            next_category = f"Category-{position + 1:06d}"
        elif count or position < 0:
            if (key == "Response" and value == "Success") or key == "ActionID":
                continue
            return None
        elif key == "IsTemplate" + category_suffix and is_template is None:
            is_template = value.strip() == "1"
        elif key == "Templates" + category_suffix and templates is None:
            templates = tuple(t.strip() for t in value.split(",") if t.strip())
        elif not ((key == "Response" and value == "Success") or key == "ActionID"):
            return None
    if position < 0:
        return None  # no categories: rare, and _parse_any_order says what that means
    if keep:
        categories.append(_category(name, tuple(lines), templates or (), bool(is_template)))
    return ConfigFile(tuple(categories))


def _parse_any_order(headers: Sequence[tuple[str, str]], body: str) -> ConfigFile:
    names: dict[int, str] = {}
    templates: dict[int, tuple[str, ...]] = {}
    is_template: dict[int, bool] = {}
    lines: dict[int, dict[int, tuple[str, str]]] = {}
    response: str | None = None
    message = ""

    for raw_key, raw_value in headers:
        key = raw_key.strip()
        value = raw_value.rstrip("\r\n")
        if key.lower() == "response":
            response = value.strip()
            continue
        if key.lower() == "message":
            message = value.strip()
            continue
        if m := _CATEGORY.fullmatch(key):
            _put(names, int(m.group(1)), value, key)
        elif m := _TEMPLATES.fullmatch(key):
            names_list = tuple(t.strip() for t in value.split(",") if t.strip())
            _put(templates, int(m.group(1)), names_list, key)
        elif m := _IS_TEMPLATE.fullmatch(key):
            _put(is_template, int(m.group(1)), value.strip() == "1", key)
        elif m := _LINE.fullmatch(key):
            var, sep, val = value.partition("=")
            if not sep:
                raise ConfigParseError(f"{key}: {value!r} has no '=' (not a key=value line)")
            _put(lines.setdefault(int(m.group(1)), {}), int(m.group(2)), (var, val), key)
        # Other headers (ActionID, Output, ...) carry no configuration.

    if response is not None and response.lower() != "success":
        raise ConfigParseError(f"GetConfig failed: {message or response}")

    no_categories = any(line.strip() == _NO_CATEGORIES for line in body.splitlines())
    if not names:
        orphans = sorted(set(lines) | set(templates) | set(is_template))
        if orphans:
            raise ConfigParseError(
                f"reply has lines for category {orphans[0]} but no Category- header: truncated?"
            )
        return ConfigFile(())
    if no_categories:
        raise ConfigParseError(f"reply says {_NO_CATEGORIES!r} but lists {len(names)} categories")

    _check_contiguous(names.keys(), "Category")
    for where in (lines, templates, is_template):
        stray = sorted(set(where) - set(names))
        if stray:
            raise ConfigParseError(
                f"reply refers to category {stray[0]} beyond the {len(names)} announced: "
                "truncated or mangled reply"
            )
    categories = []
    for index in sorted(names):
        own = lines.get(index, {})
        _check_contiguous(own.keys(), f"Line-{index:06d}")
        categories.append(
            Category(
                name=names[index],
                lines=tuple(own[i] for i in sorted(own)),
                templates=templates.get(index, ()),
                is_template=is_template.get(index, False),
            )
        )
    return ConfigFile(tuple(categories))


def _put(target: dict[int, V], index: int, value: V, header: str) -> None:
    if index in target:
        raise ConfigParseError(f"header {header} appears twice: mangled reply")
    target[index] = value


def _check_contiguous(indices: Iterable[int], what: str) -> None:
    for expected, index in enumerate(sorted(indices)):
        if index != expected:
            raise ConfigParseError(
                f"{what}-{expected:06d} is missing (next is {index:06d}): truncated reply"
            )


def split_reply(text: str) -> tuple[list[tuple[str, str]], str]:
    """Split a recorded AMI reply (`Key: Value` lines) into headers and body lines.

    For transcripts and tests; the live transport hands parse_getconfig its own header list.
    """
    headers: list[tuple[str, str]] = []
    body: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        key, sep, value = line.partition(": ")
        if sep and key and " " not in key:
            headers.append((key, value))
        elif line:
            body.append(line)
    return headers, "\n".join(body)


# -- .conf text ---------------------------------------------------------------------------------

# Asterisk reads a line into an 8192-byte buffer and skips any line (newline included) that
# reaches 8191 bytes: the longest line it keeps has 8189 bytes before its newline.
MAX_LINE_BYTES = 8189
_MAX_NESTED_COMMENTS = 128
# ast_strip()/ast_skip_blanks() treat every byte below 33 as blank (not Unicode whitespace).
BLANKS = "".join(chr(i) for i in range(33))


def parse_conf_text(text: str) -> ConfigFile:
    r"""Parse .conf text the way Asterisk's config.c does, minus #include/#exec (skipped).

    `;` comments, `\;` literal semicolon, `;-- --;` (nested) block comments, `=>` read as `=`,
    `key+=more` appends to the last `key`, `[n](!)` template, `[n](a,b)` inherit (the
    template's lines are copied first, as GetConfig shows them), `[n](+)` adds to the first
    `[n]`. Used to read the branch's current file, so it follows Asterisk rather than judging;
    what Asterisk rejects outright (no `]`, a line outside any category) raises ConfigParseError.
    """
    cats: list[_MutableCategory] = []
    current: _MutableCategory | None = None
    comment = 0
    lines = text.split("\n")
    # No NUL and no line long enough to be skipped (4 bytes a character at most): then a line
    # without ';' outside a block comment comes through the steps below unchanged.
    plain = "\0" not in text and max(map(len, lines)) * 4 <= MAX_LINE_BYTES
    seen: dict[str, str] = {}
    same = seen.setdefault  # one string object per distinct key and value, as in GetConfig's
    for lineno, raw in enumerate(lines, start=1):
        if plain and not comment and ";" not in raw:
            content = raw.strip(BLANKS)
        else:
            if len(raw.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
                continue  # Asterisk: "Line too long, skipping"
            kept, comment = _strip_comments(raw.split("\0", 1)[0], comment)
            content = kept.strip(BLANKS) if kept is not None else ""
        if not content:
            continue
        first = content[0]
        if first == "[":
            current = _category_line(content, cats, lineno)
        elif first == "#":
            continue  # a directive: #include/#exec are not followed here
        elif current is None:
            raise ConfigParseError(f"line {lineno}: {content!r} is outside any [category]")
        elif first == "\\":
            _variable_line(content, current, lineno)
        else:
            # _variable_line's common case inline (10k accounts: ~100,000 lines).
            key, sep, after = content.partition("=")
            if not sep:
                continue  # Asterisk: "No '=' (equal sign)", line ignored
            if key[-1:] == "+":
                _variable_line(content, current, lineno)
                continue
            key = key.strip(BLANKS)
            if key:
                value = (after[1:] if after[:1] == ">" else after).strip(BLANKS)
                current.lines.append((same(key, key), same(value, value)))  # see below
    return ConfigFile(tuple(c.freeze() for c in cats))


@dataclass
class _MutableCategory:
    name: str
    lines: list[tuple[str, str]] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    is_template: bool = False

    def freeze(self) -> Category:
        return _category(self.name, tuple(self.lines), tuple(self.templates), self.is_template)


def _strip_comments(buf: str, comment: int) -> tuple[str | None, int]:
    """One line through config.c's comment loop → (text to parse or None, nesting after it).

    Mirrors the C string handling: `\0` marks where a block comment cut the kept text. It
    keeps Asterisk's quirk that a stray `--;` outside a block comment makes the nesting
    negative, which hides every following line.
    """
    new = 0  # config.c's new_buf: where the next search for ';' starts
    keep: int | None = None if comment else 0  # config.c's process_buf
    while (p := buf.find(";", new)) != -1:
        if p > new and buf[p - 1] == "\\":
            buf = buf[: p - 1] + buf[p:]  # escaped: drop the backslash, keep the ';'
            new = p
        elif buf[p + 1 : p + 3] == "--" and buf[p + 3 : p + 4] != "-":
            if comment < _MAX_NESTED_COMMENTS:
                buf = buf[:p] + "\0" + buf[p + 1 :]
                comment += 1
                new = p + 3
            else:
                new = p + 1  # Asterisk logs "Maximum nest limit" and goes on
        elif p >= new + 2 and buf[p - 2 : p] == "--":
            comment -= 1
            new = p + 1
            if not comment:
                if keep is not None:
                    end = _c_end(buf, keep)
                    buf = buf[:end] + buf[new:]
                    new = end
                else:
                    keep = new
        elif not comment:
            buf = buf[:p]  # a plain comment ends the line
            break
        else:
            new = p + 1
    if keep is None:
        return None, comment
    return buf[keep : _c_end(buf, keep)], comment


def _c_end(buf: str, start: int) -> int:
    """Where a C string starting at `start` ends (its first NUL)."""
    nul = buf.find("\0", start)
    return len(buf) if nul == -1 else nul


def _category_line(content: str, cats: list[_MutableCategory], lineno: int) -> _MutableCategory:
    close = content.find("]")
    if close == -1:
        raise ConfigParseError(f"line {lineno}: no closing ']' in {content!r}")
    name = content[1:close]
    new = _MutableCategory(name)
    target = new
    rest = content[close + 1 :]
    if rest.startswith("("):
        end = rest.find(")")
        if end == -1:
            raise ConfigParseError(f"line {lineno}: no closing ')' in {content!r}")
        for option in rest[1:end].split(","):
            if option == "!":
                target.is_template = True
            elif option == "+":
                found = _first_named(cats, name)
                if found is None:
                    raise ConfigParseError(
                        f"line {lineno}: [{name}](+) adds to a category that does not exist"
                    )
                found.lines.extend(new.lines)
                target = found
            else:
                base = _first_named(cats, option)
                if base is None:
                    raise ConfigParseError(
                        f"line {lineno}: [{name}] inherits from {option!r}, which does not exist"
                    )
                target.templates.append(base.name)
                target.lines.extend(base.lines)
    if target is new:
        cats.append(new)
    return target


def _first_named(cats: list[_MutableCategory], name: str) -> _MutableCategory | None:
    # config.c's category_get(): the first match, case-insensitive, templates included.
    wanted = name.lower()
    return next((c for c in cats if c.name.lower() == wanted), None)


def _variable_line(content: str, cat: _MutableCategory, lineno: int) -> None:
    start = 0
    if content[0] == "\\":  # the first character is escaped (e.g. `\[x=1` has key `[x`)
        content = content[1:]
        if not content or ord(content[0]) < 33:
            raise ConfigParseError(f"line {lineno}: invalid escape")
        start = 1
    eq = content.find("=", start)
    if eq == -1:
        return  # Asterisk: "No '=' (equal sign)", line ignored
    if eq > start and content[eq - 1] == "+":
        key = content[: eq - 1].strip(BLANKS)
        extra = content[eq + 1 :]
        for i in range(len(cat.lines) - 1, -1, -1):
            if cat.lines[i][0] == key:
                cat.lines[i] = (key, (cat.lines[i][1] + extra).rstrip(BLANKS).lstrip(BLANKS))
                return
        value = extra.strip(BLANKS)
    else:
        key = content[:eq].strip(BLANKS)
        after = content[eq + 1 :]
        value = (after[1:] if after.startswith(">") else after).strip(BLANKS)
    if key:
        cat.lines.append((key, value))
