"""upstreams[].deidentify (issue 28 item 1): instances received by C-STORE are de-identified by PS3.15 Annex E's
Basic Application Level Confidentiality Profile before they are spooled. Real instances (dwb_gencohort) get
identifying attributes with dcmodify (names, IDs, dates, institution, a private group with its creator, sequences
with identifying items, a description, a burned-in flag), go to the bridge by storescu, and what a real Orthanc then
holds (its REST API's /instances/{id}/file, read by dcm2json and dcmdump) is compared with the profile's table
(translate/dwb_deid_table.c, parsed here) attribute by attribute; UIDs against HMAC-SHA256 computed here."""
import glob
import hashlib
import hmac
import json
import os
import re
import shutil
import urllib.request
from datetime import date, timedelta

import harness
from harness import Bridge, Orthanc, TestCase, run, wait_for

SECRET = "deid-test-secret-0123456789"
NAME = "SECRETNAME^PATIENT"

# The identifying attributes added to every instance: (dcmodify path, value).
IDENTIFYING = [
    ("(0010,0010)", NAME),                       # PatientName: Z
    ("(0010,0020)", "PID-4711"),                  # PatientID: Z/D
    ("(0010,0030)", "19700203"),                  # PatientBirthDate: Z
    ("(0010,0040)", "F"),                         # PatientSex: Z (K with retain-patient-characteristics)
    ("(0010,1030)", "71"),                        # PatientWeight: X (K with retain-patient-characteristics)
    ("(0008,0080)", "General Hospital Springfield"),  # InstitutionName: X/Z/D
    ("(0008,0090)", "REFERRING^DOCTOR"),          # ReferringPhysicianName: Z
    ("(0008,1070)", "OPERATOR^ONE"),              # OperatorsName: X/Z/D
    ("(0008,1010)", "STATION-7"),                 # StationName: X/Z/D (K with retain-device-identity)
    ("(0008,1030)", "Liver of Mr Smith"),         # StudyDescription: X (C with clean-descriptors)
    ("(0008,0020)", "20230615"),                  # StudyDate: Z (shifted with modified dates)
    ("(0029,0010)", "SIEMENS CSA HEADER"),        # private creator (a block DCMTK's private dictionary knows)
    ("(0040,0275)[0].(0040,1001)", "REQPROC-99"),  # RequestAttributesSequence: X
    ("(0008,1120)[0].(0008,1150)", "1.2.840.10008.3.1.2.1.4"),  # ReferencedPatientSequence: X
    ("(0008,1120)[0].(0008,1155)", "1.2.3.4.5.6.7"),
]


def table():
    """{tag: (basic code, row)} from translate/dwb_deid_table.c, exact rows only."""
    with open(os.path.join(harness.SOURCE_DIR, "translate", "dwb_deid_table.c")) as f:
        src = f.read()
    rows = {}
    for m in re.finditer(r'\{0x([0-9A-F]{8})u, 0x([0-9A-F]{8})u, (\w+), (\w+), (\w+), (\w+), (\w+), (\w+), (\w+), "', src):
        if m.group(2) == "FFFFFFFF":
            rows[m.group(1)] = m.group(3).replace("DWB_DEID_", "")
    return rows


def mapped(uid, secret=SECRET):
    mac = hmac.new(secret.encode(), uid.encode(), hashlib.sha256).digest()[:16]
    return "2.25.%d" % int.from_bytes(mac, "big")


def values(ds, tag):
    a = ds.get(tag)
    return a.get("Value") if a else None


class DeidTest(TestCase):
    def setUp(self):
        super().setUp()
        self.orthanc = self.start(Orthanc(self.workdir))
        self.spool = os.path.join(self.workdir, "spool")
        self.secret_file = os.path.join(self.workdir, "uid.secret")
        with open(self.secret_file, "w") as f:
            f.write(SECRET + "\n")
        d, man = harness.gencohort(self.workdir, patients=1, studies=1, series=2, instances=2)
        self.man = man["instances"]
        self.files = [os.path.join(d, i["file"]) for i in self.man]
        for f in self.files:
            args = []
            for path, v in IDENTIFYING:
                args += ["-i", "%s=%s" % (path, v)]
            run(["dcmodify", "-nb"] + args + [f], check=True)
            # A private element once its creator is in the file (dcmodify needs the creator first, and a VR).
            run(["dcmodify", "-nb", "-i", "(0029,1008)=ACMEPRIVATE 42", f], check=True)
        # The first instance references the second in Referenced Image Sequence (X/Z/U*: kept, UIDs mapped).
        other = self.man[1]
        run(["dcmodify", "-nb", "-i", "(0008,1140)[0].(0008,1150)=%s" % other["SOPClassUID"],
             "-i", "(0008,1140)[0].(0008,1155)=%s" % other["SOPInstanceUID"], self.files[0]], check=True)
        self.source = {harness.value(harness.dcm2json(f), "00080018"): harness.dcm2json(f) for f in self.files}

    def bridge(self, url=None, ae="CLOUD", up=None, spool=None, **deid):
        deid = dict({"profile": "basic", "uid_secret_file": self.secret_file}, **deid)
        cfg = {"upstreams": [dict({"ae_title": ae, "base_url": url or self.orthanc.dicomweb_url,
                                   "stow_batch_delay_ms": 50, "retry_max_wait_s": 1, "deidentify": deid},
                                  **(up or {}))],
               "spool": dict({"dir": self.spool}, **(spool or {})), "log": {"level": "debug"}}
        return self.start(Bridge(self.workdir, cfg))

    def send(self, bridge, files, ae="CLOUD", extra=None):
        p = run(["storescu", "-d", "-aec", ae] + (extra or []) + ["127.0.0.1", str(bridge.port)] + files, timeout=120)
        return p

    def held(self, n):
        """{SOPInstanceUID: (dcm2json dict, dcmdump text)} of what Orthanc holds, once it holds n instances."""
        self.assertTrue(wait_for(lambda: len(self.orthanc.get_json("/instances")) >= n, 60),
                        "Orthanc holds %d instances, expected %d" % (len(self.orthanc.get_json("/instances")), n))
        out = {}
        for oid in self.orthanc.get_json("/instances"):
            path = os.path.join(self.workdir, "held-%s.dcm" % oid)
            with urllib.request.urlopen(self.orthanc.url + "/instances/%s/file" % oid, timeout=30) as r, \
                    open(path, "wb") as f:
                f.write(r.read())
            ds = harness.dcm2json(path)
            out[harness.value(ds, "00080018")] = (ds, run(["dcmdump", "-M", path], check=True).stdout)
        return out

    def test_basic_profile_attribute_by_attribute(self):
        rows = table()
        bridge = self.bridge()
        p = self.send(bridge, self.files)
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        held = self.held(len(self.files))
        self.assertEqual(sorted(held), sorted(mapped(u) for u in self.source), "every SOP Instance UID mapped")
        for src_uid, src in self.source.items():
            ds, dump = held[mapped(src_uid)]
            for tag, attr in src.items():
                what = "%s of %s" % (tag, src_uid)
                group = int(tag[:4], 16)
                if group & 1:
                    self.assertNotIn(tag, ds, "private %s removed" % what)
                    continue
                code = rows.get(tag)
                if code is None or code == "K":
                    self.assertEqual(ds.get(tag), attr, "%s not in the profile: kept" % what)
                elif code == "X":
                    self.assertNotIn(tag, ds, "%s is X: removed" % what)
                elif code in ("Z", "XZ"):
                    self.assertIn(tag, ds, "%s is %s: present" % (what, code))
                    self.assertFalse(ds[tag].get("Value"), "%s is %s: empty, saw %s" % (what, code, ds[tag]))
                elif code in ("D", "ZD", "XD", "XZD"):
                    self.assertIn(tag, ds, "%s is %s: present with a dummy" % (what, code))
                    if attr["vr"] != "SQ":
                        self.assertTrue(ds[tag].get("Value"), "%s: a dummy value, saw %s" % (what, ds[tag]))
                        self.assertNotEqual(ds[tag].get("Value"), attr.get("Value"), "%s: not the original" % what)
                elif code in ("U", "XZU") and attr["vr"] == "UI":
                    self.assertEqual(values(ds, tag), [mapped(v) for v in attr["Value"]], "%s mapped" % what)
            # Referenced Image Sequence: kept, the reference mapped like the referenced instance itself.
            if "00081140" in src:
                ref = src["00081140"]["Value"][0]["00081155"]["Value"][0]
                got = ds["00081140"]["Value"][0]["00081155"]["Value"][0]
                self.assertEqual(got, mapped(ref))
                self.assertIn(got, held, "the reference points at an instance the store holds")
            self.assertEqual(harness.value(ds, "00120062"), "YES")
            self.assertIn("Basic Application Level Confidentiality Profile", values(ds, "00120063")[0])
            codes = [harness.value(i, "00080100") for i in values(ds, "00120064")]
            self.assertEqual(codes, ["113100"])
            self.assertIn("(0002,0003) UI [%s]" % mapped(src_uid), dump, "Media Storage SOP Instance UID follows")
            self.assertNotIn("SECRETNAME", dump)
        # Relations kept: one study, the two series, as in the source.
        self.assertEqual({harness.value(d, "0020000D") for d, _ in held.values()},
                         {mapped(harness.value(s, "0020000D")) for s in self.source.values()})
        self.assertEqual(len({harness.value(d, "0020000E") for d, _ in held.values()}), 2)

    def test_options_keep_and_remove(self):
        bridge = self.bridge(options=["retain-uids", "retain-longitudinal-modified-dates",
                                      "retain-patient-characteristics", "retain-device-identity",
                                      "clean-descriptors"],
                             keep=["00291008"], remove=["StudyID", "00081140"])
        p = self.send(bridge, self.files[:1])
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        src_uid = self.man[0]["SOPInstanceUID"]
        src = self.source[src_uid]
        held = self.held(1)
        self.assertEqual(list(held), [src_uid], "retain-uids: the UIDs are the source's")
        ds, _ = held[src_uid]
        self.assertEqual(harness.value(ds, "0020000D"), harness.value(src, "0020000D"))
        # Modified dates: the study date moves back by the patient's offset, the time stays.
        mac = hmac.new(SECRET.encode(), b"dwb-date-shift:PID-4711", hashlib.sha256).digest()
        days = int.from_bytes(mac[:4], "big") % 3650 + 1
        self.assertEqual(harness.value(ds, "00080020"), (date(2023, 6, 15) - timedelta(days=days)).strftime("%Y%m%d"))
        self.assertEqual(ds.get("00080030"), src.get("00080030"), "Study Time kept")
        self.assertEqual(harness.value(ds, "00100040"), "F", "retain-patient-characteristics keeps Patient's Sex")
        self.assertEqual(harness.value(ds, "00101030"), 71, "and Patient's Weight")
        self.assertEqual(harness.value(ds, "00081010"), "STATION-7", "retain-device-identity keeps Station Name")
        self.assertIn("00081030", ds, "clean-descriptors: Study Description cleaned, not removed")
        self.assertFalse(ds["00081030"].get("Value"), "cleaned to an empty value")
        self.assertFalse(ds["00100010"].get("Value"), "Patient's Name is still Z")
        self.assertEqual(harness.value(ds, "00291008"), "ACMEPRIVATE 42", "keep: the private element")
        self.assertEqual(harness.value(ds, "00290010"), "SIEMENS CSA HEADER", "with its private creator")
        self.assertNotIn("00200010", ds, "remove: StudyID (Z in the table)")
        self.assertNotIn("00081140", ds, "remove: ReferencedImageSequence")
        self.assertIn("00400275", ds, "RequestAttributesSequence: X, but C under clean-descriptors")
        self.assertFalse(ds["00400275"].get("Value"), "cleaned: no items")
        # ReferencedPatientSequence: X, but K under retain-uids: kept, its reference (U, K under retain-uids) too.
        self.assertEqual(ds["00081120"]["Value"][0]["00081155"]["Value"], ["1.2.3.4.5.6.7"])
        codes = sorted(harness.value(i, "00080100") for i in values(ds, "00120064"))
        self.assertEqual(codes, ["113100", "113105", "113107", "113108", "113109", "113110"])

    def test_burned_in_refused_and_spool_never_holds_the_original(self):
        burned = os.path.join(self.workdir, "burned.dcm")
        shutil.copy(self.files[1], burned)
        run(["dcmodify", "-nb", "-i", "(0028,0301)=YES", burned], check=True)
        # The store is down (a port nobody listens on): accepted instances stay in the spool.
        bridge = self.bridge(url="http://127.0.0.1:%d/dicom-web" % harness.free_port())
        p = self.send(bridge, [burned])
        self.assertEqual(harness.status_of(p), "0xc000", "burned-in annotation refused: " + p.stdout[-1500:])
        self.assertIn("burned-in", harness.comment_of(p))
        p = self.send(bridge, self.files[:1])
        self.assertEqual(harness.status_of(p), "0x0000", p.stdout[-1500:])
        queued = glob.glob(os.path.join(self.spool, "CLOUD", "*.dcm"))
        self.assertEqual(len(queued), 1, "the accepted instance waits in the spool: %s" % queued)
        self.assertIn(mapped(self.man[0]["SOPInstanceUID"]), queued[0], "spooled under its new UID")
        for root, _, files in os.walk(self.spool):
            for f in files:
                with open(os.path.join(root, f), "rb") as fh:
                    data = fh.read()
                for secret in (b"SECRETNAME", b"PID-4711", b"Springfield", b"ACMEPRIVATE", b"SIEMENS CSA", b"REQPROC",
                               self.man[0]["SOPInstanceUID"].encode()):
                    self.assertNotIn(secret, data, "%s found in spool file %s" % (secret, f))

    def test_second_bridge_same_secret_same_uids(self):
        b1 = self.bridge(ae="CLOUD")
        self.assertEqual(self.send(b1, self.files[:1]).returncode, 0)
        first = self.held(1)
        b1.close()
        # Another bridge (another spool) with the same secret: the same new UID, so the store sees one instance.
        self.spool = os.path.join(self.workdir, "spool2")
        b2 = self.bridge(ae="CLOUD")
        self.assertEqual(self.send(b2, self.files[:1]).returncode, 0)
        self.assertTrue(wait_for(lambda: not glob.glob(os.path.join(self.spool, "CLOUD", "*.dcm")), 60))
        self.assertEqual(sorted(self.held(1)), sorted(first))

    def test_sync_mode_answers_after_the_store_holds_the_new_uid(self):
        bridge = self.bridge(up={"store_mode": "sync"})
        p = self.send(bridge, self.files[:1])
        self.assertEqual(harness.status_of(p), "0x0000", p.stdout[-1500:])
        new = mapped(self.man[0]["SOPInstanceUID"])
        got = self.orthanc.qido("/instances?SOPInstanceUID=%s" % new)
        self.assertEqual(len(got), 1, "store_mode sync: the store holds %s when the C-STORE is answered" % new)

    def test_storage_commitment_names_the_original_uids(self):
        # The modality asks commitment for the UIDs it sent; the store holds the de-identified ones: the bridge asks
        # for those and reports the modality's. An instance never sent still fails with 0x0112.
        bridge = self.bridge()
        files = self.files[:3]
        self.assertEqual(self.send(bridge, files).returncode, 0)
        sent = [self.man[i]["SOPInstanceUID"] for i in range(3)]
        sop_class = {self.man[i]["SOPInstanceUID"]: harness.value(harness.dcm2json(f), "00080016") for i, f in
                     enumerate(files)}
        never = "1.2.826.0.1.3680043.2.1143.424242"
        self.held(3)
        cmd = [os.path.join(harness.BUILD_DIR, "tests", "tools", "dwb_commitscu"), "127.0.0.1", str(bridge.port),
               "CLOUD", "COMMITSCU"] + ["%s:%s" % (sop_class[u], u) for u in sent] + [
               "%s:%s" % (sop_class[sent[0]], never)]
        p = run(cmd, timeout=120, env=harness.peer_env())
        out = p.stdout
        self.assertIn("action status 0x0000", out)
        self.assertEqual(sorted(re.findall(r"^committed (\S+)$", out, re.M)), sorted(sent), out)
        self.assertEqual(dict(re.findall(r"^failed (\S+) reason (0x[0-9a-f]{4})$", out, re.M)), {never: "0x0112"})
        for u in sent:
            self.assertEqual(self.orthanc.qido("/instances?SOPInstanceUID=%s" % u), [], "the store never saw %s" % u)

    def test_instance_over_max_instance_mb_refused_association_in_step(self):
        # Held in memory for de-identification: spool.max_instance_mb bounds it, the rest is read and dropped.
        d, man = harness.gencohort(self.workdir, name="big", patients=1, studies=1, series=1, instances=1,
                                   rows=1024, cols=1024)
        big = os.path.join(d, man["instances"][0]["file"])
        self.assertGreater(os.path.getsize(big), 1 << 20)
        bridge = self.bridge(spool={"max_instance_mb": 1})
        p = self.send(bridge, [big] + self.files[:1], extra=["--no-halt"])
        statuses = re.findall(r"DIMSE Status\s*:\s*(0x[0-9a-fA-F]{4})", p.stdout)
        self.assertEqual([x.lower() for x in statuses], ["0xa700", "0x0000"],
                         "the large one Out of Resources, the association still in step: " + p.stdout[-1500:])
        self.assertEqual(list(self.held(1)), [mapped(self.man[0]["SOPInstanceUID"])], "only the small one stored")
        self.assertIn("spool.max_instance_mb", bridge.log())

    def test_check_config_refuses_unsupported(self):
        ok = {"profile": "basic", "uid_secret_file": self.secret_file}
        for deid, msg in [
                (dict(ok, options=["retain-safe-private"]), "\"retain-safe-private\" is not supported"),
                (dict(ok, options=["retain-longitudinal-full-dates", "retain-longitudinal-modified-dates"]),
                 "exclude each other"),
                ({"profile": "basic"}, "uid_secret_file: required"),
                ({"profile": "extended", "uid_secret_file": self.secret_file}, "expected \"basic\"")]:
            cfg = {"upstreams": [{"ae_title": "CLOUD", "base_url": "http://127.0.0.1:1/x", "deidentify": deid}],
                   "spool": {"dir": self.spool}}
            path = os.path.join(self.workdir, "c.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            p = run([harness.BINARY, "check-config", "--config", path])
            self.assertNotEqual(p.returncode, 0, "refused: %s" % deid)
            self.assertIn(msg, p.stdout, deid)


if __name__ == "__main__":
    harness.main()
