"""C-FIND through the bridge against Orthanc's DICOMweb over a generated cohort: every answer is checked against
the cohort (PS3.4 matching computed here independently), at all four levels, in both information models, with
paging forced by a tiny qido_page_size, C-CANCEL, character sets, and the error statuses."""
import http.server
import json
import os
import re
import socketserver
import subprocess
import threading
import time
import unittest

import dimse_raw as dr
import harness
from faultstore import FaultStore
from harness import comment_of, status_of
from harness import Bridge, Orthanc, findscu, run, value

PATIENTS, STUDIES, SERIES, INSTANCES = 6, 2, 2, 2


def studies_of(manifest):
    out = {}
    for i in manifest["instances"]:
        s = out.setdefault(i["StudyInstanceUID"], {"PatientName": i["PatientName"], "PatientID": i["PatientID"],
                                                    "StudyDate": i["StudyDate"], "modalities": set(),
                                                    "series": set(), "instances": 0})
        s["modalities"].add(i["Modality"])
        s["series"].add(i["SeriesInstanceUID"])
        s["instances"] += 1
    return out






class FindTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.workdir = tempfile.mkdtemp(prefix="dwb-it-find-")
        cls.cohort, cls.manifest = harness.gencohort(cls.workdir, patients=PATIENTS, studies=STUDIES, series=SERIES,
                                                     instances=INSTANCES, latin1_patient=True)
        cls.orthanc = Orthanc(cls.workdir)
        cls.orthanc.upload([os.path.join(cls.cohort, i["file"]) for i in cls.manifest["instances"]])
        # HELD: Orthanc behind a store that logs every request with its arrival time and, while a test sets
        # cls.hold_offset, holds the study query of that offset (forwarded, its answer kept back) until cls.release.
        cls.hold_offset, cls.release = None, threading.Event()

        def policy(n, method, path, uids):
            if cls.hold_offset is not None and re.search(r"/studies\?.*\boffset=%d\b" % cls.hold_offset, path):
                return ("hold", cls.release)
            return None
        cls.held_store = FaultStore(cls.orthanc.http_port, policy=policy)
        cls.bridge = Bridge(cls.workdir, {
            "upstreams": [
                {"ae_title": "ORTHANC", "base_url": cls.orthanc.dicomweb_url, "qido_page_size": 3},
                {"ae_title": "HELD", "base_url": cls.held_store.url, "qido_page_size": 3},
                {"ae_title": "ORTHANCXML", "base_url": cls.orthanc.dicomweb_url, "qido_page_size": 5,
                 "metadata_format": "xml"},
                {"ae_title": "DEAD", "base_url": "http://127.0.0.1:%d/dicom-web" % harness.free_port(),
                 "max_retries": 1, "retry_budget_s": 2},
                {"ae_title": "WRONGPATH", "base_url": cls.orthanc.url + "/no-such-root"},
            ],
            "log": {"level": "debug"}})
        cls.studies = studies_of(cls.manifest)

    @classmethod
    def tearDownClass(cls):
        # The bridge's log and exit status are checked (a sanitizer report fails the module), logs kept then.
        cls.release.set()
        cls.held_store.close()
        harness.close_shared([cls.orthanc, cls.bridge], cls.workdir)

    def find(self, keys, model="S", aec="ORTHANC", extra=None):
        p, res = findscu(self.bridge.port, aec, keys, model=model, extra=(extra or []) + ["-d"],
                         workdir=self.workdir)
        self.assertEqual(p.returncode, 0, p.stdout[-3000:])
        return p, res

    def assertUids(self, res, expected, what):
        got = sorted(value(r, "0020000D") for r in res)
        self.assertEqual(got, sorted(expected), "%s: expected %d studies, got %d" % (what, len(expected), len(got)))

    # ---- STUDY level ----

    def test_study_universal_with_paging_and_derived(self):
        p, res = self.find(["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "StudyDate",
                            "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"])
        self.assertUids(res, self.studies.keys(), "universal")
        self.assertEqual(status_of(p), "0x0000")
        for r in res:
            s = self.studies[value(r, "0020000D")]
            self.assertEqual(sorted(r["00080061"]["Value"]), sorted(s["modalities"]))
            self.assertEqual(int(value(r, "00201206")), len(s["series"]))
            self.assertEqual(int(value(r, "00201208")), s["instances"])
            self.assertEqual(value(r, "00080020"), s["StudyDate"])
            self.assertEqual(value(r, "00080054"), "ORTHANC", "RetrieveAETitle must be the upstream AE")
            self.assertEqual(value(r, "00080052"), "STUDY")
            self.assertNotIn("00100020", r, "PatientID was not requested and is not required in Study Root")
        # 12 studies in pages of 3: the bridge walked through several pages.
        self.assertIn("offset=9", self.bridge.log())

    def test_study_pn_wildcard_case_insensitive(self):
        p, res = self.find(["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName=smith*"])
        exp = [u for u, s in self.studies.items() if s["PatientName"].lower().startswith("smith")]
        self.assertEqual(len(exp), 2 * STUDIES)
        self.assertUids(res, exp, "PatientName=smith*")

    def test_study_pn_non_ascii_utf8(self):
        p, res = self.find(["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName=Müller*",
                            "SpecificCharacterSet=ISO_IR 192"])
        exp = [u for u, s in self.studies.items() if s["PatientName"].startswith("Müller")]
        self.assertEqual(len(exp), STUDIES)
        self.assertUids(res, exp, "PatientName=Müller*")
        for r in res:
            self.assertEqual(value(r, "00100010"), "Müller^Jürgen")

    def test_study_latin1_request_gets_latin1_answer(self):
        # The SCU speaks ISO_IR 100: the key arrives in Latin-1 and the answer comes back in Latin-1.
        out = os.path.join(self.workdir, "l1")
        os.makedirs(out, exist_ok=True)
        cmd = [b"findscu", b"-S", b"-aec", b"ORTHANC", b"-X", b"-od", out.encode(),
               b"-k", b"QueryRetrieveLevel=STUDY", b"-k", b"SpecificCharacterSet=ISO_IR 100",
               b"-k", "PatientName=Gärtner*".encode("latin-1"), b"-k", b"StudyInstanceUID",
               b"127.0.0.1", str(self.bridge.port).encode()]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=harness.peer_env(), timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout)
        files = sorted(os.listdir(out))
        self.assertEqual(len(files), STUDIES, p.stdout)
        dump = run(["dcmdump", os.path.join(out, files[0])]).stdout
        self.assertIn("ISO_IR 100", dump, "answer should be in the request's character set")
        j = harness.dcm2json(os.path.join(out, files[0]))
        self.assertEqual(value(j, "00100010"), "Gärtner^Björn")

    def test_study_date_ranges(self):
        dates = sorted(s["StudyDate"] for s in self.studies.values())
        mid = dates[len(dates) // 2]
        for rng, pred in [("%s-%s" % (dates[2], dates[8]), lambda d: dates[2] <= d <= dates[8]),
                          ("-%s" % mid, lambda d: d <= mid),
                          ("%s-" % mid, lambda d: d >= mid),
                          (mid, lambda d: d == mid)]:
            p, res = self.find(["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "StudyDate=" + rng])
            exp = [u for u, s in self.studies.items() if pred(s["StudyDate"])]
            self.assertUids(res, exp, "StudyDate=" + rng)

    def test_study_uid_list_and_modalities(self):
        uids = sorted(self.studies)[:2]
        p, res = self.find(["QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + "\\".join(uids)])
        self.assertUids(res, uids, "UID list")
        p, res = self.find(["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "ModalitiesInStudy=CR"])
        exp = [u for u, s in self.studies.items() if "CR" in s["modalities"]]
        self.assertTrue(exp)
        self.assertUids(res, exp, "ModalitiesInStudy=CR")

    def test_xml_metadata_format_gives_the_same_answer(self):
        p, res = self.find(["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "StudyDate"],
                           aec="ORTHANCXML")
        self.assertUids(res, self.studies.keys(), "XML")
        by = {value(r, "0020000D"): r for r in res}
        for u, s in self.studies.items():
            self.assertEqual(value(by[u], "00080020"), s["StudyDate"])

    # ---- PATIENT, SERIES, IMAGE ----

    def test_patient_level_patient_root(self):
        p, res = self.find(["QueryRetrieveLevel=PATIENT", "PatientID", "PatientName",
                            "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
                            "NumberOfPatientRelatedInstances"], model="P")
        self.assertEqual(sorted(value(r, "00100020") for r in res), sorted({s["PatientID"] for s in self.studies.values()}))
        for r in res:
            self.assertEqual(int(value(r, "00201200")), STUDIES)
            self.assertEqual(int(value(r, "00201202")), STUDIES * SERIES)
            self.assertEqual(int(value(r, "00201204")), STUDIES * SERIES * INSTANCES)

    def test_study_level_patient_root_needs_patient_id(self):
        p, res = self.find(["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], model="P")
        self.assertEqual(res, [])
        self.assertEqual(status_of(p), "0xa900")
        self.assertIn("PatientID", comment_of(p))
        pid = sorted(s["PatientID"] for s in self.studies.values())[0]
        p, res = self.find(["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID=" + pid], model="P")
        self.assertUids(res, [u for u, s in self.studies.items() if s["PatientID"] == pid], "Patient Root study")
        for r in res:
            self.assertEqual(value(r, "00100020"), pid, "Patient Root responses carry PatientID")

    def test_series_and_image_levels(self):
        study = sorted(self.studies)[0]
        rows = [i for i in self.manifest["instances"] if i["StudyInstanceUID"] == study]
        p, res = self.find(["QueryRetrieveLevel=SERIES", "StudyInstanceUID=" + study, "SeriesInstanceUID",
                            "Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances"])
        series = {i["SeriesInstanceUID"]: i for i in rows}
        self.assertEqual(sorted(value(r, "0020000E") for r in res), sorted(series))
        for r in res:
            self.assertEqual(value(r, "00080060"), series[value(r, "0020000E")]["Modality"])
            self.assertEqual(int(value(r, "00201209")), INSTANCES)
            self.assertEqual(value(r, "0020000D"), study, "unique keys of higher levels are returned")
        mod = rows[0]["Modality"]
        p, res = self.find(["QueryRetrieveLevel=SERIES", "StudyInstanceUID=" + study, "SeriesInstanceUID",
                            "Modality=" + mod])
        self.assertEqual(sorted(value(r, "0020000E") for r in res),
                         sorted({i["SeriesInstanceUID"] for i in rows if i["Modality"] == mod}))
        se = rows[0]["SeriesInstanceUID"]
        p, res = self.find(["QueryRetrieveLevel=IMAGE", "StudyInstanceUID=" + study, "SeriesInstanceUID=" + se,
                            "SOPInstanceUID", "InstanceNumber", "SOPClassUID"])
        exp = {i["SOPInstanceUID"]: i for i in rows if i["SeriesInstanceUID"] == se}
        self.assertEqual(sorted(value(r, "00080018") for r in res), sorted(exp))
        for r in res:
            self.assertEqual(str(value(r, "00200013")), exp[value(r, "00080018")]["InstanceNumber"])
        p, res = self.find(["QueryRetrieveLevel=IMAGE", "StudyInstanceUID=" + study, "SeriesInstanceUID=" + se,
                            "SOPInstanceUID", "InstanceNumber=2"])
        self.assertEqual(len(res), 1)

    def test_series_level_without_study_uid_is_refused(self):
        p, res = self.find(["QueryRetrieveLevel=SERIES", "SeriesInstanceUID"])
        self.assertEqual(status_of(p), "0xa900")
        self.assertIn("StudyInstanceUID", comment_of(p))

    # ---- cancel and errors ----

    def test_cancel_stops_paging(self):
        """C-CANCEL while the second page (offset 3) is at the store, held there: the bridge answers 0xFE00 while
        that request is still held, after the first page's matches only, and asks the store for nothing more; the
        page in flight when the cancel came is the only request after the first (conf/README.md: "C-CANCEL stops
        at once: no further HTTP request is made"). Seen failing with a build whose QIDO-RS transfers do not look
        for C-CANCEL, only the gaps between pages (answered once the held page was let go), which the check it
        replaces (fewer than 4 pages, "cancelled" in the log) let pass."""
        fs = self.held_store
        n0 = len(fs.log)
        type(self).hold_offset = 3
        self.release.clear()
        self.addCleanup(setattr, type(self), "hold_offset", None)
        self.addCleanup(self.release.set)
        a = dr.Association(self.bridge.port, "HELD", "FINDSCU",
                           contexts=[(1, dr.FIND_STUDY, [dr.IMPLICIT_LE]), (3, dr.VERIFICATION, [dr.IMPLICIT_LE])])
        self.addCleanup(a.close)
        ident = dr.el_implicit(0x0008, 0x0052, dr.padded("STUDY")) + dr.el_implicit(0x0020, 0x000D, b"")
        msg_id = a.find_start(1, ident)
        held = harness.wait_for(lambda: [e for e in fs.log[n0:] if "offset=3" in e.path], timeout=30, step=0.01)
        self.assertTrue(held, "the second page never reached the store: %s" % [e.path for e in fs.log[n0:]])
        t_cancel = time.time()
        final, pending, answered_while_held = a.cancel_held(1, msg_id, self.release.set)
        # The association serves its next request only once the C-FIND has returned: after this echo the bridge
        # makes no further request for it.
        self.assertEqual(a.echo(3), 0x0000)
        a.release()
        self.assertEqual(dr.status(final), 0xFE00, "C-FIND status after C-CANCEL")
        self.assertTrue(answered_while_held, "the cancel was answered only after the held page was let go")
        self.assertLessEqual(pending, 3, "matches beyond the first page (pages of 3)")
        asked = [(e.t, e.path) for e in fs.log[n0:]]
        self.assertEqual([re.search(r"offset=(\d+)", p).group(1) for _, p in asked], ["0", "3"],
                         "store requests for the cancelled C-FIND: the first page and the page in flight at the "
                         "cancel, nothing after it: %s" % asked)
        self.assertEqual([p for t, p in asked if t >= t_cancel], [], "requests that reached the store after the cancel")

    def test_unreachable_store_is_out_of_resources(self):
        p, res = self.find(["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], aec="DEAD")
        self.assertEqual(status_of(p), "0xa700")
        self.assertIn("unreachable", comment_of(p))

    def test_store_404_is_a_failure_with_the_code(self):
        p, res = self.find(["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], aec="WRONGPATH")
        self.assertEqual(status_of(p), "0xc000")
        self.assertIn("404", comment_of(p))
        # The bridge keeps serving.
        p, res = self.find(["QueryRetrieveLevel=STUDY", "StudyInstanceUID"])
        self.assertEqual(len(res), len(self.studies))


class CappingStoreTest(harness.TestCase):
    """A store that caps every page below the requested limit and says so in a Warning header (as Google does),
    and one that ignores offset altogether."""

    def serve(self, cap, honour_offset=True):
        studies = [{"0020000D": {"vr": "UI", "Value": ["1.2.3.%d" % i]},
                    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^N%d" % i}]}} for i in range(7)]
        seen = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                import urllib.parse as up
                q = up.parse_qs(up.urlparse(self.path).query)
                off = int(q.get("offset", ["0"])[0]) if honour_offset else 0
                lim = int(q.get("limit", ["100"])[0])
                seen.append((off, lim))
                page = studies[off:off + min(lim, cap)]
                body = json.dumps(page).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/dicom+json")
                if off + len(page) < len(studies) and len(page) < lim:
                    self.send_header("Warning", '299 test: "The number of results exceeded the maximum, truncated"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        return "http://127.0.0.1:%d/dicom-web" % srv.server_address[1], seen

    def test_capped_pages_with_warning_are_followed(self):
        url, seen = self.serve(cap=2)
        bridge = self.start(Bridge(self.workdir, {"upstreams": [{"ae_title": "CAP", "base_url": url, "qido_page_size": 5}]}))
        p, res = findscu(bridge.port, "CAP", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName"],
                         extra=["-d"], workdir=self.workdir)
        self.assertEqual(sorted(value(r, "0020000D") for r in res), ["1.2.3.%d" % i for i in range(7)])
        self.assertEqual([o for o, _ in seen], [0, 2, 4, 6], "offsets follow what the store returned")

    def test_store_ignoring_offset_is_an_error_not_a_loop(self):
        url, seen = self.serve(cap=3, honour_offset=False)
        bridge = self.start(Bridge(self.workdir, {"upstreams": [{"ae_title": "CAP", "base_url": url, "qido_page_size": 3}]}))
        p, res = findscu(bridge.port, "CAP", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], extra=["-d"],
                         workdir=self.workdir)
        self.assertEqual(status_of(p), "0xc000", p.stdout[-1500:])
        self.assertLessEqual(len(seen), 3)
        self.assertEqual(len(res), 3, "the repeated page is not answered twice")
        self.assertIn("ignores the QIDO offset", bridge.log())


class HostileStoreTest(harness.TestCase):
    """A store that answers garbage: malformed JSON, deep nesting, a huge claimed body."""

    def serve(self, body, ctype="application/dicom+json"):
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        return "http://127.0.0.1:%d/dicom-web" % srv.server_address[1]

    def test_bad_bodies_fail_cleanly(self):
        cases = [(b"[{", "unreadable"), (b"[" * 5000 + b"]" * 5000, "unreadable"),
                 (b'[{"00100010": {"vr": "PN", "Value": ["not an object"]}}]', "unreadable"),
                 (b'[{"00100010": {"vr": "ZZ"}}]', "unreadable"),
                 (b"--xyz\r\nContent-Type: application/dicom+xml\r\n\r\n<!DOCTYPE x [<!ENTITY a \"aaaa\">]><x>&a;</x>",
                  "unreadable")]
        ups = []
        for i, (body, _) in enumerate(cases):
            ct = "multipart/related; type=\"application/dicom+xml\"; boundary=xyz" if body.startswith(b"--") else \
                "application/dicom+json"
            ups.append({"ae_title": "BAD%d" % i, "base_url": self.serve(body, ct)})
        bridge = self.start(Bridge(self.workdir, {"upstreams": ups, "log": {"level": "debug"}}))
        for i, (body, word) in enumerate(cases):
            p, res = findscu(bridge.port, "BAD%d" % i, ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
                             extra=["-d"], workdir=self.workdir)
            self.assertEqual(status_of(p), "0xc000", "case %d: %s" % (i, p.stdout[-1500:]))
            self.assertIn(word, comment_of(p), "case %d" % i)
            self.assertEqual(harness.echoscu(bridge.port, "BAD0").returncode, 0, "bridge must keep serving")


if __name__ == "__main__":
    harness.main()
