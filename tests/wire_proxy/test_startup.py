"""Start-up negotiation: first-packet classification, protocol version and NegotiateProtocolVersion as
PostgreSQL sends it, the start-up parameter allow list, cancel keys."""

from __future__ import annotations

import struct

import pytest

from pgwarden.wire_proxy import _startup as s
from pgwarden.wire_proxy import codec
from pgwarden.wire_proxy import messages as m
from pgwarden.wire_proxy.errors import StartupRefused, UnsupportedProtocol


def packet(code: int, body: bytes = b"") -> bytes:
    return struct.pack("!II", len(body) + 8, code) + body


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (packet(80877103), s.PacketKind.SSL_REQUEST),
        (packet(80877104), s.PacketKind.GSSENC_REQUEST),
        (packet(80877102, b"\x00\x00\x00\x01abcd"), s.PacketKind.CANCEL_REQUEST),
        (packet(196608, b"user\0u\0\0"), s.PacketKind.STARTUP),
        (packet(196610, b"user\0u\0\0"), s.PacketKind.STARTUP),
        (packet(0x0003270F), s.PacketKind.STARTUP),  # 3.9999
        (packet(0x00020000), s.PacketKind.UNSUPPORTED),
        (packet(80877105), s.PacketKind.UNSUPPORTED),
        (b"\x16", s.PacketKind.DIRECT_TLS),
        (b"\x16\x03\x01\x00\xf1\x01", s.PacketKind.DIRECT_TLS),
        (b"\x00\x00\x00", None),
        (b"\x00\x00\x00\x08\x04\xd2", None),
    ],
)
def test_classify_first_packet(data, kind):
    assert s.classify_first_packet(data) is kind


def test_postgres_19_beta_startup_gets_negotiate_protocol_version_bytes():
    # libpq of PostgreSQL 19 betas: protocol 3.9999 plus a deliberately unknown protocol option
    params = {"user": "alice", "database": "app", "_pq_.test_protocol_negotiation": ""}
    raw = codec.encode(m.StartupMessage(params, 3, 9999))
    reader = codec.StartupReader()
    reader.feed(raw)
    msg = reader.next_message()
    n = s.negotiate_startup(msg)
    assert n.requested == (3, 9999)
    assert n.version == (3, 2)
    assert n.params == {"user": "alice", "database": "app"}
    name = b"_pq_.test_protocol_negotiation\0"
    body = struct.pack("!II", 0x00030002, 1) + name  # what PostgreSQL 18 sends: FrontendProtocol, 1 name
    assert codec.encode(n.reply) == b"v" + struct.pack("!I", len(body) + 4) + body


@pytest.mark.parametrize(
    ("minor", "options", "reply", "version"),
    [
        (0, {}, None, (3, 0)),
        (2, {}, None, (3, 2)),
        (1, {}, None, (3, 0)),  # 3.1 was never used: 3.0 behaviour, no negotiation (as PostgreSQL 18)
        (3, {}, m.NegotiateProtocolVersion(2, ()), (3, 2)),
        (9999, {}, m.NegotiateProtocolVersion(2, ()), (3, 2)),
        (0, {"_pq_.x": "1"}, m.NegotiateProtocolVersion(0, ("_pq_.x",)), (3, 0)),
        (2, {"_pq_.a": "1", "_pq_.b": ""}, m.NegotiateProtocolVersion(2, ("_pq_.a", "_pq_.b")), (3, 2)),
    ],
)
def test_negotiation_matches_postgres(minor, options, reply, version):
    n = s.negotiate_startup(m.StartupMessage({"user": "u", **options}, 3, minor))
    assert n.reply == reply
    assert n.version == version


def test_known_protocol_options_are_kept():
    msg = m.StartupMessage({"user": "u", "_pq_.known": "on", "_pq_.other": "1"}, 3, 2)
    n = s.negotiate_startup(msg, known_protocol_options={"_pq_.known"})
    assert n.protocol_options == {"_pq_.known": "on"}
    assert n.reply == m.NegotiateProtocolVersion(2, ("_pq_.other",))


def test_major_other_than_3_is_fatal_feature_not_supported():
    with pytest.raises(UnsupportedProtocol) as info:
        s.negotiate_startup(m.StartupMessage({"user": "u"}, 4, 0))
    assert info.value.sqlstate == "0A000"
    assert "4.0" in info.value.message


@pytest.mark.parametrize("params", [{}, {"user": ""}, {"database": "x"}])
def test_user_is_required(params):
    with pytest.raises(StartupRefused) as info:
        s.negotiate_startup(m.StartupMessage(params))
    assert info.value.sqlstate == "28000"


# ---- parameters -------------------------------------------------------------------------------------


def names(refused):
    return {(r.name, r.code) for r in refused}


def test_harmless_settings_are_forwarded_under_canonical_names():
    p = s.filter_startup_params(
        {
            "user": "u", "database": "d", "application_name": "psql", "client_encoding": "utf-8",
            "datestyle": "ISO, MDY", "TimeZone": "UTC", "IntervalStyle": "iso_8601", "extra_float_digits": "3",
        }
    )
    assert p.forward == {
        "application_name": "psql", "client_encoding": "UTF8", "DateStyle": "ISO, MDY", "TimeZone": "UTC",
        "IntervalStyle": "iso_8601", "extra_float_digits": "3",
    }
    assert p.refused == ()
    assert (p.user, p.database) == ("u", "d")


def test_database_defaults_to_user_and_neither_is_forwarded():
    p = s.filter_startup_params({"user": "u"})
    assert (p.user, p.database, p.forward) == ("u", "u", {})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("default_transaction_read_only", "off"),
        ("role", "postgres"),
        ("session_authorization", "postgres"),
        ("search_path", "evil, public"),
        ("statement_timeout", "0"),
        ("lock_timeout", "0"),
        ("standard_conforming_strings", "off"),
        ("backslash_quote", "on"),
        ("row_security", "off"),
        ("session_replication_role", "replica"),
        ("my.custom", "1"),
        ("work_mem", "1GB"),
        ("Default_Transaction_Read_Only", "off"),
    ],
)
def test_dangerous_or_unknown_settings_are_refused(name, value):
    p = s.filter_startup_params({"user": "u", name: value})
    assert p.forward == {}
    assert names(p.refused) == {(name, "not_allowed")}


@pytest.mark.parametrize("encoding", ["LATIN1", "SQL_ASCII", "win1252", "EUC_JP", "BIG5"])
def test_client_encoding_must_be_utf8(encoding):
    p = s.filter_startup_params({"user": "u", "client_encoding": encoding})
    assert p.forward == {}
    assert names(p.refused) == {("client_encoding", "bad_value")}


@pytest.mark.parametrize("value", ["UTF8", "utf8", "UTF-8", "unicode", "Utf_8"])
def test_client_encoding_utf8_spellings(value):
    assert s.filter_startup_params({"user": "u", "client_encoding": value}).forward == {"client_encoding": "UTF8"}


def test_standard_conforming_strings_on_is_dropped_quietly():
    p = s.filter_startup_params({"user": "u", "standard_conforming_strings": "on"})
    assert (p.forward, p.refused, p.dropped) == ({}, (), ("standard_conforming_strings",))


@pytest.mark.parametrize("value", ["true", "1", "database", "false", "off"])
def test_replication_is_refused(value):
    p = s.filter_startup_params({"user": "u", "replication": value})
    assert names(p.refused) == {("replication", "replication")}
    assert "replication" not in p.forward


def test_pinned_settings_are_refused_even_when_allowed():
    p = s.filter_startup_params({"user": "u", "application_name": "mine", "TimeZone": "UTC"}, pinned={"Application_Name"})
    assert p.forward == {"TimeZone": "UTC"}
    assert names(p.refused) == {("application_name", "pinned")}


def test_extra_float_digits_range():
    assert names(s.filter_startup_params({"user": "u", "extra_float_digits": "9"}).refused) == {
        ("extra_float_digits", "bad_value")
    }
    assert names(s.filter_startup_params({"user": "u", "extra_float_digits": "x"}).refused) == {
        ("extra_float_digits", "bad_value")
    }


@pytest.mark.parametrize(
    ("options", "tokens"),
    [
        ("-c a=b", ["-c", "a=b"]),
        ("  -c   a=b  --x=y ", ["-c", "a=b", "--x=y"]),
        (r"-c search_path=a\ b", ["-c", "search_path=a b"]),
        (r"-c a=b\\c", ["-c", r"a=b\c"]),
        ("-c\ta=b\n-cx=y", ["-c", "a=b", "-cx=y"]),
        ("trailing\\", ["trailing"]),
        ("", []),
    ],
)
def test_split_options_like_pg_split_opts(options, tokens):
    assert s.split_options(options) == tokens


def test_options_settings_are_checked_and_lifted_never_forwarded_as_options():
    p = s.filter_startup_params(
        {
            "user": "u",
            "options": r"-c default_transaction_read_only=off --search-path=evil -crole=postgres "
            r"-c application_name=my\ app --DateStyle=ISO -c statement_timeout=0",
        }
    )
    assert "options" not in p.forward
    assert p.forward == {"application_name": "my app", "DateStyle": "ISO"}
    assert names(p.refused) == {
        ("default_transaction_read_only", "not_allowed"),
        ("search_path", "not_allowed"),  # --search-path: dashes become underscores, as in PostgreSQL
        ("role", "not_allowed"),
        ("statement_timeout", "not_allowed"),
    }
    assert all(r.in_options for r in p.refused)


@pytest.mark.parametrize("options", ["-B 1000", "-F", "-d 5", "-c", "-c novalue", "--novalue", "plain", "-e"])
def test_other_server_switches_in_options_are_refused(options):
    p = s.filter_startup_params({"user": "u", "options": options})
    assert p.forward == {}
    assert p.refused and all(r.code == "bad_options" for r in p.refused)


def test_direct_parameter_wins_over_options_like_postgres():
    p = s.filter_startup_params({"user": "u", "options": "-c TimeZone=UTC", "timezone": "Europe/Paris"})
    assert p.forward == {"TimeZone": "Europe/Paris"}


def test_protocol_options_are_left_to_negotiation():
    p = s.filter_startup_params({"user": "u", "_pq_.whatever": "1"})
    assert (p.forward, p.refused) == ({}, ())


def test_allow_list_is_a_documented_read_only_constant():
    assert "application_name" in s.ALLOWED_STARTUP_SETTINGS
    for name in ("search_path", "role", "default_transaction_read_only", "statement_timeout", "lock_timeout"):
        assert name not in s.ALLOWED_STARTUP_SETTINGS
    with pytest.raises(TypeError):
        s.ALLOWED_STARTUP_SETTINGS["search_path"] = "search_path"  # type: ignore[index]


# ---- cancel keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "length"), [((3, 0), 4), ((3, 2), 32)])
def test_backend_keys(version, length):
    keys = {s.new_backend_key(version).key for _ in range(50)}
    assert len(keys) == 50
    assert {len(k) for k in keys} == {length}
    key = s.new_backend_key(version)
    assert 0 < key.pid < 2**31
    # the key round-trips through BackendKeyData and a CancelRequest
    assert codec.decode_backend(ord("K"), codec.encode(key)[5:]) == key
    cancel = codec.decode_startup(codec.encode(m.CancelRequest(key.pid, key.key))[4:])
    assert s.cancel_matches(cancel, key)
    assert not s.cancel_matches(m.CancelRequest(key.pid, bytes(length)), key)
    assert not s.cancel_matches(m.CancelRequest(key.pid + 1, key.key), key)
