"""A DICOMweb store that misbehaves the way remote cloud stores do, in front of a real Orthanc: every request is
forwarded unless the test's policy says otherwise, and every STOW-RS request is recorded with the SOP Instance
UIDs it carried and what was answered. Standard library only.

policy(n, method, path, uids) -> action, where n counts STOW requests from 1 (0 for other requests), and action:
  None / "pass"                     forward to Orthanc, answer what it answered
  ("answer", code, headers, body)   answer this without forwarding (429 + Retry-After, 503, a proxy's HTML page)
  ("cut", fraction)                 read that fraction of the request body, then reset the connection
  ("hold", event)                   forward, then hold the answer until event is set (kill -9 in that window)
  ("fail", {uid: reason}[, code])   forward, then rewrite the answer: these instances failed with that reason, in
                                    an answer with that status (409 unless given)
  ("delay", seconds)                forward, answer after that delay (a far store)
  ("cut_answer", f)                 forward, then send the status line, the full Content-Length and only
                                    f(payload) bytes of the body (f: a fraction, 0 for the headers alone, or a
                                    function of the payload giving a byte count), and reset the connection: for a
                                    STOW-RS POST the store has stored the instances and the client never learns it
  ("rewrite", f)                    forward, then answer f(payload) instead of the payload (headers kept)

google=True makes the store answer conflicts the way the Google Healthcare API does, which Orthanc does not (Debian's
Orthanc 1.10 with DICOMweb 1.7 answers 200 to a second STOW-RS of a SOP Instance UID with other content and keeps
the old one, or replaces it with OverwriteInstances; it answers 405 to a DICOMweb DELETE):
  - a STOW-RS with an instance the store holds with other bytes is answered 409, that instance in the
    FailedSOPSequence with FailureReason 0x0110 (272); nothing of the request is stored. The same bytes again are
    forwarded (Orthanc answers 200, as Google does);
  - DELETE <root>/studies/<s>/series/<r>/instances/<i> (DICOMweb, as Google has it) is done with Orthanc's REST API
    (/tools/lookup, DELETE /instances/<id>): 200, or 404 when the store has no such instance.
The policy still comes first: ("answer", ...) for a DELETE refuses it or makes it fail.
"""
import http.client
import http.server
import json
import re
import socket
import struct
import threading
import time

META_SOP_UID = b"\x02\x00\x03\x00UI"  # (0002,0003) Media Storage SOP Instance UID, always explicit VR LE


def uids_in(body):
    """SOP Instance UIDs of the Part-10 files in a multipart body, in order."""
    out = []
    i = body.find(META_SOP_UID)
    while i >= 0:
        n = struct.unpack("<H", body[i + 6:i + 8])[0]
        out.append(body[i + 8:i + 8 + n].rstrip(b"\0 ").decode("ascii", "replace"))
        i = body.find(META_SOP_UID, i + 8 + n)
    return out


class Exchange:
    def __init__(self, n, t, method, path, uids):
        self.n, self.t, self.method, self.path, self.uids = n, t, method, path, uids
        self.request_bytes = 0 # the request body's bytes the store read
        self.code = None       # what the client was answered (None: connection cut)
        self.answer = b""
        self.t_end = None
        self.upstream = None   # what the store behind answered (None: not forwarded)
        self.stored = []       # SOP Instance UIDs the store behind named as stored (ReferencedSOPSequence)


def stored_uids(payload):
    """SOP Instance UIDs a DICOM JSON STOW-RS answer lists in its ReferencedSOPSequence (0008,1199)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return []
    items = doc.get("00081199", {}).get("Value", []) if isinstance(doc, dict) else []
    return [u for i in items for u in i.get("00081155", {}).get("Value", [])[:1]]


class FaultStore:
    def __init__(self, upstream_port, port=0, policy=None, transcoded=None, google=False):
        self.upstream_port = upstream_port
        self.google = google
        # Store-side transcoding as the Google Healthcare API does it: an instance-level WADO-RS asking for
        # transfer-syntax=1.2.840.10008.1.2.1 is answered with transcoded[uid] (a Part-10 file in that syntax),
        # or 406 when the instance is not in the map. None = forward such requests like any other.
        self.transcoded = transcoded
        self.policy = policy or (lambda n, method, path, uids: None)
        self.lock = threading.Lock()
        self.log = []          # every Exchange, STOW and others
        self._stow_n = 0
        store = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return n

            def _handle(self):
                store._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client killed with -9 resets its connections: expected here

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/dicom-web" % self.port

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def stows(self):
        with self.lock:
            return [e for e in self.log if e.method == "POST"]

    def deletes(self):
        with self.lock:
            return [e for e in self.log if e.method == "DELETE"]

    def accepted(self):
        """{SOP Instance UID: [every STOW exchange in which the store behind stored it]}: the store keeps one copy
        of an instance, so this log is where a second delivery of the same instance shows."""
        out = {}
        for e in self.stows():
            for u in e.stored:
                out.setdefault(u, []).append(e)
        return out

    # ---- serving ----
    def _serve(self, h):
        length = int(h.headers.get("Content-Length") or 0)
        is_stow = h.command == "POST"
        action = None
        with self.lock:
            if is_stow:
                self._stow_n += 1
                n = self._stow_n
            else:
                n = 0
        if is_stow:
            # Peek at the policy before reading the body: a cut reads only part of it.
            pre = self.policy(n, h.command, h.path, None)
            if isinstance(pre, tuple) and pre[0] == "cut":
                part = h.rfile.read(int(length * pre[1]))
                ex = Exchange(n, time.time(), h.command, h.path, uids_in(part))
                with self.lock:
                    self.log.append(ex)
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                h.close_connection = True
                h.connection.close()
                ex.t_end = time.time()
                return
        body = h.rfile.read(length) if length else b""
        uids = uids_in(body) if is_stow else []
        ex = Exchange(n, time.time(), h.command, h.path, uids)
        ex.request_bytes = len(body)
        with self.lock:
            self.log.append(ex)
        action = self.policy(n, h.command, h.path, uids)
        accept = h.headers.get("Accept", "")
        m = re.match(r"^/dicom-web/studies/[0-9.]+/series/[0-9.]+/instances/([0-9.]+)$", h.path.split("?")[0])
        if self.transcoded is not None and m and "transfer-syntax=1.2.840.10008.1.2.1" in accept and action is None:
            uid = m.group(1)
            if uid not in self.transcoded:
                self._reply(h, ex, 406, [("Content-Type", "text/plain")], b"cannot transcode to 1.2.840.10008.1.2.1")
                return
            with open(self.transcoded[uid], "rb") as f:
                part = f.read()
            body = (b"--TRANSCODED\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n\r\n" +
                    part + b"\r\n--TRANSCODED--\r\n")
            self._reply(h, ex, 200, [("Content-Type", 'multipart/related; type="application/dicom"; '
                                      'boundary=TRANSCODED')], body)
            return
        if isinstance(action, tuple) and action[0] == "answer":
            _, code, headers, payload = action
            self._reply(h, ex, code, headers, payload)
            return
        if self.google and h.command == "DELETE":
            self._reply(h, ex, *self._delete(h.path))
            return
        if self.google and is_stow:
            held = self._conflicts(h.headers.get("Content-Type", ""), body)
            if held:
                ex.upstream = 409
                self._reply(h, ex, 409, [("Content-Type", "application/dicom+json")], json.dumps({
                    "00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [u]},
                                                        "00081197": {"vr": "US", "Value": [272]}} for u in held]}
                }).encode())
                return
        code, headers, payload = self._forward(h, body)
        ex.upstream = code
        if is_stow and (200 <= code < 300 or code == 409):
            ex.stored = stored_uids(payload)
        if isinstance(action, tuple) and action[0] == "fail" and code in (200, 202, 409):
            code, payload = (action[2] if len(action) > 2 else 409), self._rewrite_failed(payload, action[1])
        if isinstance(action, tuple) and action[0] == "hold":
            action[1].wait(120)
        if isinstance(action, tuple) and action[0] == "delay":
            time.sleep(action[1])
        if isinstance(action, tuple) and action[0] == "rewrite":
            payload = action[1](payload)
        if isinstance(action, tuple) and action[0] == "cut_answer":
            f = action[1]
            keep = f(payload) if callable(f) else int(len(payload) * f)
            self._reply(h, ex, code, headers, payload, keep=keep)
            return
        self._reply(h, ex, code, headers, payload)

    # ---- Google Healthcare API conflicts (google=True) ----
    def _orthanc(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            conn.request(method, path, body=body)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def _orthanc_id(self, sop_uid):
        code, payload = self._orthanc("POST", "/tools/lookup", sop_uid.encode())
        found = [i["ID"] for i in json.loads(payload or b"[]") if i.get("Type") == "Instance"] if code == 200 else []
        return found[0] if found else None

    def _conflicts(self, content_type, body):
        """SOP Instance UIDs of the parts the store already holds with other bytes."""
        m = re.search(r'boundary="?([^";]+)"?', content_type)
        if not m:
            return []
        held = []
        for part in body.split(b"--" + m.group(1).encode())[1:]:
            if part.startswith(b"--"):
                break
            data = part[part.index(b"\r\n\r\n") + 4:]
            if data.endswith(b"\r\n"):
                data = data[:-2]
            uids = uids_in(data)
            oid = self._orthanc_id(uids[0]) if uids else None
            if oid and self._orthanc("GET", "/instances/%s/file" % oid)[1] != data:
                held.append(uids[0])
        return held

    def _delete(self, path):
        m = re.match(r"^/dicom-web/studies/[0-9.]+/series/[0-9.]+/instances/([0-9.]+)$", path.split("?")[0])
        oid = self._orthanc_id(m.group(1)) if m else None
        if not oid:
            return 404, [("Content-Type", "text/plain")], b"no such instance"
        code, _ = self._orthanc("DELETE", "/instances/%s" % oid)
        return code, [("Content-Type", "application/json")], b"{}"

    def _forward(self, h, body):
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=120)
        try:
            hdrs = {k: v for k, v in h.headers.items() if k.lower() in ("content-type", "accept", "authorization")}
            conn.request(h.command, h.path, body=body if body else None, headers=hdrs)
            r = conn.getresponse()
            payload = r.read()
            headers = [(k, v) for k, v in r.getheaders() if k.lower() in ("content-type", "warning")]
            return r.status, headers, payload
        finally:
            conn.close()

    @staticmethod
    def _rewrite_failed(payload, failing):
        try:
            doc = json.loads(payload)
        except ValueError:
            return payload
        ok = doc.get("00081199", {}).get("Value", [])
        keep, failed = [], doc.get("00081198", {}).get("Value", [])
        for item in ok:
            uid = item.get("00081155", {}).get("Value", [None])[0]
            if uid in failing:
                failed.append({"00081150": item.get("00081150", {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]}),
                               "00081155": {"vr": "UI", "Value": [uid]},
                               "00081197": {"vr": "US", "Value": [failing[uid]]}})
            else:
                keep.append(item)
        doc["00081199"] = {"vr": "SQ", "Value": keep}
        doc["00081198"] = {"vr": "SQ", "Value": failed}
        return json.dumps(doc).encode()

    def _reply(self, h, ex, code, headers, payload, keep=None):
        try:
            h.send_response(code)
            for k, v in headers:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload if keep is None else payload[:keep])
            h.wfile.flush()
            if keep is not None:
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                h.close_connection = True
                h.connection.close()
        except OSError:
            pass
        ex.code, ex.answer, ex.t_end = (code if keep is None else None), payload, time.time()
