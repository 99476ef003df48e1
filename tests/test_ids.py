"""Text ids: round trips, and the check catches what people get wrong."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pmoments.core.errors import DecodeError
from p2pmoments.core.ids import TEXT_LEN, IdKind, decode_id, encode_id

raw_ids = st.binary(min_size=32, max_size=32)
ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


@given(raw=raw_ids, kind=st.sampled_from(IdKind))
def test_round_trip(raw: bytes, kind: IdKind) -> None:
    text = encode_id(raw, kind)
    assert len(text) == TEXT_LEN
    assert set(text) <= set(ALPHABET)
    assert decode_id(text, kind) == raw


@given(raw=raw_ids)
def test_case_spaces_and_dashes_are_ignored(raw: bytes) -> None:
    text = encode_id(raw, IdKind.IDENTITY)
    grouped = "-".join(text[i : i + 8] for i in range(0, TEXT_LEN, 8)).upper()
    assert decode_id(f"  {grouped} ", IdKind.IDENTITY) == raw


@given(raw=raw_ids, pos=st.integers(0, TEXT_LEN - 1), data=st.data())
def test_any_single_typo_is_caught(raw: bytes, pos: int, data: st.DataObject) -> None:
    text = encode_id(raw, IdKind.IDENTITY)
    wrong = data.draw(st.sampled_from(ALPHABET.replace(text[pos], "")))
    typo = text[:pos] + wrong + text[pos + 1 :]
    with pytest.raises(DecodeError):
        decode_id(typo, IdKind.IDENTITY)


@given(raw=raw_ids, pos=st.integers(0, TEXT_LEN - 2))
def test_swapped_neighbours_are_caught(raw: bytes, pos: int) -> None:
    text = encode_id(raw, IdKind.IDENTITY)
    swapped = text[:pos] + text[pos + 1] + text[pos] + text[pos + 2 :]
    if swapped != text:
        with pytest.raises(DecodeError):
            decode_id(swapped, IdKind.IDENTITY)


@given(raw=raw_ids)
def test_an_id_of_another_kind_is_refused(raw: bytes) -> None:
    with pytest.raises(DecodeError, match="not a valid identity id"):
        decode_id(encode_id(raw, IdKind.CIRCLE), IdKind.IDENTITY)


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "56 characters"), ("abc", "56 characters"), ("1" * 56, "letters a-z and the digits 2-7")],
)
def test_malformed_text_says_why(text: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_id(text, IdKind.IDENTITY)


@given(text=st.text(max_size=80))
def test_hostile_text_never_crashes(text: str) -> None:
    with contextlib.suppress(DecodeError):
        decode_id(text, IdKind.MOMENT)


@pytest.mark.parametrize(
    ("raw", "kind", "text"),
    [
        (bytes(32), IdKind.IDENTITY, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaexjhr"),
        (
            bytes(range(32)),
            IdKind.IDENTITY,
            "aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypqm2n4",
        ),
        (
            bytes(range(32)),
            IdKind.CIRCLE,
            "aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp3b6ol",
        ),
    ],
)
def test_spec_examples(raw: bytes, kind: IdKind, text: str) -> None:
    """The worked examples of spec/ids.md: changing the format would break every id held."""
    assert encode_id(raw, kind) == text
    assert decode_id(text, kind) == raw
