"""Fuzzing the node: malformed photographs through a real association (issue 11).

Hypothesis mutates the data set of a valid photograph (flipped, inserted, deleted bytes,
truncation) and pynetdicom sends the bytes as they are. Every time: an answer (a C-STORE
status, never silence or an abort), the node still answers C-ECHO, and whatever was
acknowledged is in the spool, byte for byte, with its job store row. Bounded: a fixed
number of examples (``DERMPACS_FUZZ_EXAMPLES``, default 60) of a few kB each.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import generate_uid
from pynetdicom.dsutils import split_dataset

from dicom.encode import write_dataset
from tests.test_service_listener import Node, associate, make_photo, send_file_raw

EXAMPLES = int(os.environ.get("DERMPACS_FUZZ_EXAMPLES", "60"))

_op = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.floats(0, 1, exclude_max=True), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(0)),
    # the header (element tags, VRs, lengths) is where a parser is most easily upset
    st.tuples(st.just("flip"), st.floats(0, 0.05, exclude_max=True), st.integers(0, 255)),
)


def _mutate(body: bytes, ops: list) -> bytes:
    data = bytearray(body)
    for kind, where, arg in ops:
        if not data:
            break
        pos = int(where * len(data))
        if kind == "flip":
            data[pos] = arg
        elif kind == "insert":
            data[pos:pos] = arg
        elif kind == "delete":
            del data[pos:pos + arg]
        else:
            del data[pos:]
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory):
    node = Node(tmp_path_factory.mktemp("fuzz"))
    yield node
    node.close()


def test_malformed_photographs_always_get_an_answer_and_nothing_acknowledged_is_lost(fuzz_node, tmp_path_factory):
    node, folder = fuzz_node, tmp_path_factory.mktemp("cases")
    acknowledged: dict[str, bytes] = {}
    answers: list[int] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(ops=st.lists(_op, min_size=1, max_size=4))
    def one(ops):
        ds = make_photo()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # one per case
        good = write_dataset(ds, folder / "good.dcm")
        raw = good.read_bytes()
        _, offset = split_dataset(good)
        body = _mutate(raw[offset:], ops)
        case = folder / "case.dcm"
        case.write_bytes(raw[:offset] + body)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            status = send_file_raw(node.port, case)  # raises if the association failed: no answer
        assert status in (0x0000, 0xA700, 0xA900, 0xC210), hex(status)
        answers.append(status)
        if status == 0x0000:
            acknowledged[str(ds.SOPInstanceUID)] = body
        assoc = associate(node.port)  # the service is up
        assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
        assoc.release()

    one()
    assert len(answers) >= min(EXAMPLES, 20)
    print("fuzz answers:", {hex(s): answers.count(s) for s in set(answers)})
    for uid, body in acknowledged.items():  # every success is durable, byte for byte, and recorded
        digest = node.store.current_digest(uid)
        assert digest is not None, uid
        path = node.spool.instance_path(uid)
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest[0] and data.endswith(body)
    assert len(node.spooled()) == len(acknowledged)
