"""Local download mirror for boot tests: apt repository, release files and model registry.

One HTTP server on 127.0.0.1 serves everything a booted test machine downloads:

    /apt/...                 a flat apt repository (Packages, Release, .deb files)
    /ollama/v<ver>/...       the Ollama release archive
    /nvidia/<ver>/...        the NVIDIA driver installer
    /v2/<ns>/<model>/...     an Ollama model registry (manifests and blobs), served by
                             the stand-in registry of tests/standin/ollama_server.py

Every request is appended to an access log as one JSON object per line, so a test
can tell whether a boot downloaded something again. It runs as its own process
inside the test network namespace:

    python3 mirror.py --root DIR --port 8080 --access-log FILE
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "standin"))
import ollama_server  # noqa: E402 - the stand-in lives beside this package, not on sys.path

log = logging.getLogger("boot-mirror")

CHUNK_BYTES = 256 * 1024


class MirrorHandler(ollama_server.RegistryHandler):
    """Serves static files under ROOT and delegates /v2/ to the stand-in registry."""

    root: Path
    access_log: Path
    access_lock = threading.Lock()

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def end_headers(self) -> None:
        # Lets the harness tell this mirror from an older one still bound to the port.
        self.send_header("X-Boot-Mirror-Pid", str(os.getpid()))
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 - name fixed by the base class
        self._status = 0
        started = time.time()
        try:
            if self.path.startswith("/v2/"):
                super().do_GET()
            else:
                self._send_file()
        finally:
            self._record(started)

    def _send_file(self) -> None:
        relative = Path(self.path.split("?", 1)[0].lstrip("/"))
        # The root may hold symlinks to shared files, so check the request path itself.
        target = self.root / relative
        if ".." in relative.parts or not target.is_file():
            self._reply(404, b"not found\n", "text/plain")
            return
        size = target.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        with target.open("rb") as handle:
            for piece in iter(lambda: handle.read(CHUNK_BYTES), b""):
                self.wfile.write(piece)

    def _record(self, started: float) -> None:
        entry = {
            "time": started,
            "method": self.command,
            "path": self.path,
            "status": self._status,
            "range": self.headers.get("Range"),
        }
        with self.access_lock, self.access_log.open("a") as log_file:
            log_file.write(json.dumps(entry) + "\n")

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - name fixed by the base class
        log.debug("%s %s", self.address_string(), format % args)


def make_mirror(root: Path, port: int, access_log: Path, registry_speed: float,
                model_size: str | None) -> ThreadingHTTPServer:
    """Build (but do not start) the mirror bound to 127.0.0.1:PORT."""
    handler = type("BoundMirrorHandler", (MirrorHandler,), {
        "root": root.resolve(),
        "access_log": access_log,
        "allowed": set(),
        "model_size": staticmethod(ollama_server.parse_per_model(model_size, 8 * 1024 * 1024)),
        "speed": registry_speed,
        "blobs": {},
    })
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description="Serve the boot tests' downloads on 127.0.0.1.")
    parser.add_argument("--root", type=Path, required=True, help="directory of static files")
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--access-log", type=Path, required=True, help="JSON-lines access log to append to")
    parser.add_argument("--registry-speed", type=float, default=0.0,
                        help="model blob download speed in bytes/s; 0 = unlimited")
    parser.add_argument("--model-size", default=None,
                        help="bytes of each model's weights layer, one number or per model "
                             "('library/tiny:1b=1048576,*=4096')")
    arguments = parser.parse_args()
    logging.basicConfig(level=os.environ.get("BOOT_MIRROR_LOG_LEVEL", "INFO"),
                        format="%(asctime)s boot-mirror %(levelname)s %(message)s")

    server = make_mirror(arguments.root, arguments.port, arguments.access_log,
                         arguments.registry_speed, arguments.model_size)
    log.info("serving %s on 127.0.0.1:%d", arguments.root, arguments.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
