"""Google Cloud Healthcare API style upstreams: a local OAuth token endpoint that verifies the RS256 JWT with the
public key of a key pair generated here (iss, aud, scope, exp checked), and a gateway under the Google URL layout
in front of Orthanc that demands those tokens. C-FIND, C-MOVE and C-STORE work through it; many requests from
several associations cost one token exchange; expired tokens are refreshed; a revoked one gives a clear error;
429 with Retry-After is waited out; the metadata server and token_command providers work; broken key files are
refused by check-config."""
import base64
import http.client
import http.server
import json
import os
import re
import secrets
import socketserver
import subprocess
import threading
import time
import urllib.parse

import harness
from harness import Bridge, Orthanc, StoreSCP, TestCase, comment_of, counts_of, findscu, pixels, run, status_of

PREFIX = "/v1/projects/proj-1/locations/europe-west4/datasets/ds-1/dicomStores/store-1/dicomWeb"


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Server:
    def __init__(self, handler):
        self.srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        self.srv.daemon_threads = True
        self.srv.owner = self
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


class TokenServer(Server):
    """OAuth token endpoint (JWT bearer grant) and GCE metadata server."""

    def __init__(self, workdir, pub_pem, email):
        self.workdir, self.pub_pem, self.email = workdir, pub_pem, email
        self.lifetime = 3600
        self.exchanges = 0
        self.issued_at = []
        self.tokens = {}  # token -> expiry (epoch seconds)
        self.errors = []
        self.lock = threading.Lock()
        owner = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def reply(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                why = owner.check(form)
                if why:
                    owner.errors.append(why)
                    return self.reply(400, {"error": "invalid_grant", "error_description": why})
                self.reply(200, owner.issue())

            def do_GET(self):
                if self.headers.get("Metadata-Flavor") != "Google":
                    return self.reply(403, {"error": "missing Metadata-Flavor"})
                self.reply(200, owner.issue())

            def log_message(self, *a):
                pass

        super().__init__(H)

    def check(self, form):
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return "bad grant_type %s" % form.get("grant_type")
        parts = form.get("assertion", [""])[0].split(".")
        if len(parts) != 3:
            return "assertion is not a JWT"
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        if header.get("alg") != "RS256":
            return "alg %s" % header.get("alg")
        data = os.path.join(self.workdir, "jwt-%s.data" % secrets.token_hex(4))
        sig = data + ".sig"
        with open(data, "w") as f:
            f.write(parts[0] + "." + parts[1])
        with open(sig, "wb") as f:
            f.write(b64url_decode(parts[2]))
        p = subprocess.run(["openssl", "dgst", "-sha256", "-verify", self.pub_pem, "-signature", sig, data],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if "Verified OK" not in p.stdout:
            return "signature does not verify: " + p.stdout
        now = time.time()
        if claims.get("iss") != self.email:
            return "iss %s" % claims.get("iss")
        if claims.get("aud") != self.url + "/token":
            return "aud %s" % claims.get("aud")
        if "https://www.googleapis.com/auth/cloud-healthcare" not in claims.get("scope", "").split():
            return "scope %s" % claims.get("scope")
        if not (claims["exp"] > now and claims["exp"] - claims["iat"] <= 3600):
            return "exp/iat %s/%s" % (claims.get("exp"), claims.get("iat"))
        return None

    def issue(self):
        with self.lock:
            self.exchanges += 1
            tok = "ya29.test-%d-%s" % (self.exchanges, secrets.token_hex(8))
            self.tokens[tok] = time.time() + self.lifetime
            self.issued_at.append(time.time())
        return {"access_token": tok, "expires_in": self.lifetime, "token_type": "Bearer"}


class Gateway(Server):
    """Google URL layout in front of Orthanc's /dicom-web, demanding valid bearer tokens."""

    def __init__(self, orthanc, tokens):
        self.orthanc, self.token_server = orthanc, tokens
        self.revoke_all = False
        self.throttle = 0   # answer 429 to this many next requests
        self.static_tokens = set()
        self.requests = 0
        self.seen = []  # (method, path, request headers) of every request
        self.unauthorized = 0  # requests answered 401
        owner = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def deny(self, code, msg, extra=()):
                body = json.dumps({"error": {"code": code, "message": msg}}).encode()
                self.send_response(code)
                for k, v in extra:
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle_any(self, method):
                owner.requests += 1
                owner.seen.append((method, self.path, dict(self.headers)))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0)) if method == "POST" else None
                if not self.path.startswith(PREFIX):
                    return self.deny(404, "not a DICOM store path")
                auth = self.headers.get("Authorization", "")
                tok = auth[7:] if auth.startswith("Bearer ") else ""
                exp = owner.token_server.tokens.get(tok)
                ok = tok in owner.static_tokens or (exp is not None and exp > time.time())
                if owner.revoke_all or not ok:
                    owner.unauthorized += 1
                    return self.deny(401, "Request had invalid authentication credentials.")
                if owner.throttle > 0:
                    owner.throttle -= 1
                    return self.deny(429, "Quota exceeded", [("Retry-After", "1")])
                c = http.client.HTTPConnection("127.0.0.1", owner.orthanc.http_port, timeout=60)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "content-type", "range")}
                c.request(method, "/dicom-web" + self.path[len(PREFIX):], body=body, headers=hdrs)
                r = c.getresponse()
                data = r.read()
                c.close()
                # Like Google, URLs in answers (RetrieveURL, BulkDataURI) point at this store, not at what is behind.
                if "json" in (r.getheader("Content-Type") or "") or "xml" in (r.getheader("Content-Type") or ""):
                    data = data.replace(owner.orthanc.dicomweb_url.encode(), (owner.url + PREFIX).encode())
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() in ("content-type", "warning", "content-range"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.handle_any("GET")

            def do_POST(self):
                self.handle_any("POST")

            def log_message(self, *a):
                pass

        super().__init__(H)


class GoogleTest(TestCase):
    def setUp(self):
        super().setUp()
        key = os.path.join(self.workdir, "key.pem")
        pub = os.path.join(self.workdir, "pub.pem")
        run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key], check=True)
        run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True)
        self.email = "bridge@proj-1.iam.gserviceaccount.com"
        self.tokens = TokenServer(self.workdir, pub, self.email)
        self.addCleanup(self.tokens.close)
        with open(key) as f:
            pem = f.read()
        self.key_file = os.path.join(self.workdir, "sa.json")
        with open(self.key_file, "w") as f:
            json.dump({"type": "service_account", "project_id": "proj-1", "private_key_id": "k1", "private_key": pem,
                       "client_email": self.email, "token_uri": self.tokens.url + "/token"}, f)
        self.cohort, self.man = harness.gencohort(self.workdir, patients=2, studies=1, series=1, instances=2)
        self.orthanc = self.start(Orthanc(self.workdir))
        self.orthanc.upload([os.path.join(self.cohort, i["file"]) for i in self.man["instances"][:2]])
        self.gateway = Gateway(self.orthanc, self.tokens)
        self.addCleanup(self.gateway.close)

    def bridge(self, auth, extra=None, dests=None):
        up = {"ae_title": "GOOGLE", "auth": auth, "retry_budget_s": 10}
        up["google"] = {"project": "proj-1", "location": "europe-west4", "dataset": "ds-1", "dicom_store": "store-1",
                        "endpoint": self.gateway.url + "/v1"}
        up.update(extra or {})
        cfg = {"upstreams": [up], "destinations": dests or [], "spool": {"dir": os.path.join(self.workdir, "spool")},
               "log": {"level": "debug"}}
        return self.start(Bridge(self.workdir, cfg))

    def find(self, bridge):
        return findscu(bridge.port, "GOOGLE", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName"],
                       extra=["-d"], workdir=self.workdir)

    def stored_studies(self):
        return sorted({i["StudyInstanceUID"] for i in self.man["instances"][:2]})

    def assertFoundEveryStudy(self, p, res):
        """The C-FIND answered exactly the studies the store holds, and ended in Success."""
        self.assertEqual(sorted(harness.value(r, "0020000D") for r in res), self.stored_studies(), p.stdout[-1500:])
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])

    def test_find_move_store_with_one_token_exchange(self):
        pacs = self.start(StoreSCP(self.workdir, aet="PACS"))
        bridge = self.bridge({"type": "google_service_account", "key_file": self.key_file},
                             dests=[{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}])
        for _ in range(3):  # three associations
            self.assertFoundEveryStudy(*self.find(bridge))
        study = self.man["instances"][0]["StudyInstanceUID"]
        p = run(["movescu", "-d", "-S", "-aec", "GOOGLE", "-aem", "PACS", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "StudyInstanceUID=" + study, "127.0.0.1", str(bridge.port)])
        want = [i for i in self.man["instances"][:2] if i["StudyInstanceUID"] == study]
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        self.assertEqual(counts_of(p)[:2], (len(want), 0), p.stdout[-1500:])
        # What PACS received is the study's instances, with the store's pixel data.
        got = {harness.value(harness.dcm2json(f), "00080018"): f for f in pacs.files()}
        self.assertEqual(sorted(got), sorted(i["SOPInstanceUID"] for i in want))
        for i in want:
            self.assertEqual(pixels(got[i["SOPInstanceUID"]]), pixels(os.path.join(self.cohort, i["file"])),
                             "pixel data of %s" % i["SOPInstanceUID"])
        third = os.path.join(self.cohort, self.man["instances"][2]["file"])
        p = run(["storescu", "-aec", "GOOGLE", "127.0.0.1", str(bridge.port), third])
        self.assertEqual(p.returncode, 0, p.stdout)
        uid = self.man["instances"][2]["SOPInstanceUID"]
        end = time.time() + 20
        while uid not in self.orthanc.instance_uids() and time.time() < end:
            time.sleep(0.1)
        self.assertIn(uid, self.orthanc.instance_uids(), "C-STORE reached the store through STOW-RS")
        self.assertEqual(self.tokens.errors, [])
        self.assertEqual(self.tokens.exchanges, 1, "one exchange serves every request and association")
        self.assertNotIn("ya29.", bridge.log(), "tokens are never logged")

    def test_short_lived_token_is_refreshed_at_half_life(self):
        # A 4 s token is refreshed after half its lifetime and before it expires: C-FINDs run back to back until
        # the token server sees the second exchange (an event, not a sleep); none of them may meet a 401.
        self.tokens.lifetime = 4
        bridge = self.bridge({"type": "google_service_account", "key_file": self.key_file})
        end = time.time() + 20
        finds = 0
        while self.tokens.exchanges < 2 and time.time() < end:
            p, res = self.find(bridge)
            finds += 1
            self.assertTrue(res, "find %d failed:\n%s" % (finds, p.stdout[-1500:]))
        self.assertEqual(self.tokens.exchanges, 2, "no refresh within 20 s of a 4 s token")
        self.assertGreater(finds, 2, "several finds were served by the first token")
        gap = self.tokens.issued_at[1] - self.tokens.issued_at[0]
        self.assertGreaterEqual(gap, 1.9, "refreshed after %.2f s, before half of the 4 s lifetime" % gap)
        self.assertEqual(self.gateway.unauthorized, 0, "no request went out with an expired token")
        self.assertEqual(self.tokens.errors, [])

    def test_revoked_token_is_a_clear_error(self):
        bridge = self.bridge({"type": "google_service_account", "key_file": self.key_file})
        self.assertTrue(self.find(bridge)[1])
        self.gateway.revoke_all = True
        p, res = self.find(bridge)
        self.assertEqual(res, [])
        self.assertEqual(status_of(p), "0xc000", p.stdout[-1500:])
        self.assertEqual(comment_of(p), "store refused the bridge's credentials", p.stdout[-1500:])
        self.assertRegex(bridge.log(), r"GET \S+/studies\S*: upstream GOOGLE refused the credentials \(HTTP 401\)")
        self.assertEqual(self.tokens.exchanges, 2, "one refresh after the first 401, then give up")

    def test_429_with_retry_after_is_waited_out(self):
        bridge = self.bridge({"type": "google_service_account", "key_file": self.key_file})
        self.gateway.throttle = 2
        t0 = time.time()
        p, res = self.find(bridge)
        self.assertFoundEveryStudy(p, res)
        self.assertGreaterEqual(time.time() - t0, 1.8, "Retry-After: 1 twice")
        self.assertEqual(len(re.findall(r"HTTP 429", bridge.log())), 2)

    def test_metadata_server_and_token_command(self):
        bridge = self.bridge({"type": "google_metadata", "metadata_url": self.tokens.url + "/computeMetadata/v1/token"})
        self.assertFoundEveryStudy(*self.find(bridge))
        self.assertEqual(self.tokens.exchanges, 1)
        bridge.stop()
        self.gateway.static_tokens.add("tok-from-command")
        bridge2 = self.bridge({"type": "token_command", "command": "echo tok-from-command", "token_lifetime_s": 60})
        self.assertFoundEveryStudy(*self.find(bridge2))
        bridge2.stop()
        bridge3 = self.bridge({"type": "token_command", "command": "exit 3"})
        p, res = self.find(bridge3)
        self.assertEqual(res, [])
        self.assertEqual(status_of(p), "0xc000", p.stdout[-1500:])
        self.assertIn("upstream GOOGLE: the token command exited with status 3", bridge3.log())

    def test_check_config_refuses_broken_key_files(self):
        cases = {"notjson.json": ("{not json", "not a JSON key file"),
                 "nokey.json": (json.dumps({"type": "service_account", "client_email": "a@b"}), "no \"private_key\""),
                 "eckey.json": (None, "not an RSA key")}
        ec = os.path.join(self.workdir, "ec.pem")
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", ec], check=True)
        with open(ec) as f:
            ecpem = f.read()
        for name, (content, why) in cases.items():
            path = os.path.join(self.workdir, name)
            with open(path, "w") as f:
                f.write(content if content is not None else
                        json.dumps({"type": "service_account", "client_email": "a@b", "private_key": ecpem}))
            cfg = os.path.join(self.workdir, "c-" + name)
            with open(cfg, "w") as f:
                json.dump({"upstreams": [{"ae_title": "G", "google": {"project": "p", "location": "l", "dataset": "d",
                                                                      "dicom_store": "s"},
                                          "auth": {"type": "google_service_account", "key_file": path}}]}, f)
            p = run([harness.BINARY, "check-config", "--config", cfg])
            self.assertEqual(p.returncode, 2, p.stdout)
            self.assertIn("upstreams[0].auth.key_file", p.stdout)
            self.assertIn(why, p.stdout)
        ok = os.path.join(self.workdir, "c-ok.json")
        with open(ok, "w") as f:
            json.dump({"upstreams": [{"ae_title": "G", "google": {"project": "p", "location": "l", "dataset": "d",
                                                                  "dicom_store": "s"},
                                      "auth": {"type": "google_service_account", "key_file": self.key_file}}]}, f)
        p = run([harness.BINARY, "check-config", "--config", ok])
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb",
                      p.stdout)


if __name__ == "__main__":
    harness.main()
