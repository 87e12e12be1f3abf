"""appsettings.json parsing and validation."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synch.config import (
    DEFAULT_CONFIG_PATH,
    AmiSettings,
    ConfigError,
    DnsSettings,
    Endpoint,
    ProbeMonitorSettings,
    Settings,
    SyncManagerSettings,
    config_path,
    describe_problems,
    file_mode_warning,
    load_settings,
    parse_endpoint,
    parse_settings,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
APPLIANCE_SAMPLE = Path(__file__).resolve().parents[2] / "appliance" / "appsettings.json"


def minimal_sections() -> dict[str, dict[str, Any]]:
    """The keys that have no default; everything else is left to its default."""
    return {
        "amiremote": {"hostname": "127.0.0.2", "password": "central-secret"},
        "amilocal": {"password": "local-secret"},
        "dnsservice": {
            "targetnormal": "127.0.0.2",
            "targetfailover": "127.0.0.3",
            "forwarder": "127.0.0.53:5353",
        },
        "servicecontrol": {"token": "token1"},
    }


def config_text(**changes: dict[str, Any]) -> str:
    """The minimal config with some keys changed; a value of ... removes the key."""
    sections = minimal_sections()
    for section, keys in changes.items():
        target = sections.setdefault(section, {})
        for key, value in keys.items():
            if value is ...:
                target.pop(key, None)
            else:
                target[key] = value
    return json.dumps(sections, indent=2)


def parse(**changes: dict[str, Any]) -> Settings:
    return parse_settings(config_text(**changes))


def problems_of(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(text)
    assert info.value.problems, "a ConfigError must list its problems"
    return dict(info.value.problems)


def problem(**changes: dict[str, Any]) -> dict[str, str]:
    return problems_of(config_text(**changes))


# ---------------------------------------------------------------- the original README sample


def test_original_readme_sample_loads_with_its_values() -> None:
    s = load_settings(str(FIXTURES / "original-readme-appsettings.json"))
    assert s.loglevel.default == "information"
    assert s.probemonitor == ProbeMonitorSettings(5, 5, 1, 5.0)
    assert s.amiremote == AmiSettings("10.0.0.254", 5038, "synch", "SomePasswordHere")
    assert s.amilocal == AmiSettings("127.0.0.1", 5038, "synch", "SomePasswordHere")
    assert s.syncmanager == SyncManagerSettings(
        remotefilename="sip_additional.conf",
        interval=300.0,
        filterkey="accountcode",
        filtervalue="^HeadOffice$",
        localconfigspath="/etc/asterisk/",
        mode="sip",
        localfilename="sip_synch.conf",
    )
    ds = s.dnsservice
    assert (ds.listenaddress, ds.port, ds.domain, ds.record) == (
        "192.168.0.254", 53, "example.local", "sip")
    assert ds.fqdn == "sip.example.local"
    assert (ds.targetnormal, ds.targetfailover) == ("10.0.0.254", "192.168.0.254")
    # Parsed only: no unit test sends anything to this address.
    assert ds.forwarders == (Endpoint("1.1.1.1", 53),)
    assert (ds.recordttl, ds.refreshinterval, ds.retryinterval) == (300, 300, 300)
    assert (ds.expireinterval, ds.minttl, ds.ttl) == (300, 300, 300)
    assert ds.defaultstate == "Failover"
    sc = s.servicecontrol
    assert (sc.token, sc.listenaddress, sc.port, sc.admintoken) == (
        "token1", "127.0.0.1", 65038, None)
    assert s.source.endswith("original-readme-appsettings.json")
    assert s.warnings == ()


def test_readme_filter_example_with_invalid_escapes_loads_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="synch.config"):
        s = load_settings(str(FIXTURES / "readme-escapes-appsettings.json"))
    # \. is kept as backslash-dot (what the regex author meant); \/ is valid JSON for "/".
    assert s.syncmanager.filtervalue == r"^192\.168\.0\.[0-255]/255\.255\.255\.0$"
    assert s.syncmanager.filterkey == "permit"
    assert len(s.warnings) == 1
    assert s.warnings[0].startswith("syncmanager.filtervalue: invalid JSON escape \\.")
    assert "line 26" in s.warnings[0]
    assert any("syncmanager.filtervalue" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        (r"^from\-internal\-headoffice$", r"^from\-internal\-headoffice$"),
        (r"^SIP\/1[0-9]{3}$", "^SIP/1[0-9]{3}$"),
        (r"\d+\s\w", r"\d+\s\w"),
        (r"a\\.b", r"a\.b"),  # valid JSON: an escaped backslash, no warning
    ],
)
def test_escape_leniency_keeps_what_the_regex_author_meant(written: str, meant: str) -> None:
    text = config_text().replace('"token1"', '"token1"}, "syncmanager": {"filtervalue": "'
                                 + written + '"')
    s = parse_settings(text)
    assert s.syncmanager.filtervalue == meant
    assert bool(s.warnings) == any(
        written[i] == "\\" and written[i + 1] not in '"\\/bfnrtu' and written[i - 1] != "\\"
        for i in range(len(written) - 1)
    )


def test_json_backspace_escape_in_a_filter_is_refused_with_a_hint() -> None:
    text = config_text().replace('"token1"', '"token1"}, "syncmanager": {"filtervalue": '
                                 r'"\bHeadOffice\b"')
    message = problems_of(text)["syncmanager.filtervalue"]
    assert "word boundary" in message


# ---------------------------------------------------------------- syntax: comments, commas


def test_comments_outside_strings_are_ignored_and_inside_strings_kept() -> None:
    text = """
    // leading comment
    { /* block
         over lines */
      "amiremote": { "hostname": "127.0.0.2", // "hostname": "ignored"
                     "password": "pa//ss/*not a comment*/" },
      "amilocal": { "password": "x" /* trailing */ },
      "syncmanager": { "filtervalue": "http://[a-z]+//" },
      "dnsservice": { "targetnormal": "127.0.0.2", "targetfailover": "127.0.0.3",
                      "forwarder": "127.0.0.1:5353" },
      "servicecontrol": { "token": "t//1" }
    } // final comment without newline"""
    s = parse_settings(text)
    assert s.amiremote.password == "pa//ss/*not a comment*/"
    assert s.syncmanager.filtervalue == "http://[a-z]+//"
    assert s.servicecontrol.token == "t//1"


def test_escaped_quote_does_not_end_a_string_early() -> None:
    s = parse(amiremote={"password": 'a"// b\\'})
    assert s.amiremote.password == 'a"// b\\'


def test_trailing_commas_are_accepted() -> None:
    text = config_text(dnsservice={"forwarders": ["127.0.0.1:5300"]})
    text = text.replace('"127.0.0.1:5300"', '"127.0.0.1:5300",').replace(
        '"token1"', '"token1",')
    s = parse_settings(text)
    assert Endpoint("127.0.0.1", 5300) in s.dnsservice.forwarders


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ('{\n  "a": {\n    "b": 1\n    "c": 2\n  }\n}', "4:5", "expected ','"),
        ('{\n  "a": 1 /* open', "2:10", "unterminated /* comment"),
        ('{"a": "no end\n}', "1:7", "unterminated string"),
        ("{'a': 1}", "1:2", "double quotes"),
        ('{"a": True}', "1:7", "true, false and null"),
        ('{"a": 01}', "1:7", "invalid number"),
        ("", "1:1", "empty"),
        ("[1, 2]", "1:1", "one JSON object"),
        ('{"a": 1} x', "1:10", "after the closing"),
        ('{"a": "\\u12"}', "1:8", "four hex digits"),
        ('{"a": "\\ud800"}', "1:8", "surrogate"),
        ('{"a": "tab\there"}', "1:11", "control character"),
        ('{"a": 1 / 2}', "1:9", "comments are"),
        ('{\n  "a": {', "2:9", "end of file"),
    ],
)
def test_syntax_errors_name_line_and_column(text: str, where: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "site.json")
    [(key, message)] = info.value.problems
    assert key == f"site.json:{where}"
    assert words in message


def test_deep_nesting_is_a_config_error_not_a_crash() -> None:
    with pytest.raises(ConfigError, match="nested"):
        parse_settings('{"a": ' + "[" * 5000 + "]" * 5000 + "}")


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "appsettings.json"
    path.write_bytes(b"\xef\xbb\xbf" + config_text().encode())
    assert load_settings(str(path)).servicecontrol.token == "token1"


# ---------------------------------------------------------------- names are case-insensitive


def test_section_and_key_names_are_case_insensitive() -> None:
    text = config_text(probemonitor={"failureTolerance": 3, "ALIVETHRESHOLD": 2})
    text = text.replace('"amiremote"', '"AmiRemote"').replace('"hostname"', '"HostName"')
    s = parse_settings(text)
    assert s.probemonitor.failuretolerance == 3
    assert s.probemonitor.alivethreshold == 2
    assert s.amiremote.hostname == "127.0.0.2"


def test_same_key_twice_in_different_case_is_an_error() -> None:
    text = config_text(probemonitor={"interval": 5}).replace(
        '"interval": 5', '"interval": 5, "Interval": 6')
    assert "duplicate key" in problems_of(text)["probemonitor.interval"]


def test_same_section_twice_is_an_error() -> None:
    text = config_text()[:-1] + ', "SERVICECONTROL": {"token": "x"}}'
    assert "duplicate section" in problems_of(text)["servicecontrol"]


# ---------------------------------------------------------------- defaults


def test_defaults_of_a_minimal_file() -> None:
    s = parse()
    assert s.loglevel.default == "information"
    assert s.probemonitor == ProbeMonitorSettings()
    assert s.amilocal.hostname == "127.0.0.1"
    assert (s.amiremote.port, s.amiremote.username, s.amiremote.timeout) == (5038, "synch", 4.0)
    assert (s.amiremote.tls, s.amiremote.cafile) == (False, None)
    assert s.syncmanager == SyncManagerSettings()
    d = DnsSettings()
    ds = s.dnsservice
    assert (ds.listenaddress, ds.port, ds.domain, ds.record) == (
        d.listenaddress, d.port, d.domain, d.record)
    assert (ds.forwardtimeout, ds.defaultstate, ds.recordttl) == (2.0, "Failover", 300)
    assert (s.servicecontrol.listenaddress, s.servicecontrol.port) == ("127.0.0.1", 65038)
    assert s.servicecontrol.admintoken is None
    assert (s.metrics.listenaddress, s.metrics.port) == ("0.0.0.0", 9386)
    assert s.probe_timeout == 4.0


def test_sync_jitter() -> None:
    assert parse().syncmanager.jitter == 300.0
    assert parse(syncmanager={"jitter": 0}).syncmanager.jitter == 0.0
    assert parse(syncmanager={"Jitter": "2.5"}).syncmanager.jitter == 2.5


def test_null_means_not_set() -> None:
    s = parse(probemonitor={"interval": None}, servicecontrol={"admintoken": None})
    assert s.probemonitor.interval == 5.0
    assert s.servicecontrol.admintoken is None


def test_localfilename_default_follows_mode() -> None:
    assert parse(syncmanager={"mode": "PJSIP"}).syncmanager.localfilename == "pjsip_synch.conf"
    assert parse(syncmanager={"mode": "pjsip"}).syncmanager.mode == "pjsip"
    assert parse(syncmanager={"mode": "sip"}).syncmanager.localfilename == "sip_synch.conf"
    s = parse(syncmanager={"mode": "pjsip", "localfilename": "branch.conf"})
    assert s.syncmanager.localfilename == "branch.conf"


def test_tls_changes_the_default_ami_port_only() -> None:
    assert parse(amiremote={"tls": True}).amiremote.port == 5039
    assert parse(amiremote={"tls": True, "port": 5038}).amiremote.port == 5038


def test_probe_timeout_is_capped_at_the_interval_with_a_warning() -> None:
    s = parse(amiremote={"timeout": 10}, probemonitor={"interval": 3})
    assert s.amiremote.timeout == 10.0
    assert s.probe_timeout == 3.0
    assert any(w.startswith("amiremote.timeout") for w in s.warnings)


def test_normalisation_of_choices_and_names() -> None:
    s = parse(
        loglevel={"default": "Debug"},
        dnsservice={"defaultstate": "nORMAL", "domain": "Branch.Example.", "record": "SIP"},
        syncmanager={"localconfigspath": "/srv/asterisk"},
    )
    assert s.loglevel.default == "debug"
    assert s.dnsservice.defaultstate == "Normal"
    assert s.dnsservice.fqdn == "sip.branch.example"
    assert s.syncmanager.localconfigspath == "/srv/asterisk/"


def test_workdirectory_of_the_original_is_accepted_and_ignored() -> None:
    s = parse(syncmanager={"workdirectory": "synch"})
    assert any(w.startswith("syncmanager.workdirectory: ignored") for w in s.warnings)


# ---------------------------------------------------------------- loose types the original took


def test_numbers_and_booleans_written_as_strings_are_accepted() -> None:
    s = parse(amiremote={"port": "5039", "tls": "True", "timeout": "2.5"},
              probemonitor={"failuretolerance": " 7 "})
    assert (s.amiremote.port, s.amiremote.tls, s.amiremote.timeout) == (5039, True, 2.5)
    assert s.probemonitor.failuretolerance == 7


def test_integer_secrets_are_taken_as_their_digits() -> None:
    s = parse(amiremote={"password": 1234}, servicecontrol={"token": 987654})
    assert s.amiremote.password == "1234"
    assert s.servicecontrol.token == "987654"


def test_whole_float_for_a_count_is_accepted() -> None:
    assert parse(probemonitor={"alivethreshold": 3.0}).probemonitor.alivethreshold == 3


# ---------------------------------------------------------------- every validation rule

BAD_VALUES = [
    ("loglevel", "default", "verbose", "trace, debug"),
    ("loglevel", "default", 3, "trace, debug"),
    ("loglevel", "default", [], "double quotes"),
    ("probemonitor", "failuretolerance", 0, "from 1"),
    ("probemonitor", "alivethreshold", 1.5, "whole number"),
    ("probemonitor", "alivethreshold", "five", "whole number"),
    ("probemonitor", "errorpenaltypoints", -1, "from 0"),
    ("probemonitor", "interval", 0, "more than 0"),
    ("probemonitor", "interval", True, "must be a number"),
    ("amiremote", "hostname", "", "must not be empty"),
    ("amiremote", "hostname", "bad_host!", "host name"),
    ("amiremote", "hostname", "10.0.0.256", "IP address"),
    ("amiremote", "port", 0, "from 1 to 65535"),
    ("amiremote", "port", 65536, "from 1 to 65535"),
    ("amiremote", "port", "50x", "whole number"),
    ("amiremote", "username", "", "must not be empty"),
    ("amiremote", "password", "", "must not be empty"),
    ("amiremote", "password", True, "double quotes"),
    ("amiremote", "timeout", -2, "more than 0"),
    ("amiremote", "tls", "yes", "true or false"),
    ("amiremote", "cafile", "/nonexistent/ca.pem", "no such file"),
    ("amilocal", "hostname", "a..b", "host name"),
    ("amilocal", "port", 99999, "from 1 to 65535"),
    ("amilocal", "password", "", "must not be empty"),
    ("syncmanager", "remotefilename", "", "must not be empty"),
    ("syncmanager", "interval", 0, "more than 0"),
    ("syncmanager", "interval", 1e9, "at most"),
    ("syncmanager", "filterkey", "account code", "one Asterisk key name"),
    ("syncmanager", "filtervalue", "^(HeadOffice$", "missing ), unterminated subpattern"),
    ("syncmanager", "filtervalue", "a\r\nAction: Logoff", "control characters"),
    ("syncmanager", "localconfigspath", "etc/asterisk", "absolute"),
    ("syncmanager", "mode", "iax", "sip, pjsip"),
    ("syncmanager", "localfilename", "../sip.conf", "plain file name"),
    ("syncmanager", "localfilename", "sub/dir.conf", "plain file name"),
    ("syncmanager", "localfilename", ".git", "plain file name"),
    ("syncmanager", "maxremovepercent", 101, "at most 100"),
    ("syncmanager", "maxremovepercent", -1, "at least 0"),
    ("syncmanager", "fullcheckevery", 0, "from 1"),
    ("syncmanager", "jitter", -1, "at least 0"),
    ("syncmanager", "jitter", "soon", "must be a number"),
    ("dnsservice", "listenaddress", "sip.example.local", "IP address"),
    ("dnsservice", "port", 0, "from 1 to 65535"),
    ("dnsservice", "domain", "-bad.example", "DNS name"),
    ("dnsservice", "domain", "", "must not be empty"),
    ("dnsservice", "record", "si p", "DNS name"),
    ("dnsservice", "record", "x" * 64, "DNS name"),
    ("dnsservice", "recordttl", -1, "from 0"),
    ("dnsservice", "targetnormal", "pbx.example.local", "IPv4 address"),
    ("dnsservice", "targetnormal", "::1", "IPv4 address"),
    ("dnsservice", "targetfailover", "192.168.0.300", "IPv4 address"),
    ("dnsservice", "forwarder", "resolver.example", "ADDRESS:PORT"),
    ("dnsservice", "forwarder", 53, "double quotes"),
    ("dnsservice", "forwardtimeout", 0, "more than 0"),
    ("dnsservice", "refreshinterval", 0, "from 1"),
    ("dnsservice", "retryinterval", 0, "from 1"),
    ("dnsservice", "expireinterval", 2**31, "from 1"),
    ("dnsservice", "minttl", -5, "from 0"),
    ("dnsservice", "ttl", "x", "whole number"),
    ("dnsservice", "defaultstate", "Init", "Normal, Failover"),
    ("servicecontrol", "token", "", "must not be empty"),
    ("servicecontrol", "token", "two words", "spaces"),
    ("servicecontrol", "token", "a)b", "'('"),
    ("servicecontrol", "token", "x" * 201, "at most 200 bytes"),
    ("servicecontrol", "admintoken", "token1", "must differ from token"),
    ("servicecontrol", "listenaddress", "localhost", "IP address"),
    ("servicecontrol", "port", 65536, "from 1 to 65535"),
    ("metrics", "listenaddress", "*", "IP address"),
    ("metrics", "port", -1, "from 1 to 65535"),
]


@pytest.mark.parametrize(("section", "key", "value", "words"), BAD_VALUES)
def test_each_bad_value_is_refused_naming_its_key(
    section: str, key: str, value: Any, words: str
) -> None:
    problems = problem(**{section: {key: value}})
    name = f"{section}.{key}"
    assert name in problems, f"{name} not reported; got {problems}"
    assert words in problems[name]
    assert "(line " in problems[name]


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("amiremote", "hostname"),
        ("amiremote", "password"),
        ("amilocal", "password"),
        ("dnsservice", "targetnormal"),
        ("dnsservice", "targetfailover"),
        ("servicecontrol", "token"),
    ],
)
def test_required_keys_are_reported_when_missing(section: str, key: str) -> None:
    problems = problem(**{section: {key: ...}})
    assert problems[f"{section}.{key}"].startswith("is required")


def test_a_forwarder_is_required() -> None:
    problems = problem(dnsservice={"forwarder": ...})
    assert "at least one" in problems["dnsservice.forwarders"]


def test_unknown_key_is_named_with_the_closest_known_key() -> None:
    problems = problem(probemonitor={"failureTolerence": 5})
    assert problems["probemonitor.failuretolerence"].startswith(
        'unknown key; did you mean "failuretolerance"? (line '
    )


def test_unknown_key_that_belongs_elsewhere_says_where() -> None:
    problems = problem(probemonitor={"forwarders": []})
    assert "dnsservice.forwarders" in problems["probemonitor.forwarders"]


def test_unknown_section_is_named_with_the_closest_section() -> None:
    text = config_text()[:-1] + ', "dnsservise": {}}'
    assert 'did you mean "dnsservice"' in problems_of(text)["dnsservise"]


def test_a_section_must_be_an_object() -> None:
    text = config_text()[:-1] + ', "loglevel": "debug"}'
    assert "must be an object" in problems_of(text)["loglevel"]


def test_cafile_that_exists_is_accepted(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = parse(amiremote={"tls": True, "cafile": str(ca)})
    assert s.amiremote.cafile == str(ca)
    assert s.warnings == ()


def test_cafile_without_tls_is_a_warning(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert any(w.startswith("amiremote.cafile") for w in parse(
        amiremote={"cafile": str(ca)}).warnings)


def test_admintoken_that_differs_is_accepted_and_empty_means_none() -> None:
    assert parse(servicecontrol={"admintoken": "admin-2"}).servicecontrol.admintoken == "admin-2"
    assert parse(servicecontrol={"admintoken": ""}).servicecontrol.admintoken is None


def test_listeners_on_the_same_port_are_refused() -> None:
    problems = problem(metrics={"port": 65038, "listenaddress": "127.0.0.1"})
    assert "servicecontrol.port" in problems["metrics.port"]
    # different specific addresses may share a port
    parse(metrics={"port": 65038, "listenaddress": "127.0.0.9"})


def test_every_problem_is_reported_at_once() -> None:
    problems = problem(
        probemonitor={"interval": -1, "bogus": 1},
        amiremote={"port": 0, "hostname": ...},
        syncmanager={"filtervalue": "("},
        dnsservice={"forwarders": ["127.0.0.1:0"], "defaultstate": "up"},
        servicecontrol={"token": ""},
    )
    assert set(problems) >= {
        "probemonitor.interval", "probemonitor.bogus", "amiremote.port", "amiremote.hostname",
        "syncmanager.filtervalue", "dnsservice.forwarders[0]", "dnsservice.defaultstate",
        "servicecontrol.token",
    }


def test_problem_values_do_not_echo_secrets() -> None:
    problems = problem(servicecontrol={"token": "sec ret"}, amiremote={"username": "a\tb"})
    assert "sec ret" not in problems["servicecontrol.token"]


# ---------------------------------------------------------------- forwarders


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("192.0.2.53", Endpoint("192.0.2.53", 53)),
        (" 192.0.2.53:5353 ", Endpoint("192.0.2.53", 5353)),
        ("::1", Endpoint("::1", 53)),
        ("2001:db8::53", Endpoint("2001:db8::53", 53)),
        ("[2001:db8::53]:5300", Endpoint("2001:db8::53", 5300)),
        ("[::1]", Endpoint("::1", 53)),
        ("[2001:DB8:0::1]:53", Endpoint("2001:db8::1", 53)),
    ],
)
def test_forwarder_forms(text: str, endpoint: Endpoint) -> None:
    assert parse_endpoint(text, default_port=53) == endpoint


@pytest.mark.parametrize(
    "text",
    ["", "dns.example", "192.0.2.53:", "192.0.2.53:0", "192.0.2.53:65536", "192.0.2.53:5x",
     "[192.0.2.53]:53", "::1:53x", "[::1]:", "[::1]:99999", "2001:db8::1:53:x", "1.2.3.4:5:6"],
)
def test_malformed_forwarders(text: str) -> None:
    assert parse_endpoint(text, default_port=53) is None


def test_endpoint_text_brackets_ipv6() -> None:
    assert str(Endpoint("::1", 53)) == "[::1]:53"
    assert str(Endpoint("127.0.0.1", 53)) == "127.0.0.1:53"


def test_forwarder_and_forwarders_merge_in_order_without_duplicates() -> None:
    s = parse(dnsservice={
        "forwarder": "127.0.0.53",
        "forwarders": ["[::1]:5353", "127.0.0.53:53", "127.0.0.54"],
    })
    assert s.dnsservice.forwarders == (
        Endpoint("127.0.0.53", 53), Endpoint("::1", 5353), Endpoint("127.0.0.54", 53))


def test_forwarders_alone_and_as_a_single_string() -> None:
    s = parse(dnsservice={"forwarder": ..., "forwarders": ["127.0.0.53"]})
    assert s.dnsservice.forwarders == (Endpoint("127.0.0.53", 53),)
    s = parse(dnsservice={"forwarder": ..., "forwarders": "127.0.0.54:54"})
    assert s.dnsservice.forwarders == (Endpoint("127.0.0.54", 54),)


def test_empty_forwarders_list_is_refused() -> None:
    problems = problem(dnsservice={"forwarder": ..., "forwarders": []})
    assert "dnsservice.forwarders" in problems


def test_forwarding_to_itself_is_refused() -> None:
    problems = problem(dnsservice={"listenaddress": "127.0.0.1", "port": 53,
                                   "forwarder": "127.0.0.1"})
    assert "loop" in problems["dnsservice.forwarder"]
    problems = problem(dnsservice={"listenaddress": "::1", "port": 5300,
                                   "forwarders": ["[::1]:5300"]})
    assert "loop" in problems["dnsservice.forwarders[0]"]
    # a wildcard listener probably owns 127.0.0.1 too: a warning (another resolver may have
    # bound that address itself, as systemd-resolved does with 127.0.0.53)
    s = parse(dnsservice={"listenaddress": "0.0.0.0", "port": 53, "forwarder": "127.0.0.1"})
    assert any("probably this DNS service" in w for w in s.warnings)
    s = parse(dnsservice={"listenaddress": "0.0.0.0", "port": 53, "forwarder": "127.0.0.53"})
    assert s.warnings == ()
    # another port on the same host is another server
    parse(dnsservice={"listenaddress": "127.0.0.1", "port": 53, "forwarder": "127.0.0.1:5353"})


# ---------------------------------------------------------------- files and helpers


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.problems == [(path, "no such file")]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory"):
        load_settings(str(tmp_path))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings(str(path))


def test_invalid_json_file_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "appsettings.json"
    path.write_text('{\n  "loglevel": { "default": "debug" }\n  "x": 1\n}\n')
    with pytest.raises(ConfigError) as info:
        load_settings(str(path))
    assert info.value.problems[0][0] == f"{path}:3:3"


def test_describe_problems_one_line_each() -> None:
    err = ConfigError([("a.b", "bad"), ("c.d", "worse")])
    assert describe_problems(err) == "a.b: bad\nc.d: worse"


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCH_CONFIG", raising=False)
    assert config_path(None) == DEFAULT_CONFIG_PATH == "/etc/synch/appsettings.json"
    monkeypatch.setenv("SYNCH_CONFIG", "/tmp/env.json")
    assert config_path(None) == "/tmp/env.json"
    assert config_path("/tmp/cli.json") == "/tmp/cli.json"
    monkeypatch.setenv("SYNCH_CONFIG", "")
    assert config_path(None) == DEFAULT_CONFIG_PATH


@pytest.mark.parametrize(
    ("mode", "words"),
    [(0o600, None), (0o400, None), (0o640, "readable"), (0o604, "readable"),
     (0o620, "writable"), (0o666, "readable and writable")],
)
def test_file_mode_warning(tmp_path: Path, mode: int, words: str | None) -> None:
    path = tmp_path / "appsettings.json"
    path.write_text("{}")
    os.chmod(path, mode)
    warning = file_mode_warning(str(path))
    if words is None:
        assert warning is None
    else:
        assert warning is not None
        assert words in warning
        assert f"{stat.S_IMODE(mode):04o}" in warning
        assert "chmod 600" in warning


def test_file_mode_warning_for_a_missing_file_is_none(tmp_path: Path) -> None:
    assert file_mode_warning(str(tmp_path / "absent")) is None


def test_appliance_sample_loads_and_uses_no_public_forwarder() -> None:
    s = load_settings(str(APPLIANCE_SAMPLE))
    assert s.syncmanager.mode == "pjsip"
    assert s.syncmanager.localfilename == "pjsip_synch.conf"
    assert s.dnsservice.forwarders == (Endpoint("192.0.2.53", 53),)
    assert s.warnings == ()


# ---------------------------------------------------------------- robustness

JSON_TOKENS = st.sampled_from([
    "{", "}", "[", "]", ":", ",", '"', "\\", "//", "/*", "*/", "\n", " ", "true", "null",
    "-", "0", "1e999", "1.5", '"amiremote"', '"port"', '"\\u', '"\\ud800"', '"\\.x"', "'",
    '"dnsservice"', '"forwarders"', '"servicecontrol"', '"token"', "é", "\x00", "\ufeff",
])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_config_error(text: str) -> None:
    try:
        parse_settings(text)
    except ConfigError as err:
        assert err.problems


@settings(max_examples=300, deadline=None)
@given(st.lists(JSON_TOKENS, max_size=60).map("".join))
def test_json_like_junk_raises_only_config_error(text: str) -> None:
    try:
        parse_settings(text)
    except ConfigError as err:
        assert err.problems


SECTION_KEYS = {
    "probemonitor": ["failuretolerance", "interval", "alivethreshold"],
    "amiremote": ["hostname", "port", "tls", "cafile", "password", "timeout"],
    "syncmanager": ["filtervalue", "mode", "localfilename", "maxremovepercent"],
    "dnsservice": ["forwarder", "forwarders", "listenaddress", "port", "targetnormal", "domain"],
    "servicecontrol": ["token", "admintoken", "port"],
    "metrics": ["port", "listenaddress"],
}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_wrong_values_for_known_keys_raise_only_config_error(data: st.DataObject) -> None:
    sections = minimal_sections()
    for section, keys in SECTION_KEYS.items():
        for key in data.draw(st.lists(st.sampled_from(keys), max_size=3)):
            sections.setdefault(section, {})[key] = data.draw(JSON_VALUES)
    try:
        s = parse_settings(json.dumps(sections))
    except ConfigError as err:
        assert err.problems
    else:
        assert 1 <= s.dnsservice.port <= 65535
        assert s.dnsservice.forwarders


# ---------------------------------------------------------------- control characters, secrets

TEXT_KEYS = [
    ("loglevel", "default"),
    ("amiremote", "hostname"),
    ("amiremote", "username"),
    ("amiremote", "password"),
    ("amiremote", "cafile"),
    ("amilocal", "password"),
    ("syncmanager", "remotefilename"),
    ("syncmanager", "filterkey"),
    ("syncmanager", "localconfigspath"),
    ("syncmanager", "localfilename"),
    ("syncmanager", "mode"),
    ("dnsservice", "domain"),
    ("dnsservice", "record"),
    ("dnsservice", "targetnormal"),
    ("dnsservice", "forwarder"),
    ("dnsservice", "defaultstate"),
    ("servicecontrol", "token"),
    ("servicecontrol", "admintoken"),
    ("servicecontrol", "listenaddress"),
    ("metrics", "listenaddress"),
    ("dialplan", "trunk"),
    ("dialplan", "centralfallback"),
    ("dialplan", "voicemailaccess"),
]


@pytest.mark.parametrize(("section", "key"), TEXT_KEYS)
def test_control_characters_are_refused_in_every_text_key(section: str, key: str) -> None:
    problems = problem(**{section: {key: "Zq9\r\nXv7"}})
    message = problems[f"{section}.{key}"]
    assert message.startswith("must not contain control characters"), message
    assert "Zq9" not in message and "Xv7" not in message


@pytest.mark.parametrize("key", ["outbound", "emergency", "contexts"])
def test_control_characters_are_refused_in_list_elements(key: str) -> None:
    problems = problem(dialplan={key: ["112\n"]})
    assert problems[f"dialplan.{key}[0]"].startswith("must not contain control characters")


def test_secrets_are_named_never_shown() -> None:
    for value in ("pa55\tword", 4711.5, "pa55\u0000word"):
        for section, key in (("amiremote", "password"), ("servicecontrol", "token")):
            text = problem(**{section: {key: value}})[f"{section}.{key}"]
            assert "pa55" not in text and "4711" not in text, text
    # A non-secret says which character it found.
    assert "U+0009" in problem(amiremote={"username": "a\tb"})["amiremote.username"]
    assert "U+0009" not in problem(amiremote={"password": "a\tb"})["amiremote.password"]


def test_an_invalid_escape_in_a_secret_is_warned_about_without_its_characters() -> None:
    text = config_text().replace('"central-secret"', r'"cen\qtral"')
    s = parse_settings(text)
    assert s.amiremote.password == r"cen\qtral"
    (warning,) = s.warnings
    assert warning.startswith("amiremote.password: invalid JSON escape")
    assert "\\q" not in warning and "cen" not in warning


def test_a_syntax_error_never_quotes_an_unquoted_word() -> None:
    text = config_text().replace('"central-secret"', "Hunter2secret")
    ((_, message),) = problems_of(text).items()
    assert "Hunter2" not in message and "unexpected word" in message
    assert "'True'" in next(iter(problems_of(config_text().replace('"token1"', "True")).values()))
