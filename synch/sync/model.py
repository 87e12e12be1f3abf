"""Asterisk configuration as ordered data: the ConfigFile that a GetConfig reply
(synch.sync.getconfig) or a .conf text (synch.sync.conftext) becomes.

Order is kept everywhere (categories and their lines), duplicate keys are kept (`allow=` twice),
duplicate category names are kept (FreePBX has `[1001]` endpoint and `[1001]` aor), and values
are kept whole (`setvar=A=B` is key `setvar`, value `A=B`). Pure: no sockets, no files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property


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
