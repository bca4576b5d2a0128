"""A small S3-compatible bucket server over a folder, for the IDC tests: <root>/<bucket>/<key> served path style
(GET /<bucket>/<key>), ListObjectsV2 (list-type=2, prefix, max-keys, continuation-token; pages of at most
`page_size` keys whatever max-keys asks, so that paging happens with few objects) and the V1 listing (marker; no
NextMarker, as S3 without a delimiter, so the client must continue from the last key). Anonymous. Modes:
v2_refused (ListObjectsV2 answered 400 with an S3 <Error>, as some S3-compatible stores do), missing (keys
answered 404 NoSuchKey), delay (seconds slept before answering each object GET: a slow or far bucket). Objects
are sent with sendfile, so that the emulator is not what limits a benchmark. Every request is logged, with the
time it arrived (time.monotonic(), the system's CLOCK_MONOTONIC), for the tests to count."""
import base64
import http.server
import os
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


class BucketStore:
    def __init__(self, root, page_size=1000, v2_refused=False, missing=(), delay=0.0):
        self.root = root
        self.delay = delay
        self.page_size = page_size
        self.v2_refused = v2_refused
        self.missing = set(missing)  # "bucket/key" answered 404
        self.lock = threading.Lock()
        self.log = []  # (method, path with query, code, arrival time)
        store = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                store._serve(self, time.monotonic())

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def put(self, bucket, key, data):
        path = os.path.join(self.root, bucket, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    # ---- what the tests count ----
    def requests(self):
        with self.lock:
            return list(self.log)

    def listings(self, version=None):
        out = []
        for m, p, c, _ in self.requests():
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(p).query, keep_blank_values=True)
            if "prefix" not in q:
                continue
            v = 2 if q.get("list-type") == ["2"] else 1
            if version is None or v == version:
                out.append((p, c))
        return out

    def gets(self, since=None):
        """(path, code) of the object GETs, or of those that arrived after `since` (a time.monotonic() value)."""
        return [(p, c) for m, p, c, t in self.requests()
                if "?" not in p and p.count("/") >= 2 and (since is None or t > since)]

    # ---- serving ----
    def _answer(self, h, code, body, ctype="application/xml"):
        with self.lock:
            self.log.append((h.command, h.path, code, h.t_arrived))
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _error(self, h, code, s3code, msg):
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message></Error>'
                % (s3code, escape(msg))).encode()
        self._answer(h, code, body)

    def _keys(self, bucket):
        base = os.path.join(self.root, bucket)
        keys = []
        for d, _, files in os.walk(base):
            for f in files:
                keys.append(os.path.relpath(os.path.join(d, f), base).replace(os.sep, "/"))
        return sorted(keys)

    def _send_file(self, h, path):
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            with self.lock:
                self.log.append((h.command, h.path, 200, h.t_arrived))
            h.send_response(200)
            h.send_header("Content-Type", "application/octet-stream")
            h.send_header("Content-Length", str(size))
            h.end_headers()
            h.wfile.flush()
            h.connection.sendfile(f)

    def _serve(self, h, t_arrived):
        h.t_arrived = t_arrived
        u = urllib.parse.urlsplit(h.path)
        parts = urllib.parse.unquote(u.path).lstrip("/").split("/", 1)
        bucket = parts[0]
        if not bucket or not os.path.isdir(os.path.join(self.root, bucket)):
            return self._error(h, 404, "NoSuchBucket", "The specified bucket does not exist")
        if len(parts) == 2 and parts[1]:
            key = parts[1]
            path = os.path.normpath(os.path.join(self.root, bucket, key))
            if (bucket + "/" + key) in self.missing or not path.startswith(os.path.join(self.root, bucket) + os.sep) \
                    or not os.path.isfile(path):
                return self._error(h, 404, "NoSuchKey", "The specified key does not exist.")
            if self.delay:
                time.sleep(self.delay)
            return self._send_file(h, path)
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        v2 = q.get("list-type") == ["2"]
        if v2 and self.v2_refused:
            return self._error(h, 400, "InvalidArgument", "list-type=2 is not supported here")
        prefix = q.get("prefix", [""])[0]
        n = min(int(q.get("max-keys", ["1000"])[0]), self.page_size)
        keys = [k for k in self._keys(bucket) if k.startswith(prefix)]
        if v2 and "continuation-token" in q:
            after = base64.urlsafe_b64decode(q["continuation-token"][0].encode()).decode()
            keys = [k for k in keys if k > after]
        elif not v2 and "marker" in q:
            keys = [k for k in keys if k > q["marker"][0]]
        page, truncated = keys[:n], len(keys) > n
        out = ['<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="%s">' % NS,
               "<Name>%s</Name><Prefix>%s</Prefix><MaxKeys>%d</MaxKeys>" % (escape(bucket), escape(prefix), n)]
        if v2:
            out.append("<KeyCount>%d</KeyCount>" % len(page))
        out.append("<IsTruncated>%s</IsTruncated>" % ("true" if truncated else "false"))
        for k in page:
            size = os.path.getsize(os.path.join(self.root, bucket, k))
            out.append("<Contents><Key>%s</Key><LastModified>2025-01-01T00:00:00.000Z</LastModified>"
                       "<ETag>&quot;x&quot;</ETag><Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>"
                       % (escape(k), size))
        if v2 and truncated:
            out.append("<NextContinuationToken>%s</NextContinuationToken>"
                       % base64.urlsafe_b64encode(page[-1].encode()).decode())
        out.append("</ListBucketResult>")
        self._answer(h, 200, "".join(out).encode())
