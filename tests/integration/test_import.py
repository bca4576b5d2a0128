"""dicomweb-bridge import: a multi-study cohort from Orthanc DICOMweb into storescp, stamped, with the
destination's calling/called AE overrides; a second run sends nothing; --dry-run counts match the real run; a
destination that fails half-way gives a non-zero exit and a resumed run completes the rest."""
import os
import re
import signal
import subprocess
import time

import harness
from harness import Orthanc, StoreSCP, TestCase, comment_of, run, status_of


def dump(path, tag):
    p = run(["dcmdump", "-q", "+L", "+P", tag, path])
    m = re.search(r"\[(.*)\]", p.stdout)
    return m.group(1) if m else None


# The bridge's own AE title (listen.ae_title), not the default: the stamp's Modifying System must come from it.
BRIDGE_AE = "KP-BRIDGE"


class ImportTest(TestCase):
    def setUp(self):
        super().setUp()
        self.cohort, self.man = harness.gencohort(self.workdir, patients=2, studies=1, series=2, instances=4)
        self.orthanc = self.start(Orthanc(self.workdir))
        self.orthanc.upload([os.path.join(self.cohort, i["file"]) for i in self.man["instances"]])
        self.studies = sorted({i["StudyInstanceUID"] for i in self.man["instances"]})
        self.study_file = os.path.join(self.workdir, "studies.txt")
        with open(self.study_file, "w") as f:
            f.write("# an IDC cohort\n" + "\n".join(self.studies) + "\n")

    def config(self, pacs_port):
        path = os.path.join(self.workdir, "import.json")
        import json
        with open(path, "w") as f:
            json.dump({"listen": {"ae_title": BRIDGE_AE},
                       "upstreams": [{"ae_title": "IDC", "base_url": self.orthanc.dicomweb_url}],
                       "destinations": [{"ae_title": "KAAPANA", "host": "127.0.0.1", "port": pacs_port,
                                         "calling_ae_title": "kp-idc", "called_ae_title": "kp-admin"}],
                       "spool": {"dir": os.path.join(self.workdir, "spool")}}, f)
        return path

    def importer(self, cfg, *args):
        return run([harness.BINARY, "import", "--config", cfg, "--upstream", "IDC", "--destination", "KAAPANA"] +
                   list(args), timeout=300)

    def test_import_dry_run_resume(self):
        pacs = self.start(StoreSCP(self.workdir, aet="kp-admin", extra_args=["-v"]))
        cfg = self.config(pacs.port)
        dry = self.importer(cfg, "--studies", self.study_file, "--dry-run")
        self.assertEqual(dry.returncode, 0, dry.stdout)
        m = re.search(r"would send: (\d+) studies, (\d+) series, (\d+) instances", dry.stdout)
        self.assertTrue(m, dry.stdout)
        self.assertEqual(pacs.files(), [], "--dry-run sends nothing")
        t0 = time.time()
        p = self.importer(cfg, "--studies", self.study_file)
        t1 = time.time()
        self.assertEqual(p.returncode, 0, p.stdout)
        sent = int(re.search(r"sent (\d+)", p.stdout).group(1))
        self.assertEqual(sent, int(m.group(3)), "dry-run count equals what the real run sends")
        self.assertEqual((int(m.group(1)), int(m.group(2))), (len(self.studies), 2 * len(self.studies)))
        files = pacs.files()
        self.assertEqual(sorted(dump(f, "SOPInstanceUID") for f in files),
                         sorted(i["SOPInstanceUID"] for i in self.man["instances"]))
        for f in files:
            self.assertEqual(dump(f, "SourceApplicationEntityTitle"), "kp-idc", "calling AE override")
            st = harness.assert_stamp(self, f, BRIDGE_AE, "IDC", self.orthanc.dicomweb_url, t0, t1)
            self.assertEqual(st["SourceOfPreviousValues"], "IDC 127.0.0.1:%d" % self.orthanc.http_port)
            self.assertTrue(st["RetrieveURL"].endswith("/instances/" + dump(f, "SOPInstanceUID")), st)
        self.assertIn("kp-admin", pacs.log())
        again = self.importer(cfg, "--studies", self.study_file)
        self.assertEqual(again.returncode, 0, again.stdout)
        self.assertIn("nothing to send", again.stdout)
        self.assertEqual(len(pacs.files()), len(files), "a second run sends nothing")
        dry2 = self.importer(cfg, "--studies", self.study_file, "--dry-run")
        self.assertIn("would send: 0 studies, 0 series, 0 instances", dry2.stdout)

    def test_series_manifest_and_query(self):
        pacs = self.start(StoreSCP(self.workdir, aet="kp-admin"))
        cfg = self.config(pacs.port)
        one = self.man["instances"][0]
        manifest = os.path.join(self.workdir, "series.csv")
        with open(manifest, "w") as f:
            f.write("StudyInstanceUID,SeriesInstanceUID\n%s,%s\n" % (one["StudyInstanceUID"], one["SeriesInstanceUID"]))
        p = self.importer(cfg, "--series", manifest, "--state", os.path.join(self.workdir, "s1.state"))
        self.assertEqual(p.returncode, 0, p.stdout)
        exp = [i["SOPInstanceUID"] for i in self.man["instances"] if i["SeriesInstanceUID"] == one["SeriesInstanceUID"]]
        self.assertEqual(sorted(dump(f, "SOPInstanceUID") for f in pacs.files()), sorted(exp))
        pid = one["PatientID"]
        q = self.importer(cfg, "--query", "PatientID=%s" % pid, "--dry-run", "--state", os.path.join(self.workdir, "s2.state"))
        self.assertEqual(q.returncode, 0, q.stdout)
        mine = [i for i in self.man["instances"] if i["PatientID"] == pid]
        m = re.search(r"would send: (\d+) studies, (\d+) series, (\d+) instances", q.stdout)
        self.assertTrue(m, q.stdout)
        self.assertEqual(tuple(int(g) for g in m.groups()),
                         (len({i["StudyInstanceUID"] for i in mine}), len({i["SeriesInstanceUID"] for i in mine}),
                          len(mine)), "--query PatientID=%s --dry-run counts:\n%s" % (pid, q.stdout))
        self.assertLess(len(mine), len(self.man["instances"]), "the query must select a strict subset")

    def test_destination_failing_half_way_then_resume(self):
        # storescp kills itself after the 6th file: the first series (4) completes, the second breaks off.
        target = os.path.join(self.workdir, "received-kp-admin")
        pacs = self.start(StoreSCP(self.workdir, aet="kp-admin", extra_args=[
            "-xs", "-xcr", "[ $(ls #p | wc -l) -ge 6 ] && pkill -9 -f 'od %s' || true" % target]))
        cfg = self.config(pacs.port)
        p = self.importer(cfg, "--studies", self.study_file, "--parallel", "1")
        self.assertEqual(p.returncode, 1, "failures must give a non-zero exit:\n" + p.stdout)
        self.assertRegex(p.stdout, r"failed [1-9]")
        got_first = len(pacs.files())
        self.assertGreaterEqual(got_first, 4)
        port = pacs.port
        pacs.stop()
        pacs2 = self.start(StoreSCP(self.workdir, aet="kp-admin"))
        cfg = self.config(pacs2.port)
        p2 = self.importer(cfg, "--studies", self.study_file)
        self.assertEqual(p2.returncode, 0, p2.stdout)
        self.assertIn("resuming", p2.stdout)  # harness.run merges stderr into stdout
        # storescp writes into the same directory: together the two runs delivered every instance.
        uids = {dump(f, "SOPInstanceUID") for f in pacs2.files()}
        self.assertEqual(uids, {i["SOPInstanceUID"] for i in self.man["instances"]})
        self.assertLess(int(re.search(r"sent (\d+)", p2.stdout).group(1)), len(self.man["instances"]),
                        "the resumed run skips the series already delivered")

    def test_stow_destination(self):
        target = self.start(Orthanc(self.workdir, aet="CTPSTOW"))
        import json
        cfg = os.path.join(self.workdir, "stow.json")
        with open(cfg, "w") as f:
            json.dump({"upstreams": [{"ae_title": "IDC", "base_url": self.orthanc.dicomweb_url}],
                       "destinations": [{"ae_title": "CTPSTOW", "stow_url": target.dicomweb_url + "/studies"}],
                       "spool": {"dir": os.path.join(self.workdir, "spool")}}, f)
        t0 = time.time()
        p = run([harness.BINARY, "import", "--config", cfg, "--upstream", "IDC", "--destination", "CTPSTOW",
                 "--studies", self.study_file], timeout=300)
        t1 = time.time()
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(target.instance_uids(), sorted(i["SOPInstanceUID"] for i in self.man["instances"]))
        one = target.get_json("/instances")[0]
        path = os.path.join(self.workdir, "fromstow.dcm")
        import urllib.request
        with urllib.request.urlopen(target.url + "/instances/%s/file" % one) as r, open(path, "wb") as f:
            f.write(r.read())
        st = harness.assert_stamp(self, path, "DWBRIDGE", "IDC", self.orthanc.dicomweb_url, t0, t1)
        self.assertEqual(st["SourceOfPreviousValues"], "IDC 127.0.0.1:%d" % self.orthanc.http_port)
        # C-MOVE cannot use a STOW-RS destination: a clear refusal, not a hang.
        bridge = self.start(harness.Bridge(self.workdir, json.load(open(cfg))))
        m = run(["movescu", "-d", "-S", "-aec", "IDC", "-aem", "CTPSTOW", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "StudyInstanceUID=" + self.studies[0], "127.0.0.1", str(bridge.port)])
        self.assertEqual((status_of(m), comment_of(m)), ("0xc000", "destination is STOW-RS (import only)"),
                         m.stdout[-1500:])



if __name__ == "__main__":
    harness.main()
