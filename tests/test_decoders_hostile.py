"""Decoders of peer input that had no fuzz test yet (issue 23): each, given anything a
peer can send, raises only its own decode error, never anything else.

Two kinds of input for the signed structures: any bytes, and well-formed signed maps whose
fields are anything (signed by the key they name, so the checks past the signature run).
"""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.circleops import T_OPS, decode_ops_message
from p2pmoments.core import wire
from p2pmoments.core.blobs import decode_ref
from p2pmoments.core.circle_ops import OP_CONTEXT, decode_op
from p2pmoments.core.crypto import SigningKey
from p2pmoments.core.device_entries import RosterError
from p2pmoments.core.errors import DecodeError, RejectedError
from p2pmoments.core.manifest import REMOVAL_CONTEXT, decode_removal
from p2pmoments.core.pairing import decode_device_link
from p2pmoments.core.reach import T_REACH, BadReach, decode_reach
from p2pmoments.core.replication import messages

KEY = SigningKey(bytes(range(32)))
ME = bytes(KEY.verify_key)

# Any CBOR value a peer can send, a little deep (as tests/test_devices_hostile.py).
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=40)
    | st.binary(max_size=80)
    | st.sampled_from([ME, bytes(32), b"\x01" * 32])
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.integers(0, 12), inner, max_size=5)
    ),
    max_leaves=10,
)
fields = st.dictionaries(st.integers(0, 12), values, max_size=10)
KEYS = (ME, bytes(32), b"\x01" * 32)
keys32 = st.sampled_from(KEYS) | st.sampled_from(KEYS) | st.binary(min_size=31, max_size=33)
small = st.integers(-2, 2**40)


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value of `valid` four times in five, else anything (a one_of would not weigh it)."""
    junk = leaves | st.lists(leaves, max_size=2)
    return st.tuples(st.integers(0, 4), valid, junk).map(lambda t: t[1] if t[0] else t[2])


def near(template: dict[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[int, Any]]:
    """Maps shaped like `template`: each field of its own type or anything, some left out."""
    each = {k: mostly(v) for k, v in template.items()}
    return st.tuples(
        st.fixed_dictionaries(each), st.sets(st.sampled_from(sorted(template)), max_size=1)
    ).map(lambda pair: {k: v for k, v in pair[0].items() if k not in pair[1] or k == 5})


removals = near({2: keys32, 3: small, 4: keys32, 5: st.just(ME), 6: small})
# Each kind of op with the fields spec/devices.md section 6.3 gives it (and a stranger).
OP_FIELDS = {1: {9, 10}, 2: {8}, 3: {8}, 4: {9}, 5: {10}, 6: set(), 7: {8}}
OP_VALUES: dict[int, st.SearchStrategy[Any]] = {
    8: keys32,
    9: st.text(max_size=40),
    10: st.booleans(),
}


def parents(kind: int) -> st.SearchStrategy[list[bytes]]:
    if kind == 1:
        return st.just([])  # a create has none
    return st.lists(st.sampled_from(KEYS), min_size=1, max_size=2, unique=True).map(sorted)


ops = st.sampled_from(sorted(OP_FIELDS)).flatmap(
    lambda kind: near(
        {
            2: keys32,
            3: parents(kind),
            4: st.just(kind),
            5: st.just(ME),
            6: small,
            7: small,
        }
        | {k: OP_VALUES[k] for k in OP_FIELDS[kind]}
    )
)


def signed(body_fields: dict[int, Any], context: bytes, *, version: bool = True) -> bytes:
    """{1: body, 2: signature by KEY}, the body's version and signer set as asked."""
    if version:
        body_fields = {**body_fields, 1: 1}
    body = wire.encode_map(body_fields)
    return wire.encode_map({1: body, 2: KEY.sign(context + body)})


@settings(max_examples=60)
@given(st.binary(max_size=400), fields, ops)
def test_a_circle_op_of_any_bytes_or_fields_is_refused_with_its_own_error(
    raw: bytes, body: dict[int, Any], op: dict[int, Any]
) -> None:
    for data in (raw, signed(body, OP_CONTEXT), signed(op, OP_CONTEXT)):
        with contextlib.suppress(RosterError):  # any other error fails the test
            decode_op(data)


@settings(max_examples=60)
@given(st.dictionaries(st.integers(0, 3), values, max_size=3), st.lists(values, max_size=4))
def test_an_ops_message_of_any_shape_is_refused_with_its_own_error(
    body: dict[int, Any], ops: list[Any]
) -> None:
    for message in ({**body, 0: T_OPS}, {0: T_OPS, 1: ops}, body):
        with contextlib.suppress(RosterError):
            decode_ops_message(message)


@settings(max_examples=60)
@given(st.binary(max_size=300), fields, removals)
def test_a_removal_notice_of_any_bytes_or_fields_is_refused_with_its_own_error(
    raw: bytes, body: dict[int, Any], removal: dict[int, Any]
) -> None:
    for data in (raw, signed(body, REMOVAL_CONTEXT), signed(removal, REMOVAL_CONTEXT)):
        with contextlib.suppress(RejectedError):
            decode_removal(data)


@settings(max_examples=60)
@given(st.dictionaries(st.integers(0, 3), values, max_size=3), st.lists(values, max_size=4))
def test_a_reach_message_of_any_shape_is_refused_with_its_own_error(
    body: dict[int, Any], cards: list[Any]
) -> None:
    for message in ({**body, 0: T_REACH}, {0: T_REACH, 1: cards}, body):
        with contextlib.suppress(BadReach):
            decode_reach(message)


KINDS = sorted(
    getattr(messages, name) for name in dir(messages) if name.startswith("T_")
)  # every replication message kind


@settings(max_examples=60)
@given(st.sampled_from([*KINDS, 0, 99]), st.dictionaries(st.integers(1, 6), values, max_size=5))
def test_a_replication_message_of_any_fields_is_refused_with_its_own_error(
    kind: int, body: dict[int, Any]
) -> None:
    with contextlib.suppress(messages.BadMessage):
        messages.decode({**body, 0: kind})


@settings(max_examples=60)
@given(fields)
def test_a_blob_reference_of_any_fields_is_refused_with_its_own_error(body: dict[int, Any]) -> None:
    for ref in (body, {**body, 1: 1}, {**body, 1: 2}, [body]):
        with contextlib.suppress(DecodeError):
            decode_ref(ref)


@settings(max_examples=60)
@given(st.text(max_size=300), st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567/:", max_size=200))
def test_a_device_link_of_any_text_is_refused_with_its_own_error(text: str, b32: str) -> None:
    for candidate in (text, "P2PD:1/" + b32, b32):
        with contextlib.suppress(DecodeError):
            decode_device_link(candidate)
