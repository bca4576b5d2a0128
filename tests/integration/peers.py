"""Peers for integration tests that harness.py does not provide: small standard-library HTTP stores that
misbehave on purpose (hold requests until the test releases them, answer more than they were asked, count
requests) and real third-party servers (nginx, squid) started from configs written into the test's work dir.
Not a test module itself (the name does not start with test_)."""
import http.client
import http.server
import json
import os
import re
import shutil
import socketserver
import subprocess
import threading
import time
import unittest

import harness


class HttpPeer:
    """A threading HTTP server on a free loopback port; handle(handler, method) does the work.
    Every request is recorded as (method, path, headers dict) in self.requests."""

    def __init__(self):
        owner = self
        self.requests = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self, method):
                body = b""
                n = int(self.headers.get("Content-Length", 0) or 0)
                if n:
                    body = self.rfile.read(n)
                with owner.lock:
                    owner.requests.append((method, self.path, dict(self.headers.items())))
                    owner.arrived.notify_all()
                owner.handle(self, method, body)

            def do_GET(self):
                self._any("GET")

            def do_POST(self):
                self._any("POST")

            def log_message(self, *a):
                pass

        self.srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.srv.allow_reuse_address = True
        self.port = self.srv.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def wait_requests(self, n, timeout=30, match=None):
        """Waits until n requests (whose path contains match, if given) have arrived; returns them."""
        def hits():
            return [r for r in self.requests if match is None or match in r[1]]
        with self.lock:
            if not self.arrived.wait_for(lambda: len(hits()) >= n, timeout):
                raise AssertionError("expected %d request(s)%s at the store within %d s, saw %s" % (
                    n, " matching %r" % match if match else "", timeout, [r[:2] for r in self.requests]))
            return hits()

    @staticmethod
    def reply(h, code, body=b"", ctype="application/dicom+json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        h.send_response(code)
        for k, v in headers:
            h.send_header(k, v)
        if body or code != 204:
            h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def handle(self, h, method, body):
        self.reply(h, 404, b"")

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def study_json(uid, name="TEST^PATIENT", pid="P1", date="20200101", modalities=("CT",)):
    return {"0020000D": {"vr": "UI", "Value": [uid]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
            "00100020": {"vr": "LO", "Value": [pid]},
            "00080020": {"vr": "DA", "Value": [date]},
            "00080061": {"vr": "CS", "Value": list(modalities)}}


class HeldStore(HttpPeer):
    """Answers QIDO-RS /studies with fixed studies, but only once the test calls release(): a request that
    is really in progress for as long as the test needs, without guessing durations."""

    def __init__(self, studies):
        super().__init__()
        self.studies = studies
        self.released = threading.Event()

    def release(self):
        self.released.set()

    def handle(self, h, method, body):
        self.released.wait(60)
        if h.path.split("?")[0].endswith("/studies"):
            self.reply(h, 200, self.studies)
        else:
            self.reply(h, 200, [])


class ProxyStore(HttpPeer):
    """Forwards every request to target (host, port); transform(method, path, status, headers, body) may
    change the answer. Records requests like every HttpPeer."""

    def __init__(self, target_port, prefix="", transform=None):
        super().__init__()
        self.target_port = target_port
        self.prefix = prefix
        self.transform = transform

    def handle(self, h, method, body):
        c = http.client.HTTPConnection("127.0.0.1", self.target_port, timeout=60)
        hdrs = {k: v for k, v in h.headers.items() if k.lower() in ("accept", "content-type")}
        c.request(method, self.prefix + h.path, body=body or None, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        status, headers = r.status, [(k, v) for k, v in r.getheaders()
                                     if k.lower() in ("content-type", "warning")]
        c.close()
        if self.transform:
            status, headers, data = self.transform(method, h.path, status, headers, data)
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def need_binary(name, package):
    """Path of a Debian-packaged binary the test needs. Missing: skip only when scripts/install-deps installs
    the package (CI then has it); otherwise fail, since the skip would hide a gap in the dependencies."""
    for d in (os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin"]):
        p = os.path.join(d, name)
        if d and os.access(p, os.X_OK):
            return p
    with open(os.path.join(harness.SOURCE_DIR, "scripts", "install-deps")) as f:
        listed = re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(package), f.read()) is not None
    if listed:
        raise unittest.SkipTest("%s (Debian package %s) is not installed; scripts/install-deps installs it" % (name, package))
    raise AssertionError("%s is missing and scripts/install-deps does not install %s" % (name, package))
