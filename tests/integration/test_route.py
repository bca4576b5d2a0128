"""Routing C-STOREs by tag (issue 28 item 2) into three real Orthanc stores: instances sent by storescu to the
routing AE title arrive in the stores their Modality and StudyDescription route them to (route_to "first" and
"all"); an instance no route matches is refused with a Failure and lands nowhere; a store that is down holds back
only its own queue and gets each of its instances exactly once when it is back; kill -9 of the bridge right after
the acknowledgements, then a restart: everything delivered, once. A route to a plain and a de-identifying upstream:
each store gets its own copy (the original, the de-identified one), and the de-identifying spool never holds the
original's bytes."""
import glob
import hashlib
import hmac
import json
import os
import signal
import time

import harness
from harness import Bridge, Orthanc, TestCase, run, wait_for

ROUTER = "ROUTER"
DEID_SECRET = "route-deid-secret-0123456789"
DEID_NAME = "ROUTEDSECRET^PATIENTNAME"


def mapped(uid, secret=DEID_SECRET):
    """The bridge's UID mapping (HMAC-SHA256, first 128 bits, after 2.25.), as test_deid computes it."""
    return "2.25.%d" % int.from_bytes(hmac.new(secret.encode(), uid.encode(), hashlib.sha256).digest()[:16], "big")

# Filters in the syntax of routes[].filter; upstreams by AE title.
ROUTES = [
    {"filter": "Modality=SEG&StudyDescription=*liver*", "upstreams": ["A", "B"]},
    {"filter": "Modality=SEG", "upstreams": ["B", "C"]},
    {"filter": "Modality=CT\\MR", "upstreams": ["B"]},
]


class RouteTest(TestCase):
    def instances(self, kinds):
        """One instance per (name, modality, study description): a cohort's instances re-labelled by dcmodify.
        Returns {name: (path, SOP Instance UID)}."""
        d, man = harness.gencohort(self.workdir, patients=1, studies=1, series=1, instances=len(kinds))
        out = {}
        for (name, modality, desc), inst in zip(kinds, man["instances"]):
            path = os.path.join(d, inst["file"])
            run(["dcmodify", "-nb", "-m", "(0008,0060)=" + modality, "-m", "(0008,1030)=" + desc, path], check=True)
            out[name] = (path, inst["SOPInstanceUID"])
        return out

    def stores(self, names, start=True):
        """Orthanc stores named by AE title, each on ports fixed now so that a store can start later."""
        st = {}
        for n in names:
            port = harness.free_port()
            st[n] = self.start(Orthanc(self.workdir, aet=n, http_port=port)) if start else port
        return st

    def config(self, ports, route_to, routes=ROUTES):
        return {"upstreams": [{"ae_title": n, "base_url": "http://127.0.0.1:%d/dicom-web" % p, "max_retries": 1,
                               "retry_budget_s": 1, "connect_timeout_s": 1, "retry_max_wait_s": 1,
                               "stow_batch_delay_ms": 20} for n, p in sorted(ports.items())],
                "routes": routes, "route_to": route_to, "routing_ae_title": ROUTER,
                "spool": {"dir": os.path.join(self.workdir, "spool")}, "log": {"level": "debug"}}

    def storescu(self, port, files, extra=None):
        return run(["storescu", "-d", "-aec", ROUTER] + (extra or []) + ["127.0.0.1", str(port)] + files, timeout=120)

    def spooled(self, ae):
        return sorted(glob.glob(os.path.join(self.workdir, "spool", ae, "*.dcm")))

    def assert_stores(self, stores, expected, timeout=60):
        """Each store holds exactly the expected SOP Instance UIDs (QIDO-RS), and as many instances (Orthanc's
        count), once its spool is empty."""
        for ae, uids in expected.items():
            want = sorted(uids)
            got = wait_for(lambda: stores[ae].instance_uids() if stores[ae].instance_uids() == want else None,
                           timeout=timeout)
            self.assertEqual(stores[ae].instance_uids(), want, "store %s: expected %s, saw %s" % (ae, want, got))
            self.assertEqual(len(stores[ae].get_json("/instances")), len(want), "instances in store %s" % ae)
            self.assertTrue(wait_for(lambda: not self.spooled(ae)), "spool of %s still holds %s" % (ae, self.spooled(ae)))

    KINDS = [("liver1", "SEG", "CT liver perfusion"), ("liver2", "SEG", "liver segmentation"),
             ("brain", "SEG", "brain tumour"), ("ct", "CT", "chest"), ("mr", "MR", "knee")]

    def send_kinds(self, route_to):
        inst = self.instances(self.KINDS)
        stores = self.stores(["A", "B", "C"])
        bridge = self.start(Bridge(self.workdir, self.config({n: s.http_port for n, s in stores.items()}, route_to)))
        p = self.storescu(bridge.port, [inst[k[0]][0] for k in self.KINDS])
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        self.assertNotIn("Status: 0xc", p.stdout.lower())
        return {k: v[1] for k, v in inst.items()}, stores, bridge

    def test_route_to_first(self):
        u, stores, _ = self.send_kinds("first")
        # liver: the first route (A, B); brain: SEG only (B, C); CT and MR: B.
        self.assert_stores(stores, {"A": [u["liver1"], u["liver2"]],
                                    "B": [u["liver1"], u["liver2"], u["brain"], u["ct"], u["mr"]],
                                    "C": [u["brain"]]})

    def test_route_to_all(self):
        u, stores, bridge = self.send_kinds("all")
        # liver matches the first two routes: A, B and C, B once.
        self.assert_stores(stores, {"A": [u["liver1"], u["liver2"]],
                                    "B": [u["liver1"], u["liver2"], u["brain"], u["ct"], u["mr"]],
                                    "C": [u["liver1"], u["liver2"], u["brain"]]})
        self.assertIn("C-STORE %s routed to A,B,C" % u["liver1"], bridge.log())

    def test_no_route_is_refused_and_stored_nowhere(self):
        inst = self.instances([("ot", "OT", "liver photo"), ("ct", "CT", "chest")])
        stores = self.stores(["A", "B", "C"])
        bridge = self.start(Bridge(self.workdir, self.config({n: s.http_port for n, s in stores.items()}, "all")))
        p = self.storescu(bridge.port, [inst["ot"][0]])
        self.assertEqual(harness.status_of(p), "0xc000", "expected the Failure 0xC000 for no route:\n" + p.stdout[-2000:])
        self.assertEqual(harness.comment_of(p), "no route for this instance")
        # The same association goes on: a routable instance after it is stored.
        p = self.storescu(bridge.port, [inst["ot"][0], inst["ct"][0]], ["--no-halt"])
        self.assertEqual(harness.status_of(p), "0x0000", p.stdout[-2000:])
        self.assert_stores(stores, {"B": [inst["ct"][1]]})
        time.sleep(1)
        for ae in "AC":
            self.assertEqual(stores[ae].instance_uids(), [], "store %s" % ae)
        for ae in "ABC":
            self.assertEqual(self.spooled(ae), [], "spool %s" % ae)
        self.assertEqual(glob.glob(os.path.join(self.workdir, "spool", ".routing", "*.dcm*")), [],
                         "nothing left in the staging directory")
        lines = [l for l in bridge.log().splitlines() if "no route matches it" in l]
        self.assertEqual(len(lines), 2, "one log line per refused instance:\n" + "\n".join(lines))
        self.assertIn(inst["ot"][1], lines[0])

    def test_store_down_holds_back_only_its_own_queue(self):
        inst = self.instances(self.KINDS)
        u = {k: v[1] for k, v in inst.items()}
        stores = self.stores(["A", "C"])
        b_port = harness.free_port()
        ports = {"A": stores["A"].http_port, "B": b_port, "C": stores["C"].http_port}
        bridge = self.start(Bridge(self.workdir, self.config(ports, "all")))
        p = self.storescu(bridge.port, [v[0] for v in inst.values()])
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        self.assertNotIn("Status: 0xc", p.stdout.lower())
        # A and C receive while B is down; B's queue waits, one file per instance although two routes name B.
        self.assert_stores(stores, {"A": [u["liver1"], u["liver2"]], "C": [u["liver1"], u["liver2"], u["brain"]]})
        queued = self.spooled("B")
        self.assertEqual(len(queued), 5, "B's spool: one file per instance, saw %s" % queued)
        self.assertEqual(sorted(f.rsplit("-", 1)[-1][:-4] for f in queued), sorted(u.values()))
        stores["B"] = self.start(Orthanc(self.workdir, aet="B", http_port=b_port))
        self.assert_stores(stores, {"B": sorted(u.values())}, timeout=90)
        # Sending all of it again must not add an instance anywhere.
        p = self.storescu(bridge.port, [v[0] for v in inst.values()])
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        self.assert_stores(stores, {"A": [u["liver1"], u["liver2"]], "B": sorted(u.values()),
                                    "C": [u["liver1"], u["liver2"], u["brain"]]})

    def test_kill9_right_after_acknowledgement_delivers_once(self):
        inst = self.instances(self.KINDS)
        u = {k: v[1] for k, v in inst.items()}
        # A and C up (their uploads race the kill), B down (its whole queue spans the crash).
        stores = self.stores(["A", "C"])
        b_port = harness.free_port()
        cfg = self.config({"A": stores["A"].http_port, "B": b_port, "C": stores["C"].http_port}, "all")
        bridge = self.start(Bridge(self.workdir, cfg))
        p = self.storescu(bridge.port, [v[0] for v in inst.values()])
        bridge.stop(signal.SIGKILL)
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        self.assertNotIn("Status: 0xc", p.stdout.lower())
        self.assertEqual(len(self.spooled("B")), 5, "B's spool after the kill: %s" % self.spooled("B"))
        stores["B"] = self.start(Orthanc(self.workdir, aet="B", http_port=b_port))
        bridge.restart()
        self.assert_stores(stores, {"A": [u["liver1"], u["liver2"]], "B": sorted(u.values()),
                                    "C": [u["liver1"], u["liver2"], u["brain"]]})

    def deid_setup(self, kinds, deid_up):
        """Instances of kinds with DEID_NAME as PatientName, the PLAIN store up, DEID's store up or not (its port
        fixed), and a bridge routing SEG to both, DEID de-identifying. Returns (instances, stores, DEID's port,
        bridge)."""
        inst = self.instances(kinds)
        for path, _ in inst.values():
            run(["dcmodify", "-nb", "-i", "(0010,0010)=" + DEID_NAME, path], check=True)
        secret_file = os.path.join(self.workdir, "uid.secret")
        with open(secret_file, "w") as f:
            f.write(DEID_SECRET + "\n")
        stores = self.stores(["PLAIN"])
        deid_port = harness.free_port()
        if deid_up:
            stores["DEID"] = self.start(Orthanc(self.workdir, aet="DEID", http_port=deid_port))
        cfg = self.config({"PLAIN": stores["PLAIN"].http_port, "DEID": deid_port}, "first",
                          [{"filter": "Modality=SEG", "upstreams": ["PLAIN", "DEID"]}])
        for up in cfg["upstreams"]:
            if up["ae_title"] == "DEID":
                up["deidentify"] = {"profile": "basic", "uid_secret_file": secret_file}
        bridge = self.start(Bridge(self.workdir, cfg))
        return inst, stores, deid_port, bridge

    def spool_files(self, ae):
        """Every file under a spool directory (queued, temporary, failed/), with its bytes."""
        out = {}
        for dirpath, _, names in os.walk(os.path.join(self.workdir, "spool", ae)):
            for n in names:
                with open(os.path.join(dirpath, n), "rb") as f:
                    out[os.path.join(dirpath, n)] = f.read()
        return out

    def test_plain_and_deidentifying_upstream_each_get_their_copy(self):
        inst, stores, deid_port, bridge = self.deid_setup([("seg1", "SEG", "liver"), ("seg2", "SEG", "lung")], False)
        src = {uid: harness.dcm2json(path) for path, uid in inst.values()}
        p = self.storescu(bridge.port, [v[0] for v in inst.values()])
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        self.assertNotIn("Status: 0xc", p.stdout.lower())
        self.assertNotIn("Status: 0xa", p.stdout.lower())
        # DEID's store is down: its spool holds one file per instance, under the mapped UID, none with the name.
        queued = self.spooled("DEID")
        self.assertEqual(sorted(f.rsplit("-", 1)[-1][:-4] for f in queued), sorted(mapped(u) for u in src),
                         "DEID's spool: the de-identified copies under their new UIDs, saw %s" % queued)
        files = self.spool_files("DEID")
        self.assertTrue(files)
        for path, data in files.items():
            self.assertNotIn(DEID_NAME.encode(), data, "the original PatientName in DEID's spool file %s" % path)
            for uid in src:
                self.assertNotIn(uid.encode(), data, "an original SOP Instance UID in DEID's spool file %s" % path)
        # PLAIN has the originals, untouched.
        self.assert_stores(stores, {"PLAIN": sorted(src)})
        for uid, ds in src.items():
            got = stores["PLAIN"].qido("/instances?SOPInstanceUID=%s&includefield=00100010&includefield=0020000D"
                                       % uid)
            self.assertEqual(len(got), 1)
            self.assertEqual(harness.value(got[0], "00100010"), DEID_NAME, "PLAIN holds the original PatientName")
            self.assertEqual(harness.value(got[0], "0020000D"), harness.value(ds, "0020000D"))
        # DEID's store comes up and gets the de-identified copies.
        stores["DEID"] = self.start(Orthanc(self.workdir, aet="DEID", http_port=deid_port))
        self.assert_stores(stores, {"DEID": sorted(mapped(u) for u in src)}, timeout=90)
        for uid, ds in src.items():
            got = stores["DEID"].qido("/instances?SOPInstanceUID=%s&includefield=00100010&includefield=0020000D"
                                      "&includefield=0020000E&includefield=00120062" % mapped(uid))
            self.assertEqual(len(got), 1)
            self.assertNotEqual(harness.value(got[0], "00100010"), DEID_NAME, "DEID: PatientName replaced")
            for tag in ("0020000D", "0020000E"):
                self.assertEqual(harness.value(got[0], tag), mapped(harness.value(ds, tag)), "DEID: %s mapped" % tag)
                self.assertTrue(harness.value(got[0], tag).startswith("2.25."))
        for oid in stores["DEID"].get_json("/instances"):
            tags = stores["DEID"].get_json("/instances/%s/simplified-tags" % oid)
            self.assertEqual(tags.get("PatientIdentityRemoved"), "YES", "DEID: Patient Identity Removed")
            self.assertNotEqual(tags.get("PatientName"), DEID_NAME)
        self.assertEqual(glob.glob(os.path.join(self.workdir, "spool", ".routing", "*.dcm*")), [],
                         "nothing left in the staging directory")
        self.assertIn("routed to DEID,PLAIN", bridge.log())  # upstreams[] order
        # Sent again: no second copy anywhere (the DEID spool recognises the mapped UID).
        p = self.storescu(bridge.port, [v[0] for v in inst.values()])
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        self.assert_stores(stores, {"PLAIN": sorted(src), "DEID": sorted(mapped(u) for u in src)})

    def test_burned_in_refused_for_every_target(self):
        inst, stores, _, bridge = self.deid_setup([("seg", "SEG", "liver")], True)
        run(["dcmodify", "-nb", "-i", "(0028,0301)=YES", inst["seg"][0]], check=True)
        p = self.storescu(bridge.port, [inst["seg"][0]])
        self.assertEqual(harness.status_of(p), "0xc000", "burned-in to a de-identifying target:\n" + p.stdout[-2000:])
        self.assertEqual(harness.comment_of(p), "burned-in annotation: not de-identifiable")
        time.sleep(1)
        for ae in ("PLAIN", "DEID"):
            self.assertEqual([f for f in self.spool_files(ae) if ".dcm" in f], [],
                             "spool %s: nothing, not even the plain copy" % ae)
            self.assertEqual(stores[ae].instance_uids(), [], "store %s" % ae)
        self.assertEqual(glob.glob(os.path.join(self.workdir, "spool", ".routing", "*.dcm*")), [])

    def test_check_config_names_the_bad_route(self):
        cases = [
            ([{"filter": "Modality=SEG", "upstreams": ["A", "Z"]}], "routes[0].upstreams: 'Z' is not the ae_title of any of upstreams[]"),
            ([{"filter": "Modality=SEG"}, {"filter": "Modalty=CT", "upstreams": ["A"]}],
             "routes[0].upstreams: required"),
            ([{"filter": "Modalty=CT", "upstreams": ["A"]}],
             "routes[0].filter: key 'Modalty' is neither a known keyword nor a tag"),
            ([{"filter": "", "upstreams": ["A"]}], "routes[0].filter: expected a non-empty string"),
            ([{"filter": "Modality=CT&", "upstreams": ["A"]}], "routes[0].filter: part 2 is empty"),
        ]
        for routes, expected in cases:
            cfg = self.config({"A": 1, "B": 2}, "first", routes)
            path = os.path.join(self.workdir, "bad.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            p = run([harness.BINARY, "check-config", "--config", path])
            self.assertEqual(p.returncode, 2, "expected exit 2 for %s, saw %d: %s" % (routes, p.returncode, p.stdout))
            self.assertIn(expected, p.stdout, "routes %s" % routes)


if __name__ == "__main__":
    harness.main()
