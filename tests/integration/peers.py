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
    Every request is recorded as (method, path, headers dict, body bytes) in self.requests."""

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
                    owner.requests.append((method, self.path, dict(self.headers.items()), body))
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

    def __init__(self, target_port, prefix="", transform=None, rewrite=None):
        super().__init__()
        self.target_port = target_port
        self.prefix = prefix
        self.transform = transform
        self.rewrite = rewrite  # path -> path actually asked of the target

    def handle(self, h, method, body):
        c = http.client.HTTPConnection("127.0.0.1", self.target_port, timeout=60)
        hdrs = {k: v for k, v in h.headers.items() if k.lower() in ("accept", "content-type")}
        path = self.rewrite(h.path) if self.rewrite else h.path
        c.request(method, self.prefix + path, body=body or None, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        status, headers = r.status, [(k, v) for k, v in r.getheaders()
                                     if k.lower() in ("content-type", "warning")]
        c.close()
        if self.transform:
            status, headers, data = self.transform(method, h.path, status, headers, data, h.headers)
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


def make_ca(d, name):
    """A test CA (name.key, name.crt) in directory d."""
    harness.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "%s/%s.key" % (d, name),
                 "-out", "%s/%s.crt" % (d, name), "-subj", "/CN=dwb-test-%s" % name, "-days", "2"], check=True)


def make_server_cert(d, ca, name, san):
    """A server certificate name.crt/name.key signed by CA ca, with subjectAltName san ("IP:127.0.0.1")."""
    ext = "%s/%s.ext" % (d, name)
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\n" % san)
    harness.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "%s/%s.key" % (d, name),
                 "-out", "%s/%s.csr" % (d, name), "-subj", "/CN=%s" % name], check=True)
    harness.run(["openssl", "x509", "-req", "-in", "%s/%s.csr" % (d, name), "-CA", "%s/%s.crt" % (d, ca),
                 "-CAkey", "%s/%s.key" % (d, ca), "-CAcreateserial", "-out", "%s/%s.crt" % (d, name), "-days", "2",
                 "-extfile", ext], check=True)


def _shared_dir(workdir, name):
    """A directory the daemons' unprivileged workers can write to when the suite runs as root (nginx workers and
    squid drop to another user): the work dir gets o+x, the directory o+rwx."""
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    if os.geteuid() == 0:
        os.chmod(workdir, 0o711)
        os.chmod(d, 0o777)
    return d


class Nginx(harness.Server):
    """nginx as a TLS terminator with HTTP/2 in front of an HTTP upstream on upstream_port. The access log
    records the protocol of each request ($server_protocol): access_log() returns its lines."""

    def __init__(self, workdir, upstream_port, cert, key):
        binary = need_binary("nginx", "nginx-light")
        super().__init__("nginx", workdir)
        self.port = harness.free_port()
        d = _shared_dir(workdir, "nginx")
        self.access_path = os.path.join(d, "access.log")
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""daemon off;
worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log info;
events { worker_connections 64; }
http {
    log_format proto '$request_method $request_uri $server_protocol $status $ssl_protocol';
    access_log %(d)s/access.log proto;
    client_body_temp_path %(d)s/body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    client_max_body_size 0;
    server {
        listen 127.0.0.1:%(port)d ssl http2;
        ssl_certificate %(cert)s;
        ssl_certificate_key %(key)s;
        location / {
            proxy_pass http://127.0.0.1:%(up)d;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
        }
    }
}
""" % {"d": d, "port": self.port, "cert": cert, "key": key, "up": upstream_port})
        self._start([binary, "-p", d, "-e", os.path.join(d, "error.log"), "-c", conf])
        harness.wait_port(self.port, self.proc, log=self.log_path)

    def access_log(self):
        try:
            with open(self.access_path) as f:
                return f.read().splitlines()
        except OSError:
            return []


class Squid(harness.Server):
    """squid as a forward proxy that allows CONNECT to the given ports only; the access log shows each CONNECT
    (squid writes a tunnel's line when the tunnel closes)."""

    def __init__(self, workdir, connect_ports):
        binary = need_binary("squid", "squid")
        super().__init__("squid", workdir)
        self.port = harness.free_port()
        d = _shared_dir(workdir, "squid")
        self.access_path = os.path.join(d, "access.log")
        conf = os.path.join(d, "squid.conf")
        user = "cache_effective_user proxy\n" if os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write("""http_port 127.0.0.1:%(port)d
pid_filename %(d)s/squid.pid
access_log stdio:%(d)s/access.log squid
cache_log %(d)s/cache.log
cache_store_log none
coredump_dir %(d)s
cache deny all
pinger_enable off
visible_hostname dwb-test-squid
shutdown_lifetime 1 seconds
buffered_logs off
%(user)sacl test_ports port %(ports)s
acl CONNECT method CONNECT
acl client src 127.0.0.1/32
http_access deny CONNECT !test_ports
http_access allow client
http_access deny all
""" % {"d": d, "port": self.port, "user": user, "ports": " ".join(str(p) for p in connect_ports)})
        self._start([binary, "-N", "-f", conf])
        harness.wait_port(self.port, self.proc, log=os.path.join(d, "cache.log"))

    def access_log(self):
        try:
            with open(self.access_path) as f:
                return f.read().splitlines()
        except OSError:
            return []
