"""A real Orthanc (Debian packages ``orthanc`` + ``orthanc-dicomweb``) for network tests.

Why a real PACS: dermpacs must interoperate with what hospitals run, and Orthanc's
C-STORE SCP, its Lua auto-routing and its DICOMweb plugin are exactly what
``deploy/orthanc/`` ships for administrators. Each :class:`OrthancServer` is a private
Orthanc process with its own storage in a temporary folder, on free ports.

Orthanc 1.10 listens on all interfaces (no bind-address option): start it only inside
:func:`tests.pacs.netns.isolated_network`, where loopback is the only interface.

Example::

    with isolated_network(), StoreSCP(tmp / "in") as dermpacs, \\
         OrthancServer(tmp / "orthanc", dermpacs_port=dermpacs.port) as pacs:
        pacs.upload("photo.dcm")            # the router forwards it to dermpacs
        pacs.find_instances(study_uid, "SEG")  # QIDO-RS, after dermpacs stored back
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from .dcmtk import dcmtk_environment, wait_until
from .netns import free_port, require_isolation

__all__ = ["OrthancServer", "ROUTER_LUA", "DEPLOY_CONFIG", "read_orthanc_json", "orthanc_binary", "dicomweb_plugin"]

REPO = Path(__file__).resolve().parents[2]
ROUTER_LUA = REPO / "deploy" / "orthanc" / "route-to-dermpacs.lua"
"""The routing script administrators install; tests run exactly this file."""
DEPLOY_CONFIG = REPO / "deploy" / "orthanc" / "orthanc.json"
"""The example production configuration :class:`OrthancServer` starts from."""

_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",  # Debian: symlink to /usr/lib/orthanc/...so.1.7
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)

# No proxy, ever: tests talk to 127.0.0.1 inside their own namespace only.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def orthanc_binary() -> str:
    """Path of the Orthanc executable (Debian installs it in /usr/sbin, off a user's PATH)."""
    path = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        raise FileNotFoundError("Orthanc not found: apt-get install orthanc orthanc-dicomweb")
    return path


def dicomweb_plugin() -> str:
    """Path of the DICOMweb plugin library (``dpkg -L orthanc-dicomweb``); env ORTHANC_DICOMWEB_PLUGIN overrides."""
    override = os.environ.get("ORTHANC_DICOMWEB_PLUGIN")
    for candidate in ([override] if override else []) + list(_PLUGIN_CANDIDATES):
        if Path(candidate).exists():
            return candidate
    raise FileNotFoundError("DICOMweb plugin not found: apt-get install orthanc-dicomweb")


def read_orthanc_json(path: str | Path) -> dict[str, Any]:
    """Parse an Orthanc configuration file: JSON plus ``//`` and ``/* */`` comments (as Orthanc's JsonCpp reads it)."""
    text = Path(path).read_text()
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':  # copy a string literal whole, escapes included
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            i = text.index("*/", i + 2) + 2
        else:
            out.append(c)
            i += 1
    return json.loads("".join(out))


class OrthancServer:
    """One Orthanc process: config, storage and log in ``workdir``; DICOM and HTTP on free ports.

    The configuration is the shipped production example, ``deploy/orthanc/orthanc.json``
    (so every test that uses this class also tests what administrators install), with
    only what a test must change replaced: storage in ``workdir``, free ports, the
    DICOMweb plugin by path (the example loads Debian's plugin folder and relies on
    Debian's dicomweb.json), the routing script from this checkout, no HTTP
    authentication, no saved jobs, and the ``dermpacs`` modality pointed at
    ``dermpacs_aet`` on 127.0.0.1:``dermpacs_port``. As in production, only listed
    modalities may store (dermpacs may store back). ``modalities`` replaces the
    example's other peers (name -> [AET, host, port] or Orthanc's object form);
    ``extra_config`` overrides any top-level key last. ``router=False`` leaves the Lua
    script out (an Orthanc that only stores).
    """

    def __init__(
        self,
        workdir: str | Path,
        dermpacs_port: int,
        *,
        dermpacs_aet: str = "DERMAI",
        aet: str = "ORTHANC",
        router: bool = True,
        modalities: dict[str, Any] | None = None,
        extra_config: dict[str, Any] | None = None,
    ):
        self.workdir = Path(workdir)
        self.aet = aet
        self.dicom_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.dicom_port:
            self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log_path = self.workdir / "orthanc.log"
        self.config_path = self.workdir / "orthanc.json"
        self.config: dict[str, Any] = read_orthanc_json(DEPLOY_CONFIG)
        dermpacs = dict(self.config["DicomModalities"]["dermpacs"])
        dermpacs.update({"AET": dermpacs_aet, "Host": "127.0.0.1", "Port": dermpacs_port})
        self.config.update({
            "Name": "dermpacs-test",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "LuaScripts": [str(ROUTER_LUA)] if router else [],
            "DicomModalities": {"dermpacs": dermpacs, **(modalities or {})},
            "SaveJobs": False,
        })
        self.config.update(extra_config or {})
        self._process: subprocess.Popen | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> "OrthancServer":
        """Write the config, start Orthanc, return once GET /system answers."""
        require_isolation("Orthanc")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config, indent=2))
        log = open(self.log_path, "ab")
        self._process = subprocess.Popen(
            [orthanc_binary(), "--no-jobs", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
            env=dcmtk_environment(),
        )
        log.close()

        def up() -> bool:
            if self._process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                return self.get_json("/system").get("DicomAet") == self.aet
            except (OSError, ValueError):
                return False

        try:
            wait_until(up, timeout, what="Orthanc's REST API")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM and wait (Orthanc 1.10 takes about 3 s to close its servers); kill if stuck."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> "OrthancServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, chars: int = 4000) -> str:
        """The end of Orthanc's log, for assertion messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    # -- REST --------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30.0) -> bytes:
        """One HTTP request to this Orthanc; HTTPError (with Orthanc's message) on non-2xx."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        with _HTTP.open(req, timeout=timeout) as response:
            return response.read()

    def get_json(self, path: str) -> Any:
        return json.loads(self.request("GET", path))

    def post_json(self, path: str, payload: Any) -> Any:
        body = json.dumps(payload).encode()
        return json.loads(self.request("POST", path, body, {"Content-Type": "application/json"}))

    def upload(self, file: str | Path | bytes) -> dict[str, Any]:
        """POST /instances (REST upload, origin "RestApi"); returns Orthanc's answer (ID, Status)."""
        data = file if isinstance(file, bytes) else Path(file).read_bytes()
        return json.loads(self.request("POST", "/instances", data, {"Content-Type": "application/dicom"}))

    def instances(self) -> list[str]:
        """Orthanc IDs of all stored instances."""
        return self.get_json("/instances")

    def studies(self) -> list[str]:
        """Orthanc IDs of all stored studies."""
        return self.get_json("/studies")

    def qido_instances(self, study_uid: str, **filters: str) -> list[dict[str, Any]]:
        """QIDO-RS ``/dicom-web/studies/{uid}/instances?KEY=VALUE``: DICOM JSON objects.

        Goes through the DICOMweb plugin, the way OHIF and STOW/QIDO clients see the
        archive, rather than Orthanc's own REST API.
        """
        query = ("?" + urllib.parse.urlencode(filters)) if filters else ""
        path = f"/dicom-web/studies/{urllib.parse.quote(study_uid)}/instances{query}"
        body = self.request("GET", path, headers={"Accept": "application/dicom+json"})
        return json.loads(body) if body.strip() else []

    def find_instances(self, study_uid: str, modality: str) -> list[str]:
        """SOP Instance UIDs in study ``study_uid`` with Modality ``modality`` (e.g. SEG, SR), by QIDO-RS."""
        return sorted(
            item["00080018"]["Value"][0] for item in self.qido_instances(study_uid, Modality=modality)
        )

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored DICOM file of an instance (GET /instances/{id}/file)."""
        return self.request("GET", f"/instances/{orthanc_id}/file")

    def lookup_instance(self, sop_instance_uid: str) -> str | None:
        """Orthanc ID of the instance with this SOP Instance UID, or None."""
        body = self.request("POST", "/tools/lookup", sop_instance_uid.encode())
        hits = [h for h in json.loads(body) if h.get("Type") == "Instance"]
        return hits[0]["ID"] if hits else None

    def dataset(self, sop_instance_uid: str) -> Dataset:
        """The stored instance with this SOP Instance UID, parsed (KeyError if absent)."""
        orthanc_id = self.lookup_instance(sop_instance_uid)
        if orthanc_id is None:
            raise KeyError(sop_instance_uid)
        return pydicom.dcmread(io.BytesIO(self.instance_file(orthanc_id)))

    def jobs(self) -> list[dict[str, Any]]:
        """All jobs Orthanc remembers (GET /jobs?expand): the router's forwards are DicomModalityStore jobs."""
        return self.get_json("/jobs?expand")

    def wait_jobs_done(self, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until no job is Pending, Running or Retry; return all jobs.

        Only jobs already submitted count: the router submits its job from Orthanc's
        Lua event thread, a moment after the upload has returned.
        """

        def done():
            jobs = self.jobs()
            finished = all(j["State"] in ("Success", "Failure", "Paused") for j in jobs)
            return (jobs,) if finished else None

        return wait_until(done, timeout, what="Orthanc's jobs to finish")[0]
