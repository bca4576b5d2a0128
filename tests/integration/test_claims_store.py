"""Documented answers to a store that misbehaves, which no test could see fail before (issue 27 item 3): a C-FIND
filter refused with 422 (not only 400) is dropped and matched locally; a 400 on a later page fails the query
(nothing is widened); the gateway answers 502 when the store cannot be reached, and passes a transfer the store
cuts on to the viewer as a cut; `commitment_timeout_s` ends the wait for instances a down store never took with
0x0110; `auth.key_env` (and its default GOOGLE_APPLICATION_CREDENTIALS) names the service-account key."""
import http.client
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.parse

import harness
import peers
from faultstore import FaultStore
from harness import Bridge, Orthanc, TestCase, comment_of, findscu, run, status_of

STUDIES = [dict(peers.study_json("1.2.826.0.1.3680043.2.1143.9%d" % i, pid="P1"),
                **{"00200010": {"vr": "SH", "Value": ["S%d" % i]}}) for i in range(1, 4)]


def query_of(path):
    return dict(urllib.parse.parse_qsl(path.partition("?")[2], keep_blank_values=True))


class Refuses422(peers.HttpPeer):
    """Answers 422 naming StudyID to any study query filtering on it, as a store that cannot filter on it;
    every study (unfiltered) otherwise."""

    def handle(self, h, method, body):
        q = query_of(h.path)
        if "StudyID" in q or "00200010" in q:
            return self.reply(h, 422, {"error": {"code": 422, "message": "cannot filter on StudyID"}},
                              ctype="application/json")
        self.reply(h, 200, STUDIES)


class FailsSecondPage(peers.HttpPeer):
    """Pages of `limit` studies; the page at offset > 0 answers 400."""

    def handle(self, h, method, body):
        q = query_of(h.path)
        if int(q.get("offset", "0")) > 0:
            return self.reply(h, 400, {"error": {"code": 400, "message": "bad page token"}},
                              ctype="application/json")
        self.reply(h, 200, STUDIES[:int(q.get("limit", "1000"))])


class CutsSeries(peers.HttpPeer):
    """A WADO-RS series answer announced at its full length, of which only `keep` bytes are sent before the
    connection is reset: once the viewer has seen the first of them (viewer_has_bytes), so that the cut falls
    inside a relayed answer, or after 10 s (a gateway that holds the answer back then fails the test)."""
    payload = bytes(range(256)) * 800
    keep = 50000

    def __init__(self):
        super().__init__()
        self.viewer_has_bytes = threading.Event()

    def handle(self, h, method, body):
        if "/series/" not in h.path:
            return self.reply(h, 404, b"")
        h.send_response(200)
        h.send_header("Content-Type", 'multipart/related; type="application/dicom"; boundary=CUT')
        h.send_header("Content-Length", str(len(self.payload)))
        h.end_headers()
        h.wfile.write(self.payload[:self.keep])
        h.wfile.flush()
        self.viewer_has_bytes.wait(10)
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.close_connection = True
        h.connection.close()


class StoreClaims(TestCase):
    def bridge(self, upstreams, **extra):
        cfg = {"upstreams": upstreams, "spool": {"dir": os.path.join(self.workdir, "spool")},
               "log": {"level": "debug"}}
        cfg.update(extra)
        return self.start(Bridge(self.workdir, cfg))

    def store(self, cls):
        s = cls()
        self.addCleanup(s.close)
        return s

    def test_filter_refused_with_422_is_matched_locally(self):
        store = self.store(Refuses422)
        bridge = self.bridge([{"ae_title": "STORE", "base_url": store.url + "/dicom-web"}])
        p, res = findscu(bridge.port, "STORE", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "StudyID=S2"],
                         extra=["-d"], workdir=self.workdir)
        self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
        self.assertEqual([(harness.value(r, "0020000D"), harness.value(r, "00200010")) for r in res],
                         [(STUDIES[1]["0020000D"]["Value"][0], "S2")], "only the study the bridge matched itself")
        asked = [query_of(r[1]) for r in store.requests]
        self.assertTrue(asked and ("00200010" in asked[0] or "StudyID" in asked[0]), asked)
        self.assertTrue(len(asked) >= 2 and not any(k in asked[-1] for k in ("00200010", "StudyID")),
                        "asked again without the refused filter: %s" % asked)

    def test_400_on_a_later_page_fails_the_query(self):
        store = self.store(FailsSecondPage)
        bridge = self.bridge([{"ae_title": "STORE", "base_url": store.url + "/dicom-web", "qido_page_size": 2}])
        p, res = findscu(bridge.port, "STORE", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID=P1"],
                         extra=["-d"], workdir=self.workdir)
        self.assertEqual(status_of(p), "0xc000", p.stdout[-1500:])
        self.assertTrue(comment_of(p).startswith("store HTTP 400"), comment_of(p))
        asked = [query_of(r[1]) for r in store.requests]
        self.assertEqual([(q.get("offset", "0"), q.get("PatientID", q.get("00100020"))) for q in asked],
                         [("0", "P1"), ("2", "P1")],
                         "two pages, both with the filter; nothing widened after the 400: %s" % asked)

    def test_gateway_502_for_an_unreachable_store_and_a_cut_passed_on(self):
        closed = harness.free_port()
        cut = self.store(CutsSeries)
        gw = harness.free_port()
        bridge = self.bridge([{"ae_title": "GONE", "base_url": "http://127.0.0.1:%d/dicom-web" % closed,
                               "max_retries": 0},
                              {"ae_title": "CUT", "base_url": cut.url + "/dicom-web", "max_retries": 0}],
                             gateway={"port": gw, "bind": "127.0.0.1"})
        harness.wait_port(gw, bridge.proc, log=bridge.log_path)
        c = http.client.HTTPConnection("127.0.0.1", gw, timeout=60)
        c.request("GET", "/dicom-web/GONE/studies", headers={"Accept": "application/dicom+json"})
        r = c.getresponse()
        body = r.read()
        c.close()
        self.assertEqual(r.status, 502, body[:300])
        self.assertTrue(harness.wait_for(lambda: re.search(r"GONE.*(refused|connect)|(refused|connect).*GONE",
                                                           bridge.log(), re.I)),
                        "the reason is in the log:\n" + bridge.log()[-2000:])

        c = http.client.HTTPConnection("127.0.0.1", gw, timeout=60)
        c.request("GET", "/dicom-web/CUT/studies/1.2.3/series/4.5.6",
                  headers={"Accept": 'multipart/related; type="application/dicom"'})
        r = c.getresponse()
        self.assertEqual(r.status, 200, "the store's status, relayed before its body")
        headers = r.getheaders()
        self.assertEqual(r.getheader("Content-Length"), str(len(cut.payload)), "the store's length announced")
        got = r.read(1000)
        cut.viewer_has_bytes.set()
        complete = False
        try:
            got += r.read()  # to the announced end: IncompleteRead when the connection closes before it
            complete = True
        except http.client.IncompleteRead as e:
            got += e.partial
        except ConnectionError:
            pass
        c.close()
        self.assertFalse(complete, "the viewer saw a clean end after %d of %d bytes (HTTP/%s, headers %s)" % (
            len(got), len(cut.payload), r.version, headers))
        self.assertLessEqual(len(got), cut.keep)
        self.assertEqual(got, cut.payload[:len(got)], "what came is what the store sent")
        self.assertEqual(len([r for r in cut.requests if "/series/" in r[1]]), 1, "a cut body is never replayed")

    def test_commitment_timeout_reports_queued_instances_failed(self):
        orthanc = self.start(Orthanc(self.workdir))
        d, man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=2, modalities="CT")
        files = [os.path.join(d, i["file"]) for i in man["instances"]]
        uids = sorted(i["SOPInstanceUID"] for i in man["instances"])
        fs = FaultStore(orthanc.http_port,
                        policy=lambda n, m, p, u: ("answer", 503, [("Content-Type", "text/plain")], b"down"))
        self.addCleanup(fs.close)
        bridge = self.bridge([{"ae_title": "CLOUD", "base_url": fs.url, "retry_max_wait_s": 1, "max_retries": 0,
                               "commitment_timeout_s": 2}])
        p = run(["storescu", "-aec", "CLOUD", "127.0.0.1", str(bridge.port)] + files)
        self.assertEqual(p.returncode, 0, p.stdout)
        cmd = [os.path.join(harness.BUILD_DIR, "tests", "tools", "dwb_commitscu"), "127.0.0.1", str(bridge.port),
               "CLOUD", "COMMITSCU"] + ["1.2.840.10008.5.1.4.1.1.2:%s" % u for u in uids]
        t0 = time.monotonic()
        out = run(cmd, timeout=60).stdout
        took = time.monotonic() - t0
        self.assertIn("action status 0x0000", out)
        ev = re.search(r"^event (\d+) transaction", out, re.M)
        self.assertTrue(ev, out)
        self.assertEqual(int(ev.group(1)), 2, "failures in the report:\n" + out)
        self.assertEqual(re.findall(r"^committed (\S+)$", out, re.M), [])
        self.assertEqual(dict(re.findall(r"^failed (\S+) reason (0x[0-9a-f]{4})$", out, re.M)),
                         {u: "0x0110" for u in uids})
        self.assertGreaterEqual(took, 2, "not before commitment_timeout_s")
        self.assertEqual(orthanc.instance_uids(), [], "the store never took them")

    def test_key_env_names_the_service_account_key(self):
        import test_google as g
        key = os.path.join(self.workdir, "key.pem")
        pub = os.path.join(self.workdir, "pub.pem")
        run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key], check=True)
        run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True)
        email = "bridge@proj-1.iam.gserviceaccount.com"
        tokens = g.TokenServer(self.workdir, pub, email)
        self.addCleanup(tokens.close)
        with open(key) as f:
            pem = f.read()
        key_file = os.path.join(self.workdir, "sa.json")
        with open(key_file, "w") as f:
            json.dump({"type": "service_account", "project_id": "proj-1", "private_key_id": "k1", "private_key": pem,
                       "client_email": email, "token_uri": tokens.url + "/token"}, f)
        orthanc = self.start(Orthanc(self.workdir))
        d, man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=1)
        orthanc.upload([os.path.join(d, i["file"]) for i in man["instances"]])
        google = g.Gateway(orthanc, tokens)
        self.addCleanup(google.close)
        study = man["instances"][0]["StudyInstanceUID"]
        for n, (auth, env) in enumerate((({"type": "google_service_account", "key_env": "DWB_CLAIMS_SA_KEY"},
                                          {"DWB_CLAIMS_SA_KEY": key_file}),
                                         ({"type": "google_service_account"},
                                          {"GOOGLE_APPLICATION_CREDENTIALS": key_file}))):
            wd = os.path.join(self.workdir, "bridge%d" % n)
            os.makedirs(wd)
            up = {"ae_title": "GOOGLE", "auth": auth, "retry_budget_s": 5,
                  "google": {"project": "proj-1", "location": "europe-west4", "dataset": "ds-1",
                             "dicom_store": "store-1", "endpoint": google.url + "/v1"}}
            bridge = self.start(Bridge(wd, {"upstreams": [up], "spool": {"dir": os.path.join(wd, "spool")}},
                                       env=env))
            before = tokens.exchanges
            p, res = findscu(bridge.port, "GOOGLE", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
                             extra=["-d"], workdir=self.workdir)
            self.assertEqual(status_of(p), "0x0000", p.stdout[-1500:])
            self.assertEqual([harness.value(r, "0020000D") for r in res], [study], "%s: %s" % (auth, p.stdout[-800:]))
            self.assertEqual(tokens.exchanges, before + 1, "%s: one token exchange with the key it names" % auth)
            self.assertEqual(tokens.errors, [])
            bridge.stop()


if __name__ == "__main__":
    harness.main()
