"""A hostile QIDO-RS store cannot make the bridge's memory grow with what it sends: a 100 MB page, a page that
streams forever, and 8 MiB of empty objects ([{},{},...], which jansson would turn into ~600 MB) each fail the
C-FIND with a failure status and an ErrorComment, the bridge's peak RSS (VmHWM) stays under 300 MB, and it keeps
serving. The store is a small stdlib HTTP server in this process."""
import http.server
import os
import re
import threading
import time

import harness
from harness import Bridge, TestCase, echoscu, findscu

HUGE = 100 * 1000 * 1000
TINY_OBJECTS = 8 * 1024 * 1024
RSS_LIMIT_KB = 300 * 1024


def status_of(p):
    m = re.findall(r"DIMSE Status\s*:\s*(0x[0-9a-fA-F]{4})", p.stdout)
    return m[-1].lower() if m else None


def comment_of(p):
    m = re.findall(r"\(0000,0902\) LO \[([^\]]*)\]", p.stdout)
    return m[-1] if m else ""


def vmhwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


class HostileStore:
    """/huge: a 100 MB JSON array with Content-Length; /forever: a chunked array that never ends;
    /tiny: 8 MiB of [{},{},...]; /ok: an empty array."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                kind = self.path.split("/")[1]
                chunk = b"{}," * 21845  # 65535 bytes
                try:
                    if kind == "huge":
                        self.send_response(200)
                        self.send_header("Content-Type", "application/dicom+json")
                        self.send_header("Content-Length", str(HUGE))
                        self.end_headers()
                        self.wfile.write(b"[")
                        sent = 1
                        while sent < HUGE - 3:
                            part = chunk[:HUGE - 3 - sent]
                            self.wfile.write(part)
                            sent += len(part)
                        self.wfile.write(b"{}]"[:HUGE - sent])
                    elif kind == "forever":
                        self.send_response(200)
                        self.send_header("Content-Type", "application/dicom+json")
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        self.wfile.write(b"1\r\n[\r\n")
                        while True:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    elif kind == "tiny":
                        n = TINY_OBJECTS // 3
                        body = b"[" + b"{}," * (n - 1) + b"{}]"
                        self.send_response(200)
                        self.send_header("Content-Type", "application/dicom+json")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                    else:
                        self.send_response(200)
                        self.send_header("Content-Type", "application/dicom+json")
                        self.send_header("Content-Length", "2")
                        self.end_headers()
                        self.wfile.write(b"[]")
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, kind):
        return "http://127.0.0.1:%d/%s/dicom-web" % (self.port, kind)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class HostileQidoTest(TestCase):
    def test_hostile_pages_fail_fast_with_bounded_memory(self):
        store = HostileStore()
        self.addCleanup(store.close)
        kinds = ("huge", "forever", "tiny")
        # Under ASan, freed blocks wait in a quarantine of up to 256 MB before reuse: that is the sanitizer's
        # memory, not the bridge's, so the quarantine is kept small here to measure what the bridge holds.
        asan = os.environ.get("ASAN_OPTIONS", "")
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": k.upper(), "base_url": store.url(k), "max_retries": 0, "timeout_s": 60}
                          for k in kinds + ("ok",)],
            "spool": {"dir": os.path.join(self.workdir, "spool")}},
            env={"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=16"}))
        base = vmhwm_kb(bridge.proc.pid)
        for k in kinds:
            t0 = time.time()
            p, _ = findscu(bridge.port, k.upper(), ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
                           extra=["-d"], workdir=self.workdir)
            took = time.time() - t0
            st, comment = status_of(p), comment_of(p)
            hwm = vmhwm_kb(bridge.proc.pid)
            print("%s page: status %s in %.1f s, ErrorComment %r, bridge VmHWM %d MB (at start %d MB)" % (
                k, st, took, comment, hwm // 1024, base // 1024))
            self.assertIsNotNone(st, p.stdout[-1500:])
            self.assertTrue(st.startswith("0xa7") or st.startswith("0xc"), "%s page: expected a failure status, "
                            "saw %s" % (k, st))
            self.assertTrue(comment, "%s page: expected an ErrorComment, saw none:\n%s" % (k, p.stdout[-1500:]))
            self.assertLess(hwm, RSS_LIMIT_KB, "%s page: bridge peak RSS %d MB, expected under 300 MB" % (
                k, hwm // 1024))
            self.assertEqual(echoscu(bridge.port, k.upper()).returncode, 0, "%s page: bridge no longer serving" % k)
        p, _ = findscu(bridge.port, "OK", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], extra=["-d"],
                       workdir=self.workdir)
        self.assertEqual(status_of(p), "0x0000", "an honest store still works: " + p.stdout[-800:])


if __name__ == "__main__":
    harness.main()
