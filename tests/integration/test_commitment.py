"""Storage Commitment Push Model on an upstream's AE title: the bridge commits an instance once the store has
confirmed it (the uploader's ledger) or a QIDO-RS finds it; an instance nobody sent fails with 0x0112; while the
store is down the report waits, then confirms; once the requester has released its association, the report
comes on a new association to it (destinations[]). The requester is tests/tools/dwb_commitscu."""
import os
import re
import subprocess
import threading
import time

import harness
from faultstore import FaultStore
from harness import Bridge, Orthanc, TestCase, run, wait_for

CT = "1.2.840.10008.5.1.4.1.1.2"
NEVER_SENT = "1.2.826.0.1.3680043.2.1143.424242"


class CommitmentTest(TestCase):
    def setUp(self):
        super().setUp()
        self.orthanc = self.start(Orthanc(self.workdir))
        d, man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=5, modalities="CT")
        self.files = [os.path.join(d, i["file"]) for i in man["instances"]]
        self.uids = sorted(i["SOPInstanceUID"] for i in man["instances"])

    def tool(self, port, refs, extra=None, timeout=120):
        cmd = [os.path.join(harness.BUILD_DIR, "tests", "tools", "dwb_commitscu"), "127.0.0.1", str(port), "CLOUD",
               "COMMITSCU"] + (extra or []) + ["%s:%s" % (CT, u) for u in refs]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=harness.peer_env())

    def parse(self, out):
        ev = re.search(r"^event (\d+) transaction (\S+)$", out, re.M)
        self.assertTrue(ev, out)
        committed = sorted(re.findall(r"^committed (\S+)$", out, re.M))
        failed = dict(re.findall(r"^failed (\S+) reason (0x[0-9a-f]{4})$", out, re.M))
        return int(ev.group(1)), committed, failed

    def test_five_stored_one_never_sent(self):
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "CLOUD", "base_url": self.orthanc.dicomweb_url}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}, "log": {"level": "debug"}}))
        p = run(["storescu", "-aec", "CLOUD", "127.0.0.1", str(bridge.port)] + self.files)
        self.assertEqual(p.returncode, 0, p.stdout)
        c = self.tool(bridge.port, self.uids + [NEVER_SENT])
        out, _ = c.communicate(timeout=120)
        self.assertIn("action status 0x0000", out)
        event, committed, failed = self.parse(out)
        self.assertEqual(event, 2, out)
        self.assertEqual(committed, self.uids)
        self.assertEqual(failed, {NEVER_SENT: "0x0112"})
        self.assertIn("sent on the requesting association", bridge.log())

    def test_store_down_report_waits_then_confirms(self):
        down = [True]
        fs = FaultStore(self.orthanc.http_port,
                        policy=lambda n, m, p, u: ("answer", 503, [("Content-Type", "text/plain")], b"down")
                        if down[0] else None)
        self.addCleanup(fs.close)
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "CLOUD", "base_url": fs.url, "retry_max_wait_s": 1, "max_retries": 0}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}, "log": {"level": "debug"}}))
        p = run(["storescu", "-aec", "CLOUD", "127.0.0.1", str(bridge.port)] + self.files)
        self.assertEqual(p.returncode, 0, p.stdout)
        c = self.tool(bridge.port, self.uids + [NEVER_SENT])
        # Evidence by events, not a pause: the commitment job has asked the down store (QIDO-RS) at least twice,
        # and still no report has come.
        asked = lambda: [e for e in fs.log if e.method == "GET" and "/instances" in e.path]
        self.assertTrue(wait_for(lambda: len(asked()) >= 2, timeout=60), "the job never asked the store")
        self.assertIsNone(c.poll(), "no report while the store is down")
        t_up = time.time()
        down[0] = False
        out, _ = c.communicate(timeout=120)
        event, committed, failed = self.parse(out)
        self.assertEqual(event, 2, out)
        self.assertEqual(committed, self.uids)
        self.assertEqual(failed, {NEVER_SENT: "0x0112"})
        self.assertEqual(self.orthanc.instance_uids(), self.uids)

    def test_report_on_a_new_association_after_release(self):
        listen = harness.free_port()
        bridge = self.start(Bridge(self.workdir, {
            "upstreams": [{"ae_title": "CLOUD", "base_url": self.orthanc.dicomweb_url}],
            "destinations": [{"ae_title": "COMMITSCU", "host": "127.0.0.1", "port": listen}],
            "spool": {"dir": os.path.join(self.workdir, "spool")}, "log": {"level": "debug"}}))
        p = run(["storescu", "-aec", "CLOUD", "127.0.0.1", str(bridge.port)] + self.files)
        self.assertEqual(p.returncode, 0, p.stdout)
        c = self.tool(bridge.port, self.uids, extra=["--listen", str(listen)])
        out, _ = c.communicate(timeout=120)
        self.assertIn("released; listening", out)
        event, committed, failed = self.parse(out)
        self.assertEqual(event, 1, out)
        self.assertEqual(committed, self.uids)
        self.assertEqual(failed, {})
        self.assertIn("sent on a new association", bridge.log())


if __name__ == "__main__":
    harness.main()
