from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwarden.policy.language import MaskStrategy
from pgwarden.policy.masking import MASKED, MaskingError, make_masker, mask_whole

KEY = b"0123456789abcdef0123456789abcdef"
SEPARATORS = "- "


def all_maskers():
    return [make_masker(s, key=KEY) for s in MaskStrategy]


# --- NULL and input types -------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(MaskStrategy))
def test_null_stays_null_for_every_strategy(strategy: MaskStrategy) -> None:
    assert make_masker(strategy, key=KEY)(None) is None


def test_mask_whole() -> None:
    assert mask_whole(None) is None
    assert mask_whole("anything") == MASKED
    assert mask_whole("") == MASKED
    assert mask_whole(0) == MASKED


def test_strategy_by_name_or_enum() -> None:
    assert make_masker("redact")("x") == make_masker(MaskStrategy.REDACT)("x") == MASKED


def test_unknown_strategy() -> None:
    with pytest.raises(MaskingError) as info:
        make_masker("scramble")
    assert info.value.code == "unknown_strategy"
    assert isinstance(info.value, ValueError)


def test_bytes_and_objects_are_converted_to_text() -> None:
    keep = make_masker("keep_last", keep=2)
    assert keep(b"abcdef") == "****ef"
    assert keep(123456) == "****56"
    assert keep(bytearray(b"xyz")) == "*yz"
    # Invalid UTF-8 becomes U+FFFD rather than raising.
    assert keep(b"\xff\xfeab") == "**ab"
    hashed = make_masker("hash", key=KEY)
    assert hashed(b"4111") == hashed("4111")
    assert hashed(42) == hashed("42")
    assert make_masker("email_domain")(b"ada@example.com") == "***@example.com"


@given(st.one_of(st.text(), st.binary(), st.integers(), st.floats(), st.none()))
def test_no_masker_raises_on_data(value: object) -> None:
    for masker in all_maskers():
        result = masker(value)
        assert result is None or isinstance(result, str)


# --- redact and null ------------------------------------------------------------------


def test_redact() -> None:
    m = make_masker("redact")
    assert m("4111111111111111") == MASKED
    assert m("") == MASKED


def test_null() -> None:
    m = make_masker("null")
    assert m("4111111111111111") is None
    assert m("") is None


# --- keep_last ------------------------------------------------------------------------


def test_keep_last_card() -> None:
    assert make_masker("keep_last", keep=4)("4111111111111111") == "************1111"


def test_keep_last_default_is_four() -> None:
    assert make_masker("keep_last")("123456789") == "*****6789"


@pytest.mark.parametrize("value", ["", "1", "12", "1234", "12-3", "1 2-3", "----", "    "])
def test_keep_last_hides_short_values_entirely(value: str) -> None:
    assert make_masker("keep_last", keep=4)(value) == "*" * len(value)


def test_keep_last_zero_hides_everything() -> None:
    assert make_masker("keep_last", keep=0)("4111111111111111") == "*" * 16


def test_keep_last_separators_in_tail_do_not_count() -> None:
    m = make_masker("keep_last", keep=4)
    assert m("4111-1111-1111-1111") == "***************1111"
    assert m("555-12-34") == "****12-34"
    assert m("5500 0055 5555 55 59") == "*" * 15 + "55 59"
    # All data characters would be shown: hide everything.
    assert m(" 1234") == "*****"
    assert m("12-34 ") == "******"


def test_keep_last_separators_in_head_are_starred() -> None:
    # The grouping of the hidden part is not revealed.
    assert make_masker("keep_last", keep=2)("John Smith") == "********th"


@pytest.mark.parametrize("keep", [-1, 1.5, "4", True])
def test_keep_last_rejects_bad_keep(keep: object) -> None:
    with pytest.raises(MaskingError) as info:
        make_masker("keep_last", keep=keep)  # type: ignore[arg-type]
    assert info.value.code == "bad_keep"


_NO_STARS = st.one_of(
    st.text(st.characters(blacklist_characters="*")),
    # Separator-heavy text, where the interesting cases are.
    st.text(st.sampled_from("0123456789- ab\u00e9"), max_size=30),
)


@given(_NO_STARS, st.integers(min_value=0, max_value=12))
def test_keep_last_never_reveals_more_than_keep_data_characters(value: str, keep: int) -> None:
    out = make_masker("keep_last", keep=keep)(value)
    assert out is not None
    assert len(out) == len(value)
    assert all(o in (v, "*") for o, v in zip(out, value, strict=True))
    shown = [v for o, v in zip(out, value, strict=True) if o == v]
    assert len([c for c in shown if c not in SEPARATORS]) <= keep
    # What is shown is one suffix: stars first, then the value unchanged.
    hidden = len(out) - len(out.lstrip("*"))
    assert out[hidden:] == value[hidden:]
    if sum(c not in SEPARATORS for c in value) <= keep:
        assert out == "*" * len(value)


@given(st.text(), st.integers(min_value=0, max_value=12))
def test_keep_last_output_is_stars_then_a_suffix(value: str, keep: int) -> None:
    out = make_masker("keep_last", keep=keep)(value)
    assert out is not None and len(out) == len(value)
    assert any(out == "*" * i + value[i:] for i in range(len(value) + 1))


# --- hash -----------------------------------------------------------------------------


def test_hash_format_and_reference() -> None:
    out = make_masker("hash", key=KEY)("4111111111111111")
    assert out is not None
    assert re.fullmatch(r"h:[0-9a-f]{16}", out)
    expected = hmac.new(KEY, b"4111111111111111", hashlib.sha256).hexdigest()[:16]
    assert out == "h:" + expected


@given(st.binary(min_size=1, max_size=200), st.text())
def test_hash_matches_the_standard_hmac_for_any_key(key: bytes, value: str) -> None:
    expected = hmac.new(key, value.encode("utf-8", errors="surrogatepass"), hashlib.sha256).hexdigest()[:16]
    assert make_masker("hash", key=key)(value) == "h:" + expected


def test_hash_is_deterministic_and_key_dependent() -> None:
    a = make_masker("hash", key=KEY)
    b = make_masker("hash", key=KEY)
    other = make_masker("hash", key=b"another key")
    assert a("ada@example.com") == b("ada@example.com")
    assert a("ada@example.com") != other("ada@example.com")
    assert a("ada@example.com") != a("bob@example.com")


def test_hash_encodes_utf8() -> None:
    expected = hmac.new(KEY, "zoë".encode(), hashlib.sha256).hexdigest()[:16]
    assert make_masker("hash", key=KEY)("zoë") == "h:" + expected


@given(st.text(), st.text())
def test_hash_distinguishes_values(a: str, b: str) -> None:
    m = make_masker("hash", key=KEY)
    assert (m(a) == m(b)) == (a == b)


def test_hash_needs_a_key() -> None:
    with pytest.raises(MaskingError) as info:
        make_masker("hash")
    assert info.value.code == "missing_key"


@pytest.mark.parametrize("key", [b"", "text key"])
def test_hash_rejects_bad_keys(key: object) -> None:
    with pytest.raises(MaskingError) as info:
        make_masker("hash", key=key)  # type: ignore[arg-type]
    assert info.value.code == "bad_key"


def test_key_is_ignored_by_other_strategies() -> None:
    assert make_masker("redact", key=None)("x") == MASKED


# --- email_domain ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ada@example.com", "***@example.com"),
        ("Ada.Lovelace+db@mail.example.co.uk", "***@mail.example.co.uk"),
        ('"odd@local"@example.org', "***@example.org"),
        ("  ada@example.com\n", "***@example.com"),
        ("zoë@bücher.de", "***@bücher.de"),
        ("ada@sub-domain.example", "***@sub-domain.example"),
    ],
)
def test_email_domain_keeps_only_the_domain(value: str, expected: str) -> None:
    assert make_masker("email_domain")(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not an address",
        "ada@",
        "@example.com",
        "ada@localhost",
        "ada@-bad.com",
        "ada@bad-.com",
        "ada@exa mple.com",
        "ada@example.com and more",
        "ada@example..com",
        "ada@[192.0.2.1]",
        "ada@example.com.",
        "ada@" + "a" * 64 + ".com",
    ],
)
def test_email_domain_redacts_anything_else(value: str) -> None:
    assert make_masker("email_domain")(value) == MASKED


@given(st.text())
def test_email_domain_never_reveals_the_local_part(value: str) -> None:
    out = make_masker("email_domain")(value)
    assert out == MASKED or (out is not None and out.startswith("***@") and "@" not in out[4:])
