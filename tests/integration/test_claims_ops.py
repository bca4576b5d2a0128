"""Documented keys that change how the bridge talks to its peers, each checked where it shows: stow_batch_*
(requests and parts counted at the store), /readyz with a spool that cannot take a file, log.format: json,
listen.acse_timeout_s and listen.dimse_timeout_s (a raw socket sees the bridge give up), and import's --force
and --query (StudyDate ranges, Modality= meaning ModalitiesInStudy)."""
import json
import os
import re
import shutil
import socket
import struct
import time
import unittest
import urllib.error
import urllib.request

import harness
import peers
from harness import Bridge, Orthanc, StoreSCP, TestCase, echoscu, run


def parts(body):
    return len(re.findall(rb"(?i)content-type:\s*application/dicom\r\n", body))


def associate_rq(called, calling):
    """A minimal A-ASSOCIATE-RQ (PS3.8 9.3.2) proposing Verification in implicit little endian."""
    def item(t, payload):
        return struct.pack(">BBH", t, 0, len(payload)) + payload
    ctx = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, b"1.2.840.10008.1.1") + item(0x40, b"1.2.840.10008.1.2"))
    user = item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.826.0.1.3680043.8.498.1"))
    body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + bytes(32) +
            item(0x10, b"1.2.840.10008.3.1.1.1") + ctx + user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def read_pdu(sock):
    """(type, payload) of the next PDU, or (None, b"") when the peer closed the connection."""
    head = b""
    while len(head) < 6:
        chunk = sock.recv(6 - len(head))
        if not chunk:
            return None, b""
        head += chunk
    t, _, n = struct.unpack(">BBI", head)
    payload = b""
    while len(payload) < n:
        chunk = sock.recv(n - len(payload))
        if not chunk:
            break
        payload += chunk
    return t, payload


class OpsClaims(TestCase):
    def setUp(self):
        super().setUp()
        self.cohort, self.man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=7)
        self.files = [os.path.join(self.cohort, i["file"]) for i in self.man["instances"]]

    def test_stow_batch_instances_and_bytes(self):
        orthanc = self.start(Orthanc(self.workdir))
        by_count = peers.ProxyStore(orthanc.http_port)
        by_bytes = peers.ProxyStore(orthanc.http_port)
        self.addCleanup(by_count.close)
        self.addCleanup(by_bytes.close)
        # A long delay lets each partial batch fill: the batches are 3, 3 and the 1 left when the delay ends.
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "BYCOUNT", "base_url": by_count.url + "/dicom-web", "stow_batch_instances": 3,
                           "stow_batch_delay_ms": 3000},
                          {"ae_title": "BYBYTES", "base_url": by_bytes.url + "/dicom-web", "stow_batch_bytes": 1024,
                           "stow_batch_delay_ms": 3000}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))
        for aec in ("BYCOUNT", "BYBYTES"):
            p = run(["storescu", "-aec", aec, "127.0.0.1", str(bridge.port)] + self.files)
            self.assertEqual(p.returncode, 0, p.stdout)
        for store, expected in ((by_count, [3, 3, 1]), (by_bytes, [1] * 7)):
            end = time.time() + 30
            while sum(parts(r[3]) for r in store.requests if r[0] == "POST") < 7 and time.time() < end:
                time.sleep(0.05)
            posts = [parts(r[3]) for r in store.requests if r[0] == "POST"]
            self.assertEqual(posts, expected, "instances per STOW-RS request")
        self.assertEqual(orthanc.instance_uids(), sorted(i["SOPInstanceUID"] for i in self.man["instances"]))

    def test_readyz_reports_a_spool_that_takes_no_file(self):
        orthanc = self.start(Orthanc(self.workdir))
        spool = os.path.join(self.workdir, "spool")
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "ORTHANC", "base_url": orthanc.dicomweb_url}], "spool": {"dir": spool}}))
        # Root ignores permission bits, so the spool is made unusable another way: its directory becomes a file.
        shutil.rmtree(os.path.join(spool, "ORTHANC"))
        with open(os.path.join(spool, "ORTHANC"), "w") as f:
            f.write("not a directory\n")
        # /readyz answers from a probe refreshed in the background: wait past "starting".
        end = time.time() + 30
        while time.time() < end:
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/readyz" % bridge.http_port, timeout=30)
            except urllib.error.HTTPError as e:
                if b"starting" not in e.read():
                    break
            time.sleep(0.2)
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/readyz" % bridge.http_port, timeout=30)
            self.fail("/readyz answered 200 with an unusable spool")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 503)
            body = e.read().decode(errors="replace")
        self.assertIn("spool", body)
        self.assertIn("ORTHANC", body)
        # C-STORE cannot be spooled: Out of Resources (0xA700), not success.
        p = run(["storescu", "-d", "-aec", "ORTHANC", "127.0.0.1", str(bridge.port), self.files[0]])
        self.assertRegex(p.stdout, r"DIMSE Status\s*:\s*0xa700", p.stdout[-1500:])

    def test_json_log_lines(self):
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "ORTHANC", "base_url": "http://127.0.0.1:9/dicom-web"}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}, "log": {"format": "json", "level": "debug"}}))
        self.assertEqual(echoscu(bridge.port, "ORTHANC", aet="JSONSCU").returncode, 0)
        bridge.stop()
        lines = [l for l in bridge.log().splitlines() if l.strip()]
        self.assertTrue(lines)
        events = []
        for l in lines:
            try:
                events.append(json.loads(l))
            except ValueError:
                self.fail("not a JSON line: %r" % l)
        accepted = [e for e in events if "association accepted" in json.dumps(e)]
        self.assertTrue(accepted, events[:10])
        self.assertTrue(any("JSONSCU" in json.dumps(e) for e in accepted), accepted)
        self.assertTrue(all("level" in e or "lvl" in e for e in events), events[:3])

    def timeout_bridge(self, acse=2, dimse=2):
        return self.start(Bridge(self.workdir, {
            "listen": {"acse_timeout_s": acse, "dimse_timeout_s": dimse},
            "upstreams": [{"ae_title": "ORTHANC", "base_url": "http://127.0.0.1:9/dicom-web"}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}}))

    def test_acse_and_dimse_timeouts(self):
        bridge = self.timeout_bridge()
        # A client that connects and says nothing: the association negotiation times out and the bridge closes.
        silent = socket.create_connection(("127.0.0.1", bridge.port))
        self.addCleanup(silent.close)
        silent.settimeout(20)
        t0 = time.time()
        t, _ = read_pdu(silent)
        waited = time.time() - t0
        self.assertIn(t, (None, 0x07), "expected the connection closed or aborted, got PDU type %s" % t)
        self.assertGreaterEqual(waited, 1.5, "closed before acse_timeout_s")
        self.assertLess(waited, 10, "acse_timeout_s: 2")
        # An association that is accepted and then sends nothing is aborted after dimse_timeout_s.
        idle = socket.create_connection(("127.0.0.1", bridge.port))
        self.addCleanup(idle.close)
        idle.settimeout(20)
        idle.sendall(associate_rq("ORTHANC", "IDLESCU"))
        t, _ = read_pdu(idle)
        self.assertEqual(t, 0x02, "A-ASSOCIATE-AC expected")
        t0 = time.time()
        t, _ = read_pdu(idle)
        waited = time.time() - t0
        self.assertIn(t, (0x07, None), "A-ABORT or close expected after dimse_timeout_s, got PDU type %s" % t)
        self.assertGreaterEqual(waited, 1.5, "aborted before dimse_timeout_s")
        self.assertLess(waited, 10)
        self.assertIn("listen.dimse_timeout_s", bridge.log())

    # The accepting thread only accepts (issue 14): a silent client no longer stops the others.
    def test_a_silent_client_does_not_block_the_listener(self):
        bridge = self.timeout_bridge(acse=30)
        silent = socket.create_connection(("127.0.0.1", bridge.port))
        self.addCleanup(silent.close)
        t0 = time.time()
        self.assertEqual(echoscu(bridge.port, "ORTHANC").returncode, 0)
        # Far below the silent client's 30 s: the echo did not wait for it (however loaded the machine).
        self.assertLess(time.time() - t0, 15, "C-ECHO waited for the silent client's acse_timeout_s")


class ImportClaims(TestCase):
    def setUp(self):
        super().setUp()
        # Three patients with three studies each, CT and MR alternating; study dates 2019 and 2020.
        self.cohort, self.man = harness.gencohort(self.workdir, patients=3, studies=3, series=1, instances=1,
                                                  modalities="CT,MR")
        self.orthanc = self.start(Orthanc(self.workdir))
        self.orthanc.upload([os.path.join(self.cohort, i["file"]) for i in self.man["instances"]])
        self.pacs = self.start(StoreSCP(self.workdir, aet="PACS", extra_args=["-v"]))
        self.cfg = os.path.join(self.workdir, "import.json")
        with open(self.cfg, "w") as f:
            json.dump({"upstreams": [{"ae_title": "IDC", "base_url": self.orthanc.dicomweb_url}],
                       "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": self.pacs.port}],
                       "spool": {"dir": os.path.join(self.workdir, "spool")}}, f)

    def importer(self, *args):
        return run([harness.BINARY, "import", "--config", self.cfg, "--upstream", "IDC", "--destination", "PACS"] +
                   list(args), timeout=300)

    def counts(self, p):
        m = re.search(r"would send: (\d+) studies, (\d+) series, (\d+) instances", p.stdout)
        self.assertTrue(m, p.stdout)
        return tuple(int(g) for g in m.groups())

    def test_query_date_range_and_modality(self):
        def n(pred):
            studies = {i["StudyInstanceUID"] for i in self.man["instances"] if pred(i)}
            return (len(studies), len(studies), len(studies))
        in_2020 = lambda i: "20200101" <= i["StudyDate"] <= "20211231"
        cases = [("StudyDate=2020-2021", in_2020),
                 ("Modality=CT", lambda i: i["Modality"] == "CT"),
                 ("StudyDate=2020-2021&Modality=CT", lambda i: in_2020(i) and i["Modality"] == "CT")]
        seen = set()
        for q, pred in cases:
            p = self.importer("--query", q, "--dry-run")
            self.assertEqual(p.returncode, 0, p.stdout)
            self.assertEqual(self.counts(p), n(pred), "--query %s:\n%s" % (q, p.stdout))
            seen.add(n(pred))
        self.assertEqual(len(seen), 3, "the three queries must select different sets")
        self.assertNotEqual(n(lambda i: True), n(cases[0][1]))

    def test_force_resends_delivered_series(self):
        study = self.man["instances"][0]["StudyInstanceUID"]
        studies = os.path.join(self.workdir, "studies.txt")
        with open(studies, "w") as f:
            f.write(study + "\n")
        n = len([i for i in self.man["instances"] if i["StudyInstanceUID"] == study])
        stored = lambda: len(re.findall(r"storing DICOM file", self.pacs.log()))
        p = self.importer("--studies", studies)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(int(re.search(r"sent (\d+)", p.stdout).group(1)), n)
        self.assertEqual(stored(), n)
        p = self.importer("--studies", studies)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("nothing to send", p.stdout)
        self.assertEqual(stored(), n)
        p = self.importer("--studies", studies, "--force")
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(int(re.search(r"sent (\d+)", p.stdout).group(1)), n, p.stdout)
        self.assertEqual(stored(), 2 * n, "--force sent the delivered series again")


if __name__ == "__main__":
    harness.main()
