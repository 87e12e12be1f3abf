"""Account selection and the filter pushed to the central (synch.sync.filter)."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from synch.sync.filter import (
    Selector,
    _ere_value,
    central_filter,
    select_pjsip,
    select_sip,
)
from synch.sync.model import Category, ConfigFile
from tests.helpers.getconfig import load

SIP = load("sip_additional.ami")
ENDPOINTS, AORS, AUTHS = (load(f"pjsip_{n}.ami") for n in ("endpoint", "aor", "auth"))


# -- sip ----------------------------------------------------------------------------------------

# The original README's examples, against its sip_additional.conf sample.
@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("accountcode", "^HeadOffice$", ["1001", "1002", "1003"]),
        ("permit", r"^192\.168\.0\.[0-255]\/255\.255\.255\.0$", ["1001", "1002", "1003"]),
        ("dial", r"^SIP\/1[0-9][0-9][0-9]$", ["1001", "1002", "1003"]),
        ("context", r"^from\-internal\-headoffice$", ["1001", "1002", "1003"]),
        ("categoryname", "^1[0-9][0-9][0-9]$", ["1001", "1002", "1003"]),
        ("accountcode", "DevOps|Support", ["2001", "3001"]),
        ("accountcode", ".*", ["1001", "1002", "1003", "2001", "3001"]),
        ("categoryname", "Trunk", ["Dev_Trunk", "Prod_Trunk"]),
        ("accountcode", "^headoffice$", []),
    ],
)
def test_readme_filters(key: str, value: str, expected: list[str]) -> None:
    assert select_sip(SIP, Selector(key, value)).names() == expected


def test_selected_sections_are_unchanged_and_in_central_order() -> None:
    chosen = select_sip(SIP, Selector("accountcode", "HeadOffice|DevOps"))
    assert chosen.categories == tuple(c for c in SIP if c.name in {"1001", "1002", "1003", "2001"})


def test_filter_is_unanchored_search() -> None:
    assert select_sip(SIP, Selector("accountcode", "Office")).names() == ["1001", "1002", "1003"]


def test_key_is_case_insensitive_and_any_line_may_match() -> None:
    config = ConfigFile((
        Category("a", (("Allow", "ulaw"), ("allow", "alaw"))),
        Category("b", (("allow", "ulaw"),)),
    ))
    assert select_sip(config, Selector("ALLOW", "^alaw$")).names() == ["a"]
    assert select_sip(config, Selector("CategoryName", "^b$")).names() == ["b"]


def test_templates_are_never_selected() -> None:
    config = load("templates.ami")
    assert select_sip(config, Selector("type", "friend")).names() == ["1001"]


def test_invalid_regex_is_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match=r"filtervalue '\[0-' is not a valid regex"):
        Selector("accountcode", "[0-")
    with pytest.raises(ValueError, match="filterkey is empty"):
        Selector(" ", "x")


def test_selectors_compare_by_key_and_value() -> None:
    sel = Selector("accountcode", "^HeadOffice$")
    assert sel == Selector("accountcode", "^HeadOffice$")
    assert sel != Selector("accountcode", "^DevOps$")


# -- pjsip --------------------------------------------------------------------------------------


def described(config: ConfigFile) -> list[str]:
    return [f"{c.type}:{c.name}" for c in config]


def test_pjsip_selects_endpoints_with_their_aors_and_auths_account_by_account() -> None:
    config, warnings = select_pjsip(ENDPOINTS, AORS, AUTHS, Selector("accountcode", "^HeadOffice$"))
    assert described(config) == [
        "endpoint:1001", "aor:1001", "auth:1001-auth",
        "endpoint:1002", "aor:1002", "auth:1002-auth",
    ]
    assert warnings == []
    assert config.categories[2] == AUTHS.find("1001-auth")


def test_pjsip_other_site_and_no_trunk() -> None:
    config, _ = select_pjsip(ENDPOINTS, AORS, AUTHS, Selector("accountcode", "DevOps"))
    assert described(config) == [
        "endpoint:2001", "aor:2001", "auth:2001-auth",
        "endpoint:2002", "aor:2002", "auth:2002-auth",
    ]
    everyone, _ = select_pjsip(ENDPOINTS, AORS, AUTHS, Selector("accountcode", ".*"))
    assert "endpoint:Prod_Trunk" not in described(everyone)


def test_pjsip_trunk_only_when_the_filter_takes_it_with_outbound_auth() -> None:
    config, warnings = select_pjsip(
        ENDPOINTS, AORS, AUTHS, Selector("categoryname", "^Prod_Trunk$")
    )
    assert described(config) == ["endpoint:Prod_Trunk", "aor:Prod_Trunk", "auth:Prod_Trunk"]
    assert warnings == []


def test_pjsip_missing_references_warn_and_keep_the_endpoint() -> None:
    endpoints = ConfigFile((
        Category("1001", (("type", "endpoint"), ("aors", "1001, 1001-b"), ("auth", "nope"))),
        Category("1002", (("type", "endpoint"), ("accountcode", "x"))),
    ))
    aors = ConfigFile((Category("1001", (("type", "aor"),)),
                       Category("1001-b", (("type", "endpoint"),))))
    config, warnings = select_pjsip(endpoints, aors, ConfigFile(()), Selector("type", "endpoint"))
    assert described(config) == ["endpoint:1001", "aor:1001", "endpoint:1002"]
    assert warnings == [
        "endpoint 1001: aor '1001-b' not found on the central",
        "endpoint 1001: auth 'nope' not found on the central",
        "endpoint 1002 has no aors=: phones cannot register",
    ]


def test_pjsip_shared_sections_written_once_and_non_endpoints_skipped() -> None:
    endpoints = ConfigFile((
        Category("global", (("type", "global"), ("accountcode", "A"))),
        Category("a", (("type", "endpoint"), ("aors", "shared"), ("accountcode", "A"))),
        Category("b", (("type", "endpoint"), ("aors", "shared"), ("accountcode", "A"))),
    ))
    aors = ConfigFile((Category("shared", (("type", "aor"),)),))
    config, warnings = select_pjsip(endpoints, aors, ConfigFile(()), Selector("accountcode", "A"))
    assert described(config) == ["endpoint:a", "aor:shared", "endpoint:b"]
    assert warnings == []


# -- the filter pushed to the central -----------------------------------------------------------

HEADOFFICE_KEY = "^[aA][cC][cC][oO][uU][nN][tT][cC][oO][dD][eE]$"


@pytest.mark.parametrize(
    ("value", "pushed"),
    [
        ("^HeadOffice$", "^HeadOffice$"),
        ("HeadOffice|DevOps", "HeadOffice|DevOps"),
        (".*", ".*"),
        (r"^192\.168\.0\.[0-255]\/255\.255\.255\.0$", r"^192\.168\.0\.[0-255]/255\.255\.255\.0$"),
        (r"^from\-internal\-headoffice$", "^from-internal-headoffice$"),
        ("^(Head|Back)Office[0-9]?$", "^(Head|Back)Office[0-9]?$"),
        ("^1[0-9]{3}$", "^1[0-9]{3}$"),
        ("^[^x]+$", "^[^x]+$"),
        (r"a\+b\\c", r"a\+b\\c"),
    ],
)
def test_central_filter_translates_the_safe_subset(value: str, pushed: str) -> None:
    assert central_filter(Selector("accountcode", value)) == f"{HEADOFFICE_KEY}={pushed}"


@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")
@pytest.mark.parametrize(
    "value",
    [
        "", r"^\d+$", r"\s", r"\w", r"\bx", r"(?:a|b)", "(?=a)", "(?!a)", "(?i)x", "a*?", "a+?",
        "a??", "a{1,3}", "a{2,}", "a,b", "a&b", "a=b", "'a'", '"a"', " a", "a b", ".", "^.$",
        "a.?b", ".{3}", "[^x]", "[^x]?", "é", "(a|)", "(|a)", "()", "a||b", "|a", "a|", "[]a]",
        "[a-]]", r"[\d]", "[[:digit:]]", "[a-c-e]", "x}", "a]", r"(a)\1", r"\n", r"\]", r"\}",
        "a;b", "a\tb", "(.)+",
    ],
)
def test_central_filter_refuses_anything_doubtful(value: str) -> None:
    assert central_filter(Selector("accountcode", value)) is None


@pytest.mark.parametrize(
    "value", ["(a", "a)", "[a", "[z-a]", "[a-Z]", "*a", "^*", "a**", r"\1", "\\", "a{3}{2}"]
)
def test_translation_refuses_what_python_itself_rejects(value: str) -> None:
    assert _ere_value(value) is None


def test_central_filter_cannot_push_categoryname_or_odd_keys() -> None:
    assert central_filter(Selector("categoryname", "^1001$")) is None
    assert central_filter(Selector("set-var", "x")) is None
    assert central_filter(Selector("max_contacts", "1")) == (
        "^[mM][aA][xX]_[cC][oO][nN][tT][aA][cC][tT][sS]$=1"
    )


# The pushed filter must never keep fewer categories than the Python filter: check it with the
# same POSIX regex engine Asterisk calls (glibc regcomp/regexec, REG_EXTENDED | REG_NOSUB).

_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
_LIBC.newlocale.restype = ctypes.c_void_p
_LIBC.newlocale.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
_LIBC.uselocale.restype = ctypes.c_void_p
_LIBC.uselocale.argtypes = [ctypes.c_void_p]
_LC_ALL_MASK = 8127  # glibc
_C_LOCALE = _LIBC.newlocale(_LC_ALL_MASK, b"C", None)
_REG_EXTENDED, _REG_NOSUB = 1, 8


def ere_search(pattern: str, text: str, byte_locale: bool = False) -> bool:
    """regexec() in this thread's UTF-8 locale, or in the C locale (one byte = one character),
    as Asterisk may run in either."""
    previous = _LIBC.uselocale(_C_LOCALE) if byte_locale else None
    regex = ctypes.create_string_buffer(1024)  # larger than any libc's regex_t
    try:
        if _LIBC.regcomp(regex, pattern.encode(), _REG_EXTENDED | _REG_NOSUB) != 0:
            raise AssertionError(f"libc cannot compile {pattern!r}")
        try:
            return bool(_LIBC.regexec(regex, text.encode(), 0, None, 0) == 0)
        finally:
            _LIBC.regfree(regex)
    finally:
        if previous is not None:
            _LIBC.uselocale(previous)


def asterisk_filter_matches(filter_value: str, category: Category, byte_locale: bool) -> bool:
    """Asterisk's does_category_match() for our single `name=value` expression."""
    assert not set(",&'\"") & set(filter_value)
    name_re, value_re = filter_value.split("=", 1)
    assert "=" not in value_re
    return any(
        ere_search(name_re, k, byte_locale) and ere_search(value_re, v, byte_locale)
        for k, v in category.lines
    )


def test_libc_regex_sanity() -> None:
    assert ere_search("^a+$", "aaa") and not ere_search("^a+$", "ab")
    assert ere_search("^.$", "é") and not ere_search("^.$", "é", byte_locale=True)


PATTERN_ALPHABET = st.sampled_from(
    ["a", "b", "1", "-", "/", "_", ".", "*", "+", "?", "|", "(", ")", "^", "$", "[ab]", "[^a]",
     "[0-9]", "{2}", "\\.", "\\-", "\\/", "\\(", "\\d", "é", "(?:", "x"]
)
VALUES = st.text(alphabet=st.sampled_from("ab1-/_.()x é\u00e9\u4e2d"), max_size=8)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(PATTERN_ALPHABET, min_size=1, max_size=8).map("".join),
    st.lists(VALUES, max_size=3),
)
@example("^a.*b$", ["a\u4e2db"])
@example("^a.b$", ["a\u00e9b"])
@example("^[^a]b$", ["\u4e2db"])
@example("^.?$", ["\u00e9"])
@example("^[^a]+$", ["\u00e9"])
@example("a(b|1)+$", ["ab1b"])
def test_pushed_filter_never_keeps_less_than_the_python_filter(
    pattern: str, values: list[str]
) -> None:
    try:
        selector = Selector("accountcode", pattern)
    except ValueError:
        assume(False)
        return
    pushed = central_filter(selector)
    assume(pushed is not None)
    assert pushed is not None
    category = Category("1001", (*(("accountcode", v) for v in values), ("type", "friend")))
    if selector.matches(category):
        for byte_locale in (False, True):
            assert asterisk_filter_matches(pushed, category, byte_locale), (pattern, pushed, values)
    # Keys: Asterisk's regexec on the name must accept exactly the case-insensitive key.
    name_re = pushed.split("=", 1)[0]
    assert ere_search(name_re, "AccountCode") and not ere_search(name_re, "xaccountcode")
