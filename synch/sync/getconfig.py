"""An AMI GetConfig reply → ConfigFile, checked whole: a cut or mangled reply raises
ConfigParseError rather than becoming a partial user list. Pure: no sockets, no files."""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Sequence
from typing import TypeVar

from synch.sync.model import Category, ConfigFile, ConfigParseError, _category

V = TypeVar("V")

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
