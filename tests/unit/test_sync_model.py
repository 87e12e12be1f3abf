"""GetConfig replies and .conf texts → ConfigFile (synch.sync.getconfig, synch.sync.conftext)."""

from __future__ import annotations

import re

import pytest

from synch.sync.conftext import parse_conf_text
from synch.sync.getconfig import parse_getconfig, split_reply
from synch.sync.model import Category, ConfigFile, ConfigParseError
from tests.helpers.getconfig import load

# -- GetConfig ----------------------------------------------------------------------------------


def test_sip_additional_keeps_order_duplicates_and_whole_values() -> None:
    config = load("sip_additional.ami")
    assert config.names() == ["1001", "1002", "1003", "2001", "3001", "Dev_Trunk", "Prod_Trunk"]
    alice = config.categories[0]
    assert len(alice.lines) == 22
    assert alice.lines[0] == ("deny", "0.0.0.0/0.0.0.0")
    assert alice.values("allow") == ["ulaw", "alaw"]
    assert alice.get("setvar") == "REALCALLERIDNUM=1001"
    assert alice.get("callerid") == "Alice <1001>"
    assert alice.get("nat") == "force_rport,comedia"
    assert not alice.is_template and alice.templates == ()


def test_value_with_semicolon_and_equals_is_kept_whole() -> None:
    auth = load("pjsip_auth.ami").find("1001-auth")
    assert auth is not None
    assert auth.get("password") == "Alice;pass=1001"


def test_lines_follow_indices_not_header_order() -> None:
    config = load("shuffled.ami")
    assert config.names() == ["1001", "1002"]
    assert config.categories[0].lines == (
        ("type", "friend"), ("allow", "ulaw"), ("allow", "alaw"),
    )
    assert config.categories[1].lines == (("allow", "ulaw"), ("allow", "alaw"))


def test_templates_and_is_template_are_read() -> None:
    tpl, phone = load("templates.ami")
    assert tpl.is_template and tpl.name == "phones"
    assert phone.templates == ("phones", "office")
    assert not phone.is_template
    assert phone.get("host") == "dynamic"


@pytest.mark.parametrize("name", ["no_categories.ami", "empty.ami"])
def test_no_categories_is_an_empty_config(name: str) -> None:
    assert load(name) == ConfigFile(())


def test_error_reply_raises_with_asterisks_message() -> None:
    with pytest.raises(ConfigParseError, match="Config file not found"):
        load("not_found.ami")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("truncated_line_gap.ami", "Line-000000-000002 is missing"),
        ("truncated_category_gap.ami", "Category-000001 is missing"),
        ("truncated_orphan_line.ami", "category 1 beyond the 1 announced"),
    ],
)
def test_truncated_reply_is_detected(name: str, message: str) -> None:
    with pytest.raises(ConfigParseError, match=message):
        load(name)


def test_first_category_missing_is_detected() -> None:
    headers = [("Category-000001", "1002"), ("Line-000001-000000", "type=friend")]
    with pytest.raises(ConfigParseError, match="Category-000000 is missing"):
        parse_getconfig(headers)


def test_lines_without_any_category_are_detected() -> None:
    with pytest.raises(ConfigParseError, match="no Category- header"):
        parse_getconfig([("Response", "Success"), ("Line-000000-000000", "type=friend")])


def test_duplicate_header_is_rejected() -> None:
    headers = [("Category-000000", "1001"), ("Category-000000", "1002")]
    with pytest.raises(ConfigParseError, match="appears twice"):
        parse_getconfig(headers)


def test_line_without_equals_is_rejected() -> None:
    headers = [("Category-000000", "1001"), ("Line-000000-000000", "type")]
    with pytest.raises(ConfigParseError, match="has no '='"):
        parse_getconfig(headers)


def test_no_categories_found_with_categories_is_inconsistent() -> None:
    with pytest.raises(ConfigParseError, match="No categories found"):
        parse_getconfig([("Category-000000", "1001")], "No categories found")


def test_value_is_split_at_the_first_equals_only() -> None:
    config = parse_getconfig(
        [("Category-000000", "x"), ("Line-000000-000000", "setvar=A=B=C"),
         ("Line-000000-000001", "empty=")]
    )
    assert config.categories[0].lines == (("setvar", "A=B=C"), ("empty", ""))


def test_header_names_are_case_insensitive_and_other_headers_ignored() -> None:
    config = parse_getconfig(
        [("response", "Success"), ("ActionID", "42"), ("CATEGORY-000000", "a"),
         ("line-000000-000000", "k=v")]
    )
    assert config == ConfigFile((Category("a", (("k", "v"),)),))


def test_split_reply_accepts_lf_and_crlf() -> None:
    text = "Response: Success\r\nCategory-000000: 1001\r\nLine-000000-000000: a=b: c\r\n\r\n"
    headers, body = split_reply(text)
    assert headers == [("Response", "Success"), ("Category-000000", "1001"),
                       ("Line-000000-000000", "a=b: c")]
    assert body == ""
    assert split_reply(text.replace("\r\n", "\n")) == (headers, body)


def test_category_helpers() -> None:
    cat = Category("1001", (("Type", " Endpoint "), ("allow", "ulaw"), ("ALLOW", "alaw")))
    assert cat.type == "endpoint"
    assert cat.values("allow") == ["ulaw", "alaw"]
    assert cat.get("missing") is None
    config = ConfigFile((Category("1001", (("type", "aor"),)), cat))
    assert config.find("1001") is config.categories[0]
    assert config.find("1001", "endpoint") is cat
    assert config.find("1001", "auth") is None
    assert len(config) == 2 and list(config) == list(config.categories)


# -- .conf text ---------------------------------------------------------------------------------


def lines_of(text: str) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    return [(c.name, c.lines) for c in parse_conf_text(text)]


def test_conf_comments_escapes_and_object_form() -> None:
    text = (
        "; a header comment\n"
        "\n"
        "[1001] ; trailing comment after the name\n"
        "type = friend ; comment\n"
        "secret=a\\;b\n"
        "exten => 100\n"
        "setvar=A=B\n"
        "   allow=ulaw   \n"
        "allow=alaw\n"
    )
    assert lines_of(text) == [
        ("1001", (("type", "friend"), ("secret", "a;b"), ("exten", "100"), ("setvar", "A=B"),
                  ("allow", "ulaw"), ("allow", "alaw"))),
    ]


def test_conf_block_comments_nest_and_span_lines() -> None:
    text = (
        "[a]\n"
        "x=1 ;-- gone --; y\n"
        ";-- outer\n"
        "[hidden]\n"
        ";-- inner --;\n"
        "z=gone\n"
        "--; w=kept\n"
        "k=v;--open\n"
        "still=comment\n"
        "--;\n"
        ";--- a plain comment, not a block\n"
        "last=1\n"
    )
    assert lines_of(text) == [
        ("a", (("x", "1  y"), ("w", "kept"), ("k", "v"), ("last", "1"))),
    ]


def test_conf_stray_block_end_hides_the_rest_like_asterisk() -> None:
    # config.c lets the nesting go negative: every later line is treated as a comment.
    text = "[a]\nx=1--;\ny=2\n[b]\nz=3\n"
    assert lines_of(text) == [("a", (("x", "1--;"),))]


def test_conf_templates_inheritance_and_append() -> None:
    text = (
        "[phones](!)\n"
        "type=friend\n"
        "host=dynamic\n"
        "[codecs](!)\n"
        "allow=ulaw\n"
        "[1001](phones,codecs)\n"
        "secret=s\n"
        "[1001](+)\n"
        "context=from-internal\n"
        "secret+=2\n"
    )
    phones, codecs, phone = parse_conf_text(text)
    assert phones.is_template and codecs.is_template
    assert phone == Category(
        "1001",
        (("type", "friend"), ("host", "dynamic"), ("allow", "ulaw"), ("secret", "s2"),
         ("context", "from-internal")),
        templates=("phones", "codecs"),
    )


def test_conf_directives_are_skipped_and_escaped_first_character_kept() -> None:
    text = "#include pjsip.endpoint_custom.conf\n[a]\n#exec /bin/true\n\\[x=1\nnoequals\n"
    assert lines_of(text) == [("a", (("[x", "1"),))]


def test_conf_blanks_are_asterisks_blanks_not_unicode_whitespace() -> None:
    text = "[a]\nk=\u00a0v\u2003\t\r\n"
    assert lines_of(text) == [("a", (("k", "\u00a0v\u2003"),))]


def test_conf_overlong_line_is_skipped_like_asterisk() -> None:
    text = "[a]\nlong=" + "x" * 9000 + "\nshort=1\n"
    assert lines_of(text) == [("a", (("short", "1"),))]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("k=v\n", "outside any"),
        ("[a\nk=v\n", "no closing ']'"),
        ("[a](!\n", "no closing ')'"),
        ("[a](nothere)\n", "inherits from 'nothere'"),
        ("[a](+)\n", "does not exist"),
    ],
)
def test_conf_errors_asterisk_would_reject(text: str, message: str) -> None:
    with pytest.raises(ConfigParseError, match=re.escape(message)):
        parse_conf_text(text)
