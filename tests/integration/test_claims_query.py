"""Documented C-FIND behaviour checked against stores that differ from Orthanc on purpose: a store that answers
more than it was asked (the bridge re-applies every key locally), and stores that answer 406 to one metadata
format (the bridge falls back to the other one)."""
import os
import re
import shutil
import tempfile
import unittest
import urllib.parse

import harness
import peers
from harness import Bridge, Orthanc, findscu


def loosen(path):
    """The query without its filters: only paging and includefield survive, so every study comes back."""
    base, _, q = path.partition("?")
    keep = [(k, v) for k, v in urllib.parse.parse_qsl(q, keep_blank_values=True)
            if k in ("includefield", "limit", "offset")]
    return base + ("?" + urllib.parse.urlencode(keep) if keep else "")


def refuse(fmt):
    """A transform answering 406 to requests whose Accept asks for fmt ("json" or "xml")."""
    def t(method, path, status, headers, body, req_headers):
        accept = req_headers.get("Accept", "")
        if ("dicom+" + fmt) in accept:
            return 406, [("Content-Type", "text/plain")], b"Not Acceptable: this store does not speak " + fmt.encode()
        return status, headers, body
    return t


class QueryClaims(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="dwb-it-claims-query-")
        cls.cohort, cls.man = harness.gencohort(cls.workdir, patients=3, studies=2, series=1, instances=1)
        cls.orthanc = Orthanc(cls.workdir)
        cls.orthanc.upload([os.path.join(cls.cohort, i["file"]) for i in cls.man["instances"]])
        cls.loose = peers.ProxyStore(cls.orthanc.http_port, rewrite=loosen)
        cls.nojson = peers.ProxyStore(cls.orthanc.http_port, transform=refuse("json"))
        cls.noxml = peers.ProxyStore(cls.orthanc.http_port, transform=refuse("xml"))
        cls.bridge = Bridge(cls.workdir, {
            "upstreams": [{"ae_title": "LOOSE", "base_url": cls.loose.url + "/dicom-web"},
                          {"ae_title": "NOJSON", "base_url": cls.nojson.url + "/dicom-web"},
                          {"ae_title": "NOXML", "base_url": cls.noxml.url + "/dicom-web", "metadata_format": "xml"}],
            "spool": {"dir": os.path.join(cls.workdir, "spool")}, "log": {"level": "debug"}})

    @classmethod
    def tearDownClass(cls):
        cls.bridge.close()
        for p in (cls.loose, cls.nojson, cls.noxml):
            p.close()
        cls.orthanc.close()
        problems = cls.bridge.problems()
        if problems:
            print("\n--- work directory kept: %s" % cls.workdir)
            raise AssertionError("bridge misbehaved:\n" + "\n".join(problems))
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def find(self, aec, keys, model="S"):
        p, res = findscu(self.bridge.port, aec, keys, model=model, extra=["-d"], workdir=self.workdir)
        return p, res

    def studies(self, pred):
        return sorted({i["StudyInstanceUID"] for i in self.man["instances"] if pred(i)})

    def test_every_key_is_reapplied_locally(self):
        i0 = self.man["instances"][0]
        before = len(self.loose.requests)
        p, res = self.find("LOOSE", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID=" + i0["PatientID"]])
        self.assertEqual(sorted(harness.value(r, "0020000D") for r in res),
                         self.studies(lambda i: i["PatientID"] == i0["PatientID"]), p.stdout[-1500:])
        asked = [r[1] for r in self.loose.requests[before:] if "/studies?" in r[1]]
        self.assertTrue(any("00100020=" in a for a in asked), "the bridge asked the store to filter: %s" % asked)
        # A date range and a case-insensitive name wildcard, also matched locally.
        date = i0["StudyDate"]
        name = i0["PatientName"].split("^")[0].lower()
        p, res = self.find("LOOSE", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "StudyDate=%s-%s" % (date, date),
                                     "PatientName=%s*" % name])
        exp = self.studies(lambda i: i["StudyDate"] == date and i["PatientName"].lower().startswith(name))
        self.assertTrue(exp)
        self.assertLess(len(exp), len(self.studies(lambda i: True)), "the filters must exclude something")
        self.assertEqual(sorted(harness.value(r, "0020000D") for r in res), exp, p.stdout[-1500:])

    def test_json_refused_with_406_falls_back_to_xml(self):
        before = len(self.nojson.requests)
        p, res = self.find("NOJSON", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID"])
        self.assertEqual(sorted((harness.value(r, "0020000D"), harness.value(r, "00100020")) for r in res),
                         sorted({(i["StudyInstanceUID"], i["PatientID"]) for i in self.man["instances"]}),
                         p.stdout[-1500:])
        accepts = [r[2].get("Accept", "") for r in self.nojson.requests[before:] if "/studies?" in r[1]]
        self.assertIn("dicom+json", accepts[0], accepts)
        self.assertTrue(any("dicom+xml" in a for a in accepts[1:]), "then XML was asked for: %s" % accepts)

    def test_xml_refused_with_406_falls_back_to_json(self):
        before = len(self.noxml.requests)
        p, res = self.find("NOXML", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID"])
        self.assertEqual(sorted((harness.value(r, "0020000D"), harness.value(r, "00100020")) for r in res),
                         sorted({(i["StudyInstanceUID"], i["PatientID"]) for i in self.man["instances"]}),
                         p.stdout[-1500:])
        accepts = [r[2].get("Accept", "") for r in self.noxml.requests[before:] if "/studies?" in r[1]]
        self.assertIn("dicom+xml", accepts[0], accepts)
        self.assertTrue(any("dicom+json" in a for a in accepts[1:]), "then JSON was asked for: %s" % accepts)


if __name__ == "__main__":
    harness.main()
