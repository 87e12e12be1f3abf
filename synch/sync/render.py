"""ConfigFile → Asterisk .conf text, deterministically, and the checks that make it safe.

The text is a pure function of the categories and the header: the same central gives the same
bytes, so "differs from the file on disk" means "something changed". Inherited templates arrive
flattened from GetConfig (their lines are already in each category), so a category is written
as plain `[name]` (`[name](!)` for a template) and `templates` is not written.

A compromised or careless central must not be able to run code or inject configuration on the
branch: check_safe() lists every name or value that Asterisk could read as something else
(a directive, a new section, a comment, an append, a truncated line), and the sync refuses the
whole config if there is any.
"""

from __future__ import annotations

import re
from operator import itemgetter

from synch.sync.conftext import BLANKS, MAX_LINE_BYTES
from synch.sync.model import Category, ConfigFile

# Section names: what FreePBX produces (1001, 1001-auth, trunk_name, +4930..., x.y@z).
_SECTION_NAME = re.compile(r"[A-Za-z0-9_.+@-]+")
# Keys: Asterisk option names. No '+' (`key+=` appends), no '#', '[', ';', '=', '\\', blanks.
_KEY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# config.c copies a category name into char[80].
MAX_NAME_LENGTH = 79
# C0 controls and DEL, except TAB: a newline would start a new line (a directive, a section);
# NUL cuts the line in C; the others have no business in a phone account.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def check_safe(config: ConfigFile) -> list[str]:
    """Every reason this config cannot be written as-is; empty when it is safe."""
    if _all_safe(config):
        return []
    problems: list[str] = []
    for cat in config:
        problems.extend(_category_problems(cat))
    return problems


# The same rules as _category_problems, applied to all names or values at once (joined by LF,
# which none of them may contain): a 10k-account config is checked in a few passes in C.
_NAME = rf"[A-Za-z0-9_.+@-]{{1,{MAX_NAME_LENGTH}}}"
_NAMES = re.compile(rf"{_NAME}(?:\n{_NAME})*")
_CONTROL_BUT_LF = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_BLANK_AT_EDGE = re.compile(r"[\x00-\x09\x0b-\x20]\n|\n[\x00-\x09\x0b-\x20]")
# Keys and values this short cannot make a line longer than Asterisk reads (4 bytes a character).
_SHORT_KEY = 80
_SHORT_VALUE = (MAX_LINE_BYTES - 1) // 4 - _SHORT_KEY - 2


def _all_safe(config: ConfigFile) -> bool:
    """True when _category_problems finds nothing in any category (False: look closer)."""
    names = "\n".join(cat.name for cat in config)
    if config.categories and not _NAMES.fullmatch(names):
        return False
    pairs = [pair for cat in config for pair in cat.lines]
    if not pairs:
        return True
    keys = set(map(itemgetter(0), pairs))  # a few dozen different ones
    if not all(len(key) <= _SHORT_KEY and _KEY_NAME.fullmatch(key) for key in keys):
        return False
    values = list(map(itemgetter(1), pairs))
    joined = "\n".join(values)
    if (
        joined.count("\n") != len(values) - 1
        or _CONTROL_BUT_LF.search(joined)
        or _BLANK_AT_EDGE.search(joined)  # inner values; the first and last here:
        or any(value != value.strip(BLANKS) for value in (values[0], values[-1]))
        or max(map(len, values)) > _SHORT_VALUE
    ):
        return False
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _category_problems(cat: Category) -> list[str]:
    problems: list[str] = []
    where = f"section {cat.name!r}"
    if not _SECTION_NAME.fullmatch(cat.name):
        problems.append(f"{where}: name is not a plain Asterisk identifier")
    elif len(cat.name) > MAX_NAME_LENGTH:
        problems.append(f"{where}: name longer than {MAX_NAME_LENGTH} characters")
    for key, value in cat.lines:
        if not _KEY_NAME.fullmatch(key):
            problems.append(f"{where}: key {key!r} is not a plain Asterisk identifier")
            continue
        problem = _value_problem(value)
        if problem:
            problems.append(f"{where}: {key}= {problem}")
        elif len(_line(key, value).encode("utf-8")) > MAX_LINE_BYTES:
            problems.append(f"{where}: {key}= line longer than Asterisk reads "
                            f"({MAX_LINE_BYTES} bytes)")
    return problems


def _value_problem(value: str) -> str | None:
    if m := _CONTROL.search(value):
        return f"value contains control character {m.group(0)!r}"
    if value != value.strip(BLANKS):
        return "value has leading or trailing blanks, which Asterisk would strip"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "value is not valid Unicode text"
    return None


def render(config: ConfigFile, header: str) -> str:
    """The file's text: header comment block, then each section, blank line between sections.

    `header` may have several lines; each becomes a `; ` comment line (a line whose first `;`
    is a plain comment is ignored whole by Asterisk, whatever follows). Keep anything that
    changes on every run (times) out of it, or every sync would differ.
    """
    out = [_comment(line) for line in header.splitlines() or [""]]
    body = _plain_body(config)
    if body is not None:
        return "\n".join(out) + ("\n" + body if body else "") + "\n"
    for cat in config:
        out.append("")
        out.append(f"[{cat.name}](!)" if cat.is_template else f"[{cat.name}]")
        out.extend(_line(key, value) for key, value in cat.lines)
    return "\n".join(out) + "\n"


def _plain_body(config: ConfigFile) -> str | None:
    """What render's loop writes after the header, built in C: every `key=value` line joined
    whole, then every ';' escaped at once. None (use the loop) when that would escape a ';'
    in a name or key too, or when some value may start with '>'."""
    parts: list[str] = []
    for cat in config:
        parts.append(f"\n[{cat.name}](!)" if cat.is_template else f"\n[{cat.name}]")
        parts += map("=".join, cat.lines)
    body = "\n".join(parts)
    if "=>" in body:
        return None
    if ";" in body:
        keys = {key for cat in config for key, _ in cat.lines}
        if any(";" in cat.name for cat in config) or any(";" in key for key in keys):
            return None
        body = body.replace(";", "\\;")
    return body


def _comment(line: str) -> str:
    text = _CONTROL.sub("?", line).rstrip(BLANKS)
    return f"; {text}" if text else ";"


def _line(key: str, value: str) -> str:
    escaped = value.replace(";", "\\;")
    # `key=>x` would be read as `key => x` (the object form): a blank after '=' keeps the '>'.
    return f"{key}= {escaped}" if escaped.startswith(">") else f"{key}={escaped}"


def make_header(source: str, files: list[str] | tuple[str, ...], filter_text: str) -> str:
    """The standard header: where the accounts come from and that edits will be overwritten."""
    return (
        f"generated by synch from {source}:{','.join(files)} — do not edit\n"
        f"filter: {filter_text}\n"
        "local changes are overwritten by the next sync; keep your own settings elsewhere"
    )
