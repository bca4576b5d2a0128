"""The operator's console's JSON API (gateway/console/API.md) on the ops port, against a real Orthanc behind a
store that misbehaves (faultstore.py): an outage shows the upstream unavailable with its reason and the queue
growing; a poisoned instance shows in failed/ with its reason and no patient data; Retry sends it again and it
reaches Orthanc; Discard deletes it; writes without the admin token (or a trusted proxy's user) are refused by
the server; a C-MOVE shows as a running transfer with progress, then done. The browser test is
test_console_browser.py."""
import glob
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request

import harness
from faultstore import FaultStore
from harness import Bridge, Orthanc, StoreSCP, TestCase, run, wait_for

TOKEN = "s3cret-console-token"


def call(port, path, body=None, token=None, headers=None, ctype="application/json", prefix="/console"):
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h["Content-Type"] = ctype
    req = urllib.request.Request("http://127.0.0.1:%d%s%s" % (port, prefix, path), data=data, headers=h,
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def state(port):
    code, body, _ = call(port, "/api/state")
    assert code == 200, (code, body)
    return json.loads(body)


def upstream(st, ae):
    return next(u for u in st["upstreams"] if u["ae_title"] == ae)


class ConsoleTest(TestCase):
    def setUp(self):
        super().setUp()
        self.orthanc = self.start(Orthanc(self.workdir))
        self.spool = os.path.join(self.workdir, "spool")
        self.outage = threading.Event()
        self.quota = threading.Event()
        self.poison = set()

        def policy(n, method, path, uids):
            if method == "POST" and self.quota.is_set():
                return ("answer", 429, [("Content-Type", "application/json"), ("Retry-After", "3")],
                        b'{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}')
            if method == "POST" and self.outage.is_set():
                return ("answer", 503, [("Content-Type", "text/plain")], b"maintenance")
            if method == "POST" and uids and self.poison & set(uids):
                return ("answer", 422, [("Content-Type", "text/plain")],
                        b"cannot store that: PatientName=SECRET^NAME")
            return None

        self.fs = FaultStore(self.orthanc.http_port, policy=policy)
        self.addCleanup(self.fs.close)
        token_file = os.path.join(self.workdir, "admin.token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        self.bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "CLOUD", "base_url": self.fs.url, "stow_batch_delay_ms": 50,
                           "max_attempts": 2, "retry_max_wait_s": 1}],
            "spool": {"dir": self.spool},
            "http": {"admin_token_file": token_file, "admin_proxies": ["127.0.0.2"]},
            "log": {"level": "debug"}}))
        d, man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=6, rows=32, cols=32)
        self.files = {i["SOPInstanceUID"]: os.path.join(d, i["file"]) for i in man["instances"]}
        self.uids = sorted(self.files)

    def storescu(self, uids):
        p = run(["storescu", "-aec", "CLOUD", "127.0.0.1", str(self.bridge.port)] + [self.files[u] for u in uids],
                timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])

    def failed_items(self):
        code, body, _ = call(self.bridge.http_port, "/api/failed?upstream=CLOUD")
        self.assertEqual(code, 200, body)
        return json.loads(body)

    def test_outage_failed_retry_discard(self):
        port = self.bridge.http_port
        # The page and its files are served, with a policy that allows only their own script.
        code, html, hdr = call(port, "/")
        self.assertEqual(code, 200)
        self.assertIn("<html", html.lower())
        self.assertIn("default-src 'self'", hdr.get("Content-Security-Policy", ""))
        for f in ("/console.js", "/console.css"):
            self.assertEqual(call(port, f)[0], 200, f)
        st = state(port)
        self.assertFalse(st["writable"], "no token sent: read-only")
        self.assertTrue(st["token_configured"])
        self.assertEqual(upstream(st, "CLOUD")["state"], "healthy")

        # An outage: the queue grows, the upstream is unavailable with the store's answer, a retry time is set.
        self.outage.set()
        self.storescu(self.uids[:3])
        up = wait_for(lambda: (lambda u: u if u["state"] == "unavailable" else None)(upstream(state(port), "CLOUD")), 30)
        self.assertIsNotNone(up, state(port))
        self.assertIn("HTTP 503", up["reason"])
        self.assertIsNotNone(up["retry_at"])
        self.assertEqual(up["queue"]["instances"], 3)
        sizes = sum(os.path.getsize(self.files[u]) for u in self.uids[:3])
        self.assertGreater(up["queue"]["bytes"], sizes * 0.9)
        self.storescu(self.uids[3:5])
        self.assertEqual(upstream(state(port), "CLOUD")["queue"]["instances"], 5, "the queue grows during the outage")

        # The store is back, one instance is poisoned: 4 delivered, 1 in failed/ with its reason and no PHI.
        bad = self.uids[1]
        self.poison.add(bad)
        self.outage.clear()
        up = wait_for(lambda: (lambda u: u if u["failed"] == 1 and u["queue"]["instances"] == 0 else None)(
            upstream(state(port), "CLOUD")), 60)
        self.assertIsNotNone(up, state(port))
        self.assertEqual(up["state"], "healthy")
        self.assertEqual(up["delivered_total"], 4)
        self.assertEqual(up["delivered_last_hour"], 4)
        self.assertGreater(up["stow_bytes_per_s"], 0)
        self.assertEqual(sorted(self.orthanc.instance_uids()), sorted(u for u in self.uids[:5] if u != bad))
        f = self.failed_items()
        self.assertEqual(f["total"], 1)
        item = f["items"][0]
        self.assertIn("HTTP 422", item["reason"])
        self.assertEqual(item["sop_uid"], "***")
        self.assertEqual(len(item["id"]), 16)
        raw = call(port, "/api/failed?upstream=CLOUD")[1] + json.dumps(state(port))
        self.assertNotIn(bad, raw, "log.phi is off: no UID on the console")
        self.assertNotIn("SECRET", raw)

        # Writes: refused without the token, with a wrong one, from an untrusted address with a user header, and
        # as a form (a cross-site request cannot send application/json).
        body = {"upstream": "CLOUD", "id": item["id"]}
        for kw in ({}, {"token": "wrong"}, {"headers": {"X-Forwarded-User": "mallory"}}):
            code, text, _ = call(port, "/api/failed/retry", body, **kw)
            self.assertEqual(code, 403, (kw, text))
            self.assertIn("not allowed", json.loads(text)["error"])
        code, text, _ = call(port, "/api/failed/retry", b"upstream=CLOUD&id=" + item["id"].encode(), token=TOKEN,
                             ctype="application/x-www-form-urlencoded")
        self.assertEqual(code, 415, text)
        for bogus in ({"upstream": "CLOUD", "id": "../../../etc/pa"}, {"upstream": "CLOUD"}, b"{not json"):
            code, text, _ = call(port, "/api/failed/retry", bogus, token=TOKEN)
            self.assertIn(code, (400, 404), (bogus, text))
        self.assertEqual(call(port, "/api/failed/retry", {"upstream": "NOPE", "id": item["id"]}, token=TOKEN)[0], 404)
        self.assertEqual(len(glob.glob(os.path.join(self.spool, "CLOUD", "failed", "*.dcm"))), 1, "nothing moved yet")
        self.assertTrue(state(port)["writable"] is False)
        code, text, _ = call(port, "/api/state", token=TOKEN)
        self.assertTrue(json.loads(text)["writable"])

        # Retry, once the store takes it: it reaches Orthanc and failed/ is empty.
        self.poison.clear()
        code, text, _ = call(port, "/api/failed/retry", body, token=TOKEN)
        self.assertEqual(code, 200, text)
        self.assertEqual(json.loads(text)["message"], "queued again")
        self.assertTrue(wait_for(lambda: bad in self.orthanc.instance_uids(), 30), "the retried instance is stored")
        up = wait_for(lambda: (lambda u: u if u["failed"] == 0 and u["delivered_total"] == 5 else None)(
            upstream(state(port), "CLOUD")), 30)
        self.assertIsNotNone(up, state(port))
        self.assertEqual(glob.glob(os.path.join(self.spool, "CLOUD", "failed", "*")), [])
        self.assertEqual(call(port, "/api/failed/retry", body, token=TOKEN)[0], 404, "gone from failed/")
        self.assertRegex(self.bridge.log(), r"console: retry of failed instance %s asked by the token holder from "
                                            r"127\.0\.0\.1" % item["id"])

        # Discard: another poisoned instance, deleted with its reason file.
        other = self.uids[5]
        self.poison.add(other)
        self.storescu([other])
        self.assertTrue(wait_for(lambda: self.failed_items()["total"] == 1, 30), self.failed_items())
        item = self.failed_items()["items"][0]
        code, text, _ = call(port, "/api/failed/discard", {"upstream": "CLOUD", "id": item["id"]}, token=TOKEN)
        self.assertEqual(code, 200, text)
        self.assertEqual(glob.glob(os.path.join(self.spool, "CLOUD", "failed", "*")), [])
        self.assertEqual(upstream(state(port), "CLOUD")["failed"], 0)
        self.assertEqual(call(port, "/api/failed/discard", {"upstream": "CLOUD", "id": item["id"]}, token=TOKEN)[0], 404)
        self.assertNotIn(other, self.orthanc.instance_uids())
        self.assertIn("console: discard of failed instance %s asked by the token holder" % item["id"], self.bridge.log())
        self.assertNotIn(other, self.bridge.log().split("console:")[-1].split("\n")[0], "no UID in the audit line")

    def test_quota_shown_with_its_retry_time_then_delivered(self):
        # A store's quota (429 with Retry-After, as Google's Healthcare API answers): the upstream shows "quota",
        # the answer and when the next try goes; nothing fails, and once the quota is back everything is delivered.
        port = self.bridge.http_port
        self.quota.set()
        t0 = time.time()
        self.storescu(self.uids[:2])
        up = wait_for(lambda: (lambda u: u if u["state"] == "quota" else None)(upstream(state(port), "CLOUD")), 30)
        self.assertIsNotNone(up, state(port))
        self.assertIn("HTTP 429", up["reason"])
        retry_at = time.mktime(time.strptime(up["retry_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        self.assertGreaterEqual(retry_at, t0 - 1)
        self.assertLessEqual(retry_at, time.time() + 5, "Retry-After 3 s, not the backoff cap")
        self.assertEqual((up["queue"]["instances"], up["failed"]), (2, 0))
        self.quota.clear()
        up = wait_for(lambda: (lambda u: u if u["delivered_total"] == 2 else None)(upstream(state(port), "CLOUD")), 30)
        self.assertIsNotNone(up, state(port))
        self.assertEqual((up["state"], up["reason"], up["retry_at"], up["failed"]), ("healthy", "", None, 0))
        self.assertEqual(sorted(self.orthanc.instance_uids()), sorted(self.uids[:2]))

    def test_trusted_proxy_user_may_write(self):
        port = self.bridge.http_port
        body = {"upstream": "CLOUD", "id": "0123456789abcdef"}
        # 127.0.0.2 is in http.admin_proxies: its user header is taken; 127.0.0.1 is not.
        req = lambda ip, user: self._from(ip, port, body, user)
        self.assertEqual(req("127.0.0.1", "alice")[0], 403)
        self.assertEqual(req("127.0.0.2", None)[0], 403, "a trusted proxy without a user is no one")
        code, text = req("127.0.0.2", "alice")
        self.assertEqual(code, 404, text)  # allowed; there is no such failed instance
        self.assertIn("asked by user alice via 127.0.0.2", self.bridge.log())

    def test_hostile_requests(self):
        # Whatever a client sends, the console answers with a clear status and keeps serving.
        port = self.bridge.http_port
        deep = b"[" * 2040 + b"]" * 2040  # within the 4 KiB body limit, deeper than any JSON the API takes
        cases = [
            (call(port, "/api/failed/retry", deep, token=TOKEN)[0], 400),
            (call(port, "/api/failed/retry", b"{" + b'"a":1,' * 2000 + b"}", token=TOKEN)[0], 413),
            (call(port, "/api/failed/retry", {"upstream": "CLOUD", "id": "0123456789abcdeg"}, token=TOKEN)[0], 404),
            (call(port, "/api/failed/retry", {"upstream": 7, "id": []}, token=TOKEN)[0], 400),
            (call(port, "/api/failed?upstream=" + "A" * 5000)[0], 404),
            (call(port, "/api/failed?upstream=%00CLOUD")[0], 404),
            (call(port, "/%2e%2e/%2e%2e/etc/passwd")[0], 404),
            (call(port, "/../metrics")[0], 404),
            (call(port, "/api/state/../../metrics")[0], 404),
            (call(port, "/api/nothing")[0], 404),
            (call(port, "/api/failed/retry")[0], 405),
        ]
        self.assertEqual([c[0] for c in cases], [c[1] for c in cases])
        req = urllib.request.Request("http://127.0.0.1:%d/console/api/state" % port, method="DELETE")
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        self.assertEqual(e.exception.code, 405)
        # Elsewhere on the ops port only GET: the probes and metrics still answer.
        self.assertEqual(call(port, "/healthz", prefix="")[0], 200)
        code, _, hdr = call(port, "/", prefix="")
        self.assertEqual(code, 200, "/ redirects to the console")
        self.assertEqual(state(port)["upstreams"][0]["ae_title"], "CLOUD")

    def test_check_config_names_the_console_and_its_keys(self):
        p = run([harness.BINARY, "check-config", "--config", self.bridge.config_path])
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("console: http://0.0.0.0:%d/console/ (Retry/Discard with the admin token or through an "
                      "authenticating proxy)" % self.bridge.http_port, p.stdout)
        self.assertNotIn(TOKEN, p.stdout)
        with open(self.bridge.config_path) as f:
            cfg = json.load(f)
        for key, value, why in (("console_path", "/metrics", "path of the probes"), ("console_path", "console/", ""),
                                ("admin_proxies", ["10.1.2.3/8"], "network"), ("admin_token_file", "/nonexistent", "")):
            bad = json.loads(json.dumps(cfg))
            bad["http"][key] = value
            path = os.path.join(self.workdir, "bad.json")
            with open(path, "w") as f:
                json.dump(bad, f)
            p = run([harness.BINARY, "check-config", "--config", path])
            self.assertEqual(p.returncode, 2, (key, value, p.stdout))
            self.assertIn("http." + key, p.stdout)
            self.assertIn(why, p.stdout)

    def _from(self, ip, port, body, user):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(ip, 0))
        h = {"Content-Type": "application/json"}
        if user:
            h["X-Forwarded-User"] = user
        c.request("POST", "/console/api/failed/discard", json.dumps(body), h)
        r = c.getresponse()
        out = (r.status, r.read().decode())
        c.close()
        return out


class ConsoleTransferTest(TestCase):
    def setUp(self):
        super().setUp()
        d, man = harness.gencohort(self.workdir, patients=1, studies=1, series=3, instances=4, rows=32, cols=32)
        self.study = man["instances"][0]["StudyInstanceUID"]
        orthanc = self.start(Orthanc(self.workdir))
        orthanc.upload([os.path.join(d, i["file"]) for i in man["instances"]])
        # Every WADO-RS (a series' or an instance's retrieve, not a QIDO query) waits 1.5 s: with one series at a
        # time, the transfer is seen between series.
        fs = FaultStore(orthanc.http_port, policy=lambda n, m, p, u: ("delay", 1.5)
                        if m == "GET" and "?" not in p and "/series/" in p else None)
        self.addCleanup(fs.close)
        self.pacs = self.start(StoreSCP(self.workdir, aet="PACS"))
        self.bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "CLOUD", "base_url": fs.url}],
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": self.pacs.port}],
            "retrieve": {"parallel_series": 1},
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))

    def running(self, service, seen):
        for t in state(self.bridge.http_port)["transfers"]:
            if t["service"] == service and t["state"] == "running" and 0 < t["sent"] < t["total"]:
                seen.append(t)
                return t
        return None

    def test_import_shown_by_the_serving_process(self):
        # `import` is a process of its own (same config, same spool.dir): its job is published into
        # <spool.dir>/.jobs/ and the serving bridge's console shows it.
        p = subprocess.Popen([harness.BINARY, "import", "--config", self.bridge.config_path, "--upstream", "CLOUD",
                              "--destination", "PACS", "--query", "StudyInstanceUID=" + self.study], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        t = wait_for(lambda: self.running("import", []), 60, step=0.05)
        self.assertIsNotNone(t, state(self.bridge.http_port))
        self.assertEqual(t["caller"], "import (pid %d)" % p.pid)
        self.assertEqual((t["upstream"], t["destination"], t["total"]), ("CLOUD", "PACS", 12))
        out = p.communicate(timeout=120)[0].decode(errors="replace")
        self.assertEqual(p.returncode, 0, out[-2000:])
        done = [x for x in state(self.bridge.http_port)["transfers"] if x["service"] == "import"]
        self.assertEqual([(x["state"], x["sent"], x["remaining"]) for x in done], [("done", 12, 0)])
        self.assertEqual(len(self.pacs.files()), 12)

    def test_move_progress_shown(self):
        bridge, pacs, study = self.bridge, self.pacs, self.study
        p = subprocess.Popen(["movescu", "-S", "-aet", "OPERATOR", "-aec", "CLOUD", "-aem", "PACS", "-k",
                              "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=" + study, "127.0.0.1",
                              str(bridge.port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        t = wait_for(lambda: self.running("C-MOVE", []), 60, step=0.05)
        self.assertIsNotNone(t, state(bridge.http_port))
        self.assertEqual(t["total"], 12)
        self.assertEqual(t["destination"], "PACS")
        self.assertEqual(t["upstream"], "CLOUD")
        self.assertTrue(t["caller"].startswith("OPERATOR@127.0.0.1"), t["caller"])
        self.assertEqual(t["remaining"], t["total"] - t["sent"] - t["failed"])
        out = p.communicate(timeout=120)[0].decode(errors="replace")
        self.assertEqual(p.returncode, 0, out[-2000:])
        done = [x for x in state(bridge.http_port)["transfers"] if x["id"] == t["id"]]
        self.assertEqual(len(done), 1)
        self.assertEqual((done[0]["state"], done[0]["sent"], done[0]["failed"], done[0]["remaining"]), ("done", 12, 0, 0))
        self.assertGreater(done[0]["bytes"], 12 * 32 * 32 * 2)
        self.assertIsNotNone(done[0]["ended"])
        self.assertEqual(len(pacs.files()), 12)


if __name__ == "__main__":
    harness.main()
