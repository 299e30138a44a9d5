"""A real Orthanc PACS and dcmtk tools for the DICOM node tests and benchmark.

:class:`OrthancServer` runs the Debian ``Orthanc`` binary with its own generated JSON configuration
(loopback only, free ports, a temporary storage folder, no plugins, no authentication): it never
reads ``/etc/orthanc`` nor touches a system Orthanc service. :func:`require_tools` decides what a
test does when Orthanc or dcmtk is missing: fail under ``CI=true``, else skip with how to install.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
INSTALL_HINT = "install them with `sudo apt-get install -y orthanc dcmtk` (Debian/Ubuntu)"


def find_dcmtk(name: str) -> str | None:
    """The dcmtk tool ``name`` (``storescu``, ``echoscu``): pynetdicom installs apps of the same names."""
    for candidate in (f"/usr/bin/{name}", shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            try:
                out = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue
            if "dcmtk" in out.lower():
                return candidate
    return None


def find_orthanc() -> str | None:
    return shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if Path(p).exists()), None
    )


def require_tools() -> dict[str, str]:
    """``{"Orthanc", "storescu", "echoscu"}`` -> paths; fail (CI) or skip (elsewhere) when one is missing."""
    tools = {"Orthanc": find_orthanc(), "storescu": find_dcmtk("storescu"), "echoscu": find_dcmtk("echoscu")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        unavailable(f"{', '.join(missing)} not found: {INSTALL_HINT}")
    return tools  # type: ignore[return-value]


def unavailable(message: str) -> None:
    """Fail the test in CI (``CI=true``), skip it elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI: {message}", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OrthancServer:
    """One Orthanc process on loopback with its own config and storage (module docstring).

    Args:
        folder: holds ``orthanc.json``, ``storage/`` and ``orthanc.log``.
        binary: the ``Orthanc`` executable.
        aet: Orthanc's AE title.
        modalities: ``{name: [AET, host, port]}``: the AEs allowed to store (only these, only from their host).
        dicomweb: load the DICOMweb plugin (Debian ``orthanc-dicomweb``) for STOW-RS at ``/dicom-web/``.
    """

    def __init__(
        self, folder: Path, binary: str, aet: str = "ORTHANC", modalities: dict | None = None, dicomweb: bool = False
    ) -> None:
        self.folder = folder
        self.binary = binary
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.modalities = modalities or {}
        self.dicomweb = dicomweb
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def destination(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def config(self) -> dict[str, Any]:
        storage = str(self.folder / "storage")
        return {
            "Name": "adaloss-test",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomModalities": self.modalities,
            "DicomAlwaysAllowStore": not self.modalities,
            "DicomCheckModalityHost": True,
            "Plugins": [DICOMWEB_PLUGIN] if self.dicomweb else [],
            "DicomWeb": {"Enable": self.dicomweb, "Root": "/dicom-web/"},
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
            "StorageCompression": False,
            "SaveJobs": False,
        }

    def start(self, timeout: float = 30.0) -> None:
        """Start Orthanc and wait until its REST API answers; fail/skip (:func:`unavailable`) if it does not."""
        config = {k: v for k, v in self.config().items() if v is not None}
        (self.folder / "orthanc.json").write_text(json.dumps(config, indent=1))
        log = (self.folder / "orthanc.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, str(self.folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
            cwd=self.folder, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                self.get("/system")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        tail = (self.folder / "orthanc.log").read_text(errors="replace")[-2000:]
        self.stop()
        unavailable(f"Orthanc did not start (log tail: {tail})")

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 20 s) and wait for it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def post(self, path: str, payload: Any) -> Any:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def find_instances(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """``/tools/find`` at instance level, expanded (``MainDicomTags``, ``ID``, ...)."""
        return self.post("/tools/find", {"Level": "Instance", "Query": query, "Expand": True})

    def sr_instances(self) -> list[dict[str, Any]]:
        """Every SR instance Orthanc holds (found through its series' Modality)."""
        series = self.post("/tools/find", {"Level": "Series", "Query": {"Modality": "SR"}, "Expand": True})
        return [self.get(f"/instances/{i}") for s in series for i in s["Instances"]]

    def instance_file(self, orthanc_id: str) -> bytes:
        with urllib.request.urlopen(f"{self.url}/instances/{orthanc_id}/file", timeout=10) as response:
            return response.read()


def storescu(tool: str, port: int, files: list[Path], calling: str = "STORESCU", called: str = "ADALOSS",
             timeout: float = 120.0, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:  # fmt: skip
    """Send ``files`` with dcmtk's ``storescu`` (verbose, so statuses are in the output)."""
    command = [tool, "-v", "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
