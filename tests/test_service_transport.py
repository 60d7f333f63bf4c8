"""Every association dermpacs opens or accepts has Nagle's algorithm off (TCP_NODELAY).

Without it each small DIMSE write waits for the peer's delayed ACK (~40 ms per C-STORE of
an SR, and per response); benchmarks/bench_service.py shows the effect on study latency.
"""

from __future__ import annotations

import socket

from pynetdicom import AE, evt
from pynetdicom.sop_class import SegmentationStorage

from dicom.service.config import Destination, ServiceConfig
from dicom.service.sender import ResultSender
from dicom.service.store import JobStore
from tests.test_service_listener import associate, node, node_factory  # noqa: F401 - the listener fixtures


def _nodelay(assoc) -> bool:
    return assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_listener_sockets_have_nodelay(node):  # noqa: F811
    assoc = associate(node.listener.port)
    try:
        assert assoc.is_established
        accepted = [a for a in node.listener.ae.active_associations]
        assert accepted and all(_nodelay(a) for a in accepted)
        assert not _nodelay(assoc)  # the plain pynetdicom client: the default is Nagle on
    finally:
        assoc.release()


def test_sender_sockets_have_nodelay(tmp_path, monkeypatch):
    """The real ResultSender delivering a result: its association's socket has TCP_NODELAY."""
    from tests.test_service_sender import result_file

    seen: list[bool] = []
    original = AE.associate

    def associate_and_look(self, *args, **kwargs):
        assoc = original(self, *args, **kwargs)
        if assoc.is_established:
            seen.append(_nodelay(assoc))
        return assoc

    monkeypatch.setattr(AE, "associate", associate_and_look)
    peer = AE("PACS")
    peer.add_supported_context(SegmentationStorage)
    server = peer.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
    config = ServiceConfig(data_dir=tmp_path / "data",
                           destination=Destination.parse(f"PACS@127.0.0.1:{server.server_address[1]}"))
    store = JobStore(config.database)
    try:
        job_id = store.create_job("1.2.3", "1.2.3.4", "app", "rule", [])
        store.claim_next_job()
        path, uid = result_file(tmp_path, SegmentationStorage, "1.2.3")
        store.finish_analysis(job_id, [(path, uid, SegmentationStorage)], config.destination.describe(), {"app": "app"})
        assert ResultSender(config, store).send_due() == 1
    finally:
        store.close()
        server.shutdown()
    assert seen == [True]
