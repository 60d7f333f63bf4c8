"""Harness for tests against real DICOM peers, on loopback only.

* :mod:`tests.pacs.netns` - ``isolated_network()``: the calling thread enters a fresh
  network namespace with only ``lo`` up (everything started inside stays there);
  ``free_port()``; ``isolation_unavailable_reason()`` for ``pytest.skip``.
* :mod:`tests.pacs.orthanc` - ``OrthancServer``: Orthanc 1.10 started from the shipped
  ``deploy/orthanc/orthanc.json`` + routing Lua, with REST and DICOMweb (QIDO-RS) helpers.
* :mod:`tests.pacs.dcmtk` - ``StoreSCP`` (dcmtk storescp as a receiving node),
  ``storescu()`` (send files), ``wait_until()``, ``wait_for_port()``.

Typical use (from the main thread, e.g. a module-scoped fixture)::

    with isolated_network():
        with StoreSCP(tmp / "in", ae_title="DERMAI") as dermpacs, \\
             OrthancServer(tmp / "orthanc", dermpacs.port) as pacs:
            pacs.upload(photo_path)
"""
