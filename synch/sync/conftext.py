"""A .conf text → ConfigFile, read the way Asterisk's config.c reads it. Pure: no files."""

from __future__ import annotations

from dataclasses import dataclass, field

from synch.sync.model import Category, ConfigFile, ConfigParseError, _category

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
