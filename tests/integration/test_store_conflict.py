"""upstreams[].on_conflict (issue 28 item 3): C-STORE -> STOW-RS of an instance the store already holds with other
content. The store is a real Orthanc behind faultstore.py with google=True, which answers conflicts as the Google
Healthcare API does (409, FailureReason 0x0110) and does a DICOMweb DELETE with Orthanc's REST API: Debian's Orthanc
1.10 with DICOMweb 1.7 answers 200 to such a STOW and keeps the old instance silently, and 405 to a DICOMweb
DELETE. Each test puts version FIRST of an instance in the store, then sends version SECOND (same UIDs, another
SeriesDescription) through the bridge, and reads the store's SeriesDescription back by QIDO-RS."""
import glob
import os
import re
import shutil
import signal
import threading

import harness
from faultstore import FaultStore
from harness import Bridge, Orthanc, TestCase, run, wait_for


class ConflictTest(TestCase):
    def setUp(self):
        super().setUp()
        self.orthanc = self.start(Orthanc(self.workdir))
        self.spool = os.path.join(self.workdir, "spool")
        d, man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=1)
        inst = man["instances"][0]
        self.uid = inst["SOPInstanceUID"]
        self.first = os.path.join(d, inst["file"])
        self.second = os.path.join(self.workdir, "second.dcm")
        shutil.copy(self.first, self.second)
        run(["dcmodify", "-nb", "-i", "(0008,103e)=FIRST", self.first], check=True)
        run(["dcmodify", "-nb", "-i", "(0008,103e)=SECOND", self.second], check=True)
        self.orthanc.upload([self.first])
        self.assertEqual(self.description(), "FIRST")

    def description(self):
        got = self.orthanc.qido("/instances?SOPInstanceUID=%s&includefield=0008103E" % self.uid)
        if len(got) != 1:
            return "%d instances" % len(got)
        return got[0].get("0008103E", {}).get("Value", [None])[0]

    def store(self, policy=None):
        fs = FaultStore(self.orthanc.http_port, policy=policy, google=True)
        self.addCleanup(fs.close)
        return fs

    def bridge(self, url, **up):
        cfg = {"upstreams": [dict({"ae_title": "CLOUD", "base_url": url, "stow_batch_delay_ms": 50,
                                   "retry_max_wait_s": 1}, **up)],
               "spool": {"dir": self.spool}, "log": {"level": "debug"}}
        return self.start(Bridge(self.workdir, cfg))

    def send(self, bridge):
        p = run(["storescu", "-aec", "CLOUD", "127.0.0.1", str(bridge.port), self.second], timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])

    def queued(self):
        return glob.glob(os.path.join(self.spool, "CLOUD", "*.dcm"))

    def failed(self):
        return glob.glob(os.path.join(self.spool, "CLOUD", "failed", "*.dcm"))

    def reason(self):
        self.assertTrue(wait_for(self.failed, 60), "the instance goes to failed/; queued: %s" % self.queued())
        with open(self.failed()[0] + ".reason.txt") as f:
            return f.read()

    def assert_overwritten(self, bridge):
        self.assertTrue(wait_for(lambda: self.description() == "SECOND", 60),
                        "the store ends with the new content, saw %s" % self.description())
        self.assertTrue(wait_for(lambda: not self.queued(), 30), "delivered files leave the spool")
        self.assertEqual(self.failed(), [], "nothing in failed/")
        self.assertEqual(glob.glob(os.path.join(self.spool, "CLOUD", "*.overwrite")), [], "no marker left")
        self.assertTrue(wait_for(lambda: "overwritten" in bridge.log(), 10))

    def test_conflict_kept_by_default(self):
        fs = self.store()
        bridge = self.bridge(fs.url)
        self.send(bridge)
        reason = self.reason()
        self.assertRegex(reason, r"^conflict: the store holds another instance with SOP Instance UID %s \(HTTP 409, "
                         r"FailureReason 0x0110\)" % re.escape(self.uid))
        self.assertIn("00081198", reason, "the store's answer is in the reason file")
        self.assertIn("on_conflict keep", reason)
        self.assertEqual(self.description(), "FIRST", "the store's instance is not overwritten")
        self.assertEqual(fs.deletes(), [], "no DELETE with on_conflict keep")

    def test_overwrite_replaces_the_stores_instance(self):
        fs = self.store()
        bridge = self.bridge(fs.url, on_conflict="overwrite")
        self.send(bridge)
        self.assert_overwritten(bridge)
        self.assertEqual([e.code for e in fs.deletes()], [200], "one DELETE")
        self.assertIn("/studies/", fs.deletes()[0].path)
        self.assertTrue(fs.deletes()[0].path.endswith("/instances/" + self.uid), fs.deletes()[0].path)
        self.assertEqual([e.code for e in fs.stows()], [409, 200], "the STOW, then once again after the DELETE")
        line = [l for l in bridge.log().splitlines() if "DELETE answered 200" in l]
        self.assertEqual(len(line), 1, "one line for the overwrite")
        self.assertRegex(line[0], r"SHA-256 of the spooled instance [0-9a-f]{64}, of the store's: unknown")
        self.assertIn("FailureReason 0x0110", line[0])

    def test_conflict_after_overwrite_fails(self):
        # A store that answers the DELETE but keeps the instance: the second conflict is final, no second DELETE.
        fs = self.store(lambda n, m, p, u: ("answer", 200, [], b"") if m == "DELETE" else None)
        bridge = self.bridge(fs.url, on_conflict="overwrite")
        self.send(bridge)
        self.assertRegex(self.reason(), r"^conflict after overwrite: the store holds another instance")
        self.assertEqual(len(fs.deletes()), 1, "one DELETE per instance")
        self.assertEqual(self.description(), "FIRST")

    def test_delete_refused_405_fails_with_that_reason(self):
        fs = self.store(lambda n, m, p, u: ("answer", 405, [("Allow", "GET, POST")], b"") if m == "DELETE" else None)
        bridge = self.bridge(fs.url, on_conflict="overwrite")
        self.send(bridge)
        self.assertRegex(self.reason(), r"^store refused DELETE: 405 \(overwrite of SOP Instance %s after a conflict"
                         % re.escape(self.uid))
        self.assertEqual(len(fs.deletes()), 1)
        self.assertEqual(self.description(), "FIRST")
        self.assertEqual(glob.glob(os.path.join(self.spool, "CLOUD", "*.overwrite")), [], "no marker left")

    def test_delete_503_is_an_outage_then_delivered(self):
        fs = self.store(lambda n, m, p, u: ("answer", 503, [("Content-Type", "text/plain")], b"busy")
                        if m == "DELETE" and len([e for e in fs.log if e.method == "DELETE"]) <= 2 else None)
        bridge = self.bridge(fs.url, on_conflict="overwrite")
        self.send(bridge)
        self.assert_overwritten(bridge)
        self.assertEqual([e.code for e in fs.deletes()], [503, 503, 200], "DELETE retried after the outage")
        log = bridge.log()
        self.assertRegex(log, r"store unavailable: DELETE of SOP Instance %s: HTTP 503" % re.escape(self.uid))
        self.assertNotIn("attempt 1 of", log, "an outage charges no attempt")

    def test_kill_between_delete_and_stow_exactly_once(self):
        # The STOW after the DELETE reaches the store, which stores it and holds the answer: kill -9 then.
        held = threading.Event()
        self.addCleanup(held.set)
        fs = self.store(lambda n, m, p, u: ("hold", held) if m == "POST" and n == 2 else None)
        bridge = self.bridge(fs.url, on_conflict="overwrite")
        self.send(bridge)
        self.assertTrue(wait_for(lambda: self.description() == "SECOND", 60), self.description())
        self.assertEqual(len(self.queued()), 1, "not deleted from the spool before the store's answer")
        markers = glob.glob(os.path.join(self.spool, "CLOUD", "*.overwrite"))
        self.assertEqual(len(markers), 1)
        with open(markers[0]) as f:
            self.assertEqual(f.read(), "stow\n", "the DELETE is recorded as done before the STOW")
        bridge.stop(signal.SIGKILL)
        held.set()
        bridge2 = self.bridge(fs.url, on_conflict="overwrite")
        self.assertTrue(wait_for(lambda: not self.queued(), 60), "delivered after the restart")
        self.assertEqual(self.failed(), [])
        self.assertEqual(self.description(), "SECOND", "exactly one instance, the new content")
        self.assertEqual(len(fs.deletes()), 1, "no second DELETE after the store has it")
        self.assertEqual([e.code for e in fs.stows()[2:]], [200], "sent once more, answered as held")
        self.assertTrue(wait_for(lambda: "overwritten" in bridge2.log(), 10), bridge2.log()[-2000:])
        self.assertEqual(glob.glob(os.path.join(self.spool, "CLOUD", "*.overwrite")), [])


if __name__ == "__main__":
    harness.main()
