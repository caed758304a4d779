from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pgwarden.policy.detectors import Detector, Finding, iban_valid, luhn_valid
from pgwarden.policy.language import DetectorKind

DETECTOR = Detector()

CARD, EMAIL, SSN, IBAN, SECRET = (
    DetectorKind.CARD, DetectorKind.EMAIL, DetectorKind.SSN, DetectorKind.IBAN, DetectorKind.SECRET_KEY,
)

SENTINELS = [
    ("4111111111111111", CARD),
    ("4111-1111-1111-1111", CARD),
    ("5500 0055 5555 5559", CARD),
    ("378282246310005", CARD),  # Amex, 15 digits
    ("3782 822463 10005", CARD),  # Amex printed 4-6-5
    ("4222222222222", CARD),  # 13-digit Visa
    ("6011000990139424", CARD),
    ("ada@example.com", EMAIL),
    ("Ada.Lovelace+db@mail.example.co.uk", EMAIL),
    ("078-05-1120", SSN),
    ("219-09-9999", SSN),
    ("123-45-6789", SSN),
    ("DE89370400440532013000", IBAN),
    ("GB82 WEST 1234 5698 7654 32", IBAN),
    ("GB82WEST12345698765432", IBAN),
    ("NO9386011117947", IBAN),  # shortest IBAN
    ("FR1420041010050500013M02606", IBAN),
    ("sk_live_SENTINEL123", SECRET),
    ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", SECRET),
    ("rk_live_abcdef123456", SECRET),
    ("AKIAIOSFODNN7EXAMPLE", SECRET),
    ("ghp_" + "a1B2" * 9, SECRET),
    ("gho_" + "Z9y8" * 9, SECRET),
    ("github_pat_11ABCDEFG0123456789_abcdefXYZjklmnop", SECRET),
    ("xoxb-1234567890-abcdefghij", SECRET),
    ("xoxp-123456789012-123456789012-abcdef", SECRET),
    ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     SECRET),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----", SECRET),
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----", SECRET),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----", SECRET),
]

TEMPLATES = [
    "{}",
    'invalid input syntax for type bigint: "{}"',
    "Key (value)=({}) already exists.",
    "duplicate key value violates unique constraint \"t_pkey\"\nDETAIL:  Key (x)=({}) already exists.",
    "value '{}' is out of range",
    "prefix {} suffix",
    "{}\n",
]


# --- sentinels ------------------------------------------------------------------------


@pytest.mark.parametrize(("secret", "kind"), SENTINELS)
@pytest.mark.parametrize("template", TEMPLATES)
def test_sentinels_are_found_and_redacted(secret: str, kind: DetectorKind, template: str) -> None:
    text = template.format(secret)
    findings = DETECTOR.find(text)
    start = template.index("{}")
    assert findings == [Finding(kind, start, start + len(secret))]
    assert DETECTOR.contains(text)
    redacted = DETECTOR.redact(text)
    assert redacted == template.format(f"[masked:{kind.value}]")
    assert secret not in redacted


@pytest.mark.parametrize(("secret", "kind"), SENTINELS)
def test_each_kind_is_found_only_when_enabled(secret: str, kind: DetectorKind) -> None:
    assert Detector([kind]).contains(secret)
    others = Detector([k for k in DetectorKind if k is not kind])
    assert not others.contains(secret)


def test_several_findings_in_one_text() -> None:
    text = "card 4111111111111111, mail ada@example.com, ssn 078-05-1120, key sk_live_SENTINEL123."
    assert [f.kind for f in DETECTOR.find(text)] == [CARD, EMAIL, SSN, SECRET]
    assert DETECTOR.redact(text) == (
        "card [masked:card], mail [masked:email], ssn [masked:ssn], key [masked:secret_key]."
    )


def test_grouped_iban_followed_by_a_word() -> None:
    text = "pay to GB82 WEST 1234 5698 7654 32 EUR now"
    assert DETECTOR.redact(text) == "pay to [masked:iban] EUR now"
    text = "pay to DE89 3704 0044 0532 0130 00 WIRE"
    assert DETECTOR.redact(text) == "pay to [masked:iban] WIRE"


def test_card_next_to_other_numbers() -> None:
    assert DETECTOR.redact("12 4111111111111111") == "12 [masked:card]"
    assert DETECTOR.redact("4111 1111 1111 1111 2024") == "[masked:card] 2024"
    assert DETECTOR.redact("(4111111111111111)") == "([masked:card])"
    assert DETECTOR.redact("{4111111111111111,5500005555555559}") == "{[masked:card],[masked:card]}"


def test_pem_block_is_redacted_whole_and_a_truncated_one_to_the_end() -> None:
    body = "MIIEowIBAAKCAQEAx1234\nabcdEFGH5678=="
    block = f"-----BEGIN EC PRIVATE KEY-----\n{body}\n-----END EC PRIVATE KEY-----"
    assert DETECTOR.redact(f"x {block} y") == "x [masked:secret_key] y"
    truncated = DETECTOR.redact(f"key: -----BEGIN PRIVATE KEY-----\n{body}")
    assert truncated == "key: [masked:secret_key]"


def test_pem_blocks_are_redacted_separately() -> None:
    block = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
    assert DETECTOR.redact(f"{block} between {block}") == "[masked:secret_key] between [masked:secret_key]"


def test_overlapping_findings_are_merged() -> None:
    text = "to 4111111111111111@example.com now"
    findings = DETECTOR.find(text)
    assert findings == [Finding(EMAIL, 3, 31)]
    assert DETECTOR.redact(text) == "to [masked:email] now"


# --- negatives ------------------------------------------------------------------------


ORDINARY = [
    "",
    "42",
    "Ada Example",
    "The quick brown fox jumps over the lazy dog.",
    "order_items",
    "relation \"public.customers\" does not exist",
    # amounts
    "1234567.89",
    "$12,345,678.90",
    "-98765432101.5",
    "EUR 1.234.567,89",
    # dates and timestamps
    "2024-06-01",
    "2024-06-01 12:34:56.123456+00",
    "2024-06-01T12:34:56Z",
    "Sat Jun  1 12:34:56 2024",
    # Epoch and compact timestamps; each of these passes the Luhn check.
    "1717245296",
    "1717245296122",  # epoch milliseconds
    "1717245296123451",  # epoch microseconds
    "1717245296123456789",  # epoch nanoseconds
    "20240601123456",
    "20240601123456785",
    # phone numbers
    "+1 (555) 123-4567",
    "+1-555-123-4567",
    "555-123-4567 555-123-4568",
    "+44 20 7946 0958",
    "0049 30 12345678",
    "+33 1 23 45 67 89",
    # identifiers
    "550e8400-e29b-41d4-a716-446655440000",
    "12345678-1234-1234-1234-123456789012",
    "00000000-0000-0000-0000-000000000000",
    "ORD-2024-000123",
    "INV-0000012345",
    "order 1234567890123456789012",  # too long for a card
    "0000000000000000",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "192.168.100.200",
    "version 14.11.2 build 20240601",
    "lsn 0/16B3748",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12",
    # near misses
    "4111111111111112",  # Luhn-invalid
    "000-12-3456",
    "666-12-3456",
    "900-12-3456",
    "123-00-4567",
    "123-45-0000",
    "1123-45-6789",
    "123-45-67890",
    "2024-123-45-6789",
    "123-45-6789-1",
    "DE89370400440532013001",  # wrong checksum
    "ZZ89370400440532013000",
    "de89370400440532013000",  # lower case is not matched (documented)
    "email me at ada at example dot com",
    "user@localhost",
    "a@b.c",
    "@example.com",
    "sk_live_abc",  # too short to be a key
    "risk_live_events_table",
    "AKIAIOSFODNN7EXAMPL",
    "eyJhbGciOiJIUzI1NiJ9",  # a header alone
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYH\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_no_false_positives(text: str) -> None:
    assert DETECTOR.find(text) == []
    assert DETECTOR.redact(text) == text


def test_redact_value() -> None:
    assert DETECTOR.redact_value(None) is None
    assert DETECTOR.redact_value("Ada Example") == "Ada Example"
    assert DETECTOR.redact_value("4111111111111111") == "[masked:card]"
    assert DETECTOR.redact_value(b"ada@example.com") == "[masked:email]"  # type: ignore[arg-type]


def test_kinds_by_name_and_validation() -> None:
    assert Detector(["card", "email"]).kinds == frozenset({CARD, EMAIL})
    assert Detector([]).find("4111111111111111 ada@example.com") == []
    with pytest.raises(ValueError):
        Detector(["passport"])


def test_checksums() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000")
    assert not iban_valid("DE88370400440532013000")


# --- properties -----------------------------------------------------------------------


def _luhn_check_digit(body: str) -> str:
    for d in "0123456789":
        if luhn_valid(body + d):
            return d
    raise AssertionError("unreachable")


@st.composite
def card_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """(digits, printed form) of a valid card number that passes the plausibility rules."""
    length = draw(st.integers(min_value=13, max_value=19))
    if length == 13:
        head = "4"
    elif length == 16:
        head = draw(st.sampled_from("23456789"))
    else:
        head = draw(st.sampled_from(["220", "3", "4", "5", "6", "7", "8", "9"] + (["1", "2014"] if length == 15 else [])))
    body = head + draw(st.text("0123456789", min_size=length - 1 - len(head), max_size=length - 1 - len(head)))
    digits = body + _luhn_check_digit(body)
    sep = draw(st.sampled_from(["", " ", "-"]))
    if not sep:
        return digits, digits
    groups = [digits[i:i + 4] for i in range(0, length, 4)]
    if len(groups[-1]) < 3:  # e.g. 13 = 4-4-5, never a lone digit at the end
        groups[-2:] = [groups[-2] + groups[-1]]
    return digits, sep.join(groups)


# Surrounding text must not glue further digits onto the number: "x41111…" is
# still a card, "741111…" is a different (17-digit) number.
prefixes = st.text().filter(lambda s: not s or not s[-1].isascii() or not s[-1].isdigit())
suffixes = st.text().filter(lambda s: not s or not s[0].isascii() or not s[0].isdigit())


@given(card_numbers(), prefixes, suffixes)
def test_any_valid_card_in_any_text_is_redacted(card: tuple[str, str], prefix: str, suffix: str) -> None:
    digits, printed = card
    assume(digits not in prefix + suffix and printed not in prefix + suffix)
    out = DETECTOR.redact(prefix + printed + suffix)
    assert digits not in out
    assert printed not in out


@given(st.text(st.sampled_from("0123456789"), min_size=16, max_size=16))
def test_luhn_invalid_numbers_are_not_cards(digits: str) -> None:
    assume(not luhn_valid(digits))
    assert all(f.kind is not CARD for f in DETECTOR.find(digits))


_TEXTY = st.text(st.sampled_from("0123456789 -@.abcXYZ_:kesy"), max_size=80) | st.text()


@given(_TEXTY)
def test_findings_are_ordered_disjoint_and_redaction_keeps_the_rest(text: str) -> None:
    findings = DETECTOR.find(text)
    pos = 0
    for f in findings:
        assert pos <= f.start < f.end <= len(text)
        pos = f.end
    out = DETECTOR.redact(text)
    rest = [text[a:b] for a, b in zip([0, *[f.end for f in findings]], [*[f.start for f in findings], len(text)],
                                      strict=True)]
    # Every piece outside the findings appears, in order, in the output.
    cursor = 0
    for piece in rest:
        at = out.find(piece, cursor)
        assert at >= 0
        cursor = at + len(piece)
    if not findings:
        assert out == text


@given(_TEXTY)
def test_redaction_is_stable(text: str) -> None:
    once = DETECTOR.redact(text)
    assert DETECTOR.redact(once) == once
