"""IDC bulk data from a public bucket (issue 16): an S3-compatible bucket (bucketstore.py) holds two series as
IDC lays them out (<bucket>/<crdc_series_uuid>/<crdc_instance_uuid>.dcm), an index CSV maps them, and the same
study is in Orthanc (behind faultstore.py, which counts requests) for QIDO-RS. C-MOVE and import --manifest take
the indexed series from the bucket with no WADO-RS request for them, stamped with the object URL; a series absent
from the index comes by WADO-RS; listings are paged (continuation tokens), or V1 where V2 is refused; an object
that stays 404 fails with its key after retrieve.max_attempts requests."""
import csv
import io
import json
import os
import re
import uuid
import zipfile

import harness
from bucketstore import BucketStore
from faultstore import FaultStore
from harness import Bridge, Orthanc, StoreSCP, TestCase, counts_of, run, status_of

BUCKET = "idc-open-data"
WADO_RE = re.compile(r"^/dicom-web/studies/[0-9.]+/series/([0-9.]+)(/instances/[0-9.]+)?$")


def dump(path, tag):
    p = run(["dcmdump", "-q", "+L", "+P", tag, path])
    m = re.search(r"\[(.*)\]", p.stdout)
    return m.group(1) if m else None


class IdcBucketTest(TestCase):
    def setUp(self):
        super().setUp()
        self.cohort, self.man = harness.gencohort(self.workdir, patients=1, studies=1, series=3, instances=30,
                                                  rows=16, cols=16)
        self.orthanc = self.start(Orthanc(self.workdir))
        self.orthanc.upload([os.path.join(self.cohort, i["file"]) for i in self.man["instances"]])
        self.fs = FaultStore(self.orthanc.http_port)
        self.addCleanup(self.fs.close)
        self.study = self.man["instances"][0]["StudyInstanceUID"]
        series = sorted({i["SeriesInstanceUID"] for i in self.man["instances"]})
        self.indexed, self.unindexed = series[:2], series[2]
        self.crdc = {s: str(uuid.uuid4()) for s in self.indexed}
        self.by_series = {s: [i for i in self.man["instances"] if i["SeriesInstanceUID"] == s] for s in series}

    def make_bucket(self, **opts):
        b = BucketStore(os.path.join(self.workdir, "bucket"), **opts)
        self.addCleanup(b.close)
        self.object_url = {}  # SOP Instance UID -> object URL
        self.sizes = {}
        for s in self.indexed:
            total = 0
            for i in self.by_series[s]:
                key = "%s/%s.dcm" % (self.crdc[s], uuid.uuid4())
                with open(os.path.join(self.cohort, i["file"]), "rb") as f:
                    data = f.read()
                b.put(BUCKET, key, data)
                total += len(data)
                self.object_url[i["SOPInstanceUID"]] = "%s/%s/%s" % (b.url, BUCKET, key)
            self.sizes[s] = total
        return b

    def write_index(self, zipped=False):
        """IDC's columns in IDC's order, quoted where IDC quotes, with a field holding a comma and a newline."""
        out = io.StringIO()
        w = csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
        w.writerow(["collection_id", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                    "crdc_series_uuid", "aws_bucket", "series_size_MB", "instanceCount", "license_short_name"])
        for s in self.indexed:
            w.writerow(["test_collection", "P, with comma", self.study, s, "CT", self.crdc[s], BUCKET,
                        "%.6f" % (self.sizes[s] / 1e6), len(self.by_series[s]), "CC BY\n4.0"])
        # A series of another study that the bucket does not hold: indexes are bigger than a cohort.
        w.writerow(["other", "P2", "1.2.3.4", "1.2.3.4.5", "MR", str(uuid.uuid4()), BUCKET, "1.5", "3", "CC BY 4.0"])
        path = os.path.join(self.workdir, "idc_index.csv")
        if zipped:
            path += ".zip"
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("idc_index.csv", out.getvalue())
        else:
            with open(path, "w", newline="") as f:
                f.write(out.getvalue())
        return path

    def config(self, bucket, index, pacs_port, **retrieve):
        cfg = {"upstreams": [{"ae_title": "IDC", "base_url": self.fs.url, "max_retries": 0,
                              "bucket_endpoint": bucket.url, "idc_index": index}],
               "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port}],
               "retrieve": dict({"max_attempts": 3, "parallel_objects": 4}, **retrieve),
               "spool": {"dir": os.path.join(self.workdir, "spool")}, "log": {"level": "debug"}}
        path = os.path.join(self.workdir, "bridge.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        return cfg, path

    def wado_series(self):
        """Series UIDs the store was asked for by WADO-RS (series or instance level), with repetitions."""
        out = []
        for e in self.fs.log:
            m = WADO_RE.match(e.path.split("?")[0])
            if e.method == "GET" and m:
                out.append(m.group(1))
        return out

    def move(self, port, level="STUDY", series=None):
        keys = ["-k", "QueryRetrieveLevel=" + level, "-k", "StudyInstanceUID=" + self.study]
        if series:
            keys += ["-k", "SeriesInstanceUID=" + series]
        return run(["movescu", "-d", "-S", "-aec", "IDC", "-aem", "PACS"] + keys + ["127.0.0.1", str(port)], timeout=180)

    def received(self, pacs):
        return {dump(f, "SOPInstanceUID"): f for f in pacs.files()}

    def test_move_from_bucket_paged_wado_fallback_and_stamp(self):
        bucket = self.make_bucket(page_size=7)
        pacs = self.start(StoreSCP(self.workdir, aet="PACS"))
        cfg, _ = self.config(bucket, self.write_index(), pacs.port)
        bridge = self.start(Bridge(self.workdir, cfg))
        self.assertIn("IDC index", bridge.log())
        p = self.move(bridge.port)
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:])
        self.assertEqual(counts_of(p)[:2], (90, 0))
        got = self.received(pacs)
        self.assertEqual(sorted(got), sorted(i["SOPInstanceUID"] for i in self.man["instances"]))
        # Indexed series: every object once from the bucket, none by WADO-RS; the other series by WADO-RS.
        gets = bucket.gets()
        self.assertEqual(len(gets), 60, "one GET per object of the two indexed series")
        self.assertEqual(sorted(p for p, _ in gets),
                         sorted(u[len(bucket.url):] for u in self.object_url.values()))
        self.assertEqual(sorted(set(self.wado_series())), [self.unindexed],
                         "WADO-RS only for the series absent from the index")
        # 30 objects per series in pages of 7: 5 listing requests per series, all V2, with continuation tokens.
        lists = bucket.listings(version=2)
        self.assertEqual(len(lists), 10, lists)
        self.assertEqual(len([p for p, _ in lists if "continuation-token=" in p]), 8)
        self.assertEqual(bucket.listings(version=1), [])
        # Retrieve URL: the object's URL for bucket instances, the store's WADO-RS URL for the others.
        for sop, f in got.items():
            url = dump(f, "RetrieveURL")
            if sop in self.object_url:
                self.assertEqual(url, self.object_url[sop])
            else:
                self.assertTrue(url.startswith(self.fs.url + "/studies/" + self.study + "/series/" + self.unindexed),
                                url)
            self.assertEqual(dump(f, "RetrieveAETitle"), "IDC")

    def test_v1_listing_when_v2_refused_and_zip_index(self):
        bucket = self.make_bucket(page_size=11, v2_refused=True)
        pacs = self.start(StoreSCP(self.workdir, aet="PACS"))
        cfg, _ = self.config(bucket, self.write_index(zipped=True), pacs.port)
        bridge = self.start(Bridge(self.workdir, cfg))
        s = self.indexed[0]
        p = self.move(bridge.port, level="SERIES", series=s)
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:])
        self.assertEqual(sorted(self.received(pacs)), sorted(i["SOPInstanceUID"] for i in self.by_series[s]))
        self.assertEqual(self.wado_series(), [])
        self.assertEqual([c for _, c in bucket.listings(version=2)], [400], "V2 asked once, refused")
        v1 = bucket.listings(version=1)
        self.assertEqual(len(v1), 3, v1)  # 30 objects in pages of 11, continued from the last key
        self.assertEqual(len([p for p, _ in v1 if "marker=" in p]), 2)
        self.assertIn("refused ListObjectsV2", bridge.log())

    def test_get_from_bucket(self):
        bucket = self.make_bucket()
        cfg, _ = self.config(bucket, self.write_index(), 104)
        bridge = self.start(Bridge(self.workdir, cfg))
        out = os.path.join(self.workdir, "get")
        os.makedirs(out)
        s = self.indexed[0]
        p = run(["getscu", "-d", "-S", "-aec", "IDC", "-od", out, "-k", "QueryRetrieveLevel=SERIES",
                 "-k", "StudyInstanceUID=" + self.study, "-k", "SeriesInstanceUID=" + s, "127.0.0.1",
                 str(bridge.port)], timeout=180)
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:])
        files = [os.path.join(out, f) for f in os.listdir(out)]
        self.assertEqual(sorted(dump(f, "SOPInstanceUID") for f in files),
                         sorted(i["SOPInstanceUID"] for i in self.by_series[s]))
        for f in files:
            self.assertEqual(dump(f, "RetrieveURL"), self.object_url[dump(f, "SOPInstanceUID")])
        self.assertEqual(len(bucket.gets()), 30)
        self.assertEqual(self.wado_series(), [])

    def test_object_404_retried_then_failed_with_its_key(self):
        bucket = self.make_bucket()
        s = self.indexed[1]
        bad_sop = self.by_series[s][5]["SOPInstanceUID"]
        bad_key = self.object_url[bad_sop][len(bucket.url) + 1:]
        bucket.missing.add(bad_key)
        pacs = self.start(StoreSCP(self.workdir, aet="PACS"))
        cfg, _ = self.config(bucket, self.write_index(), pacs.port)
        bridge = self.start(Bridge(self.workdir, cfg))
        p = self.move(bridge.port, level="SERIES", series=s)
        self.assertNotEqual(status_of(p), "0x0000", p.stdout[-2000:])
        self.assertEqual(counts_of(p)[:2], (29, 1))
        self.assertNotIn(bad_sop, self.received(pacs))
        asked = [c for path, c in bucket.gets() if path == "/" + bad_key]
        self.assertEqual(asked, [404, 404, 404], "retrieve.max_attempts requests of the missing object")
        self.assertIn(bad_key.split("/")[1], bridge.log(), "the failure names the object's key")
        self.assertEqual(self.wado_series(), [], "a failed object is not fetched by WADO-RS behind the plan's back")

    def test_import_manifest_s5cmd_and_csv_dry_run_bytes(self):
        bucket = self.make_bucket()
        pacs = self.start(StoreSCP(self.workdir, aet="PACS"))
        _, cfg_path = self.config(bucket, self.write_index(), pacs.port)
        s5 = os.path.join(self.workdir, "manifest.s5cmd")
        with open(s5, "w") as f:
            f.write("# To download the files in this manifest, install s5cmd and run:\n"
                    "# s5cmd --no-sign-request --endpoint-url https://s3.amazonaws.com run manifest.s5cmd\n")
            for s in self.indexed:
                f.write("cp s3://%s/%s/* .\n" % (BUCKET, self.crdc[s]))
        check = run([harness.BINARY, "check-config", "--config", cfg_path])
        self.assertEqual(check.returncode, 0, check.stdout)
        self.assertIn("IDC index %s: 3 series" % os.path.join(self.workdir, "idc_index.csv"), check.stdout)

        def importer(manifest, *args):
            return run([harness.BINARY, "import", "--config", cfg_path, "--upstream", "IDC", "--destination", "PACS",
                        "--manifest", manifest, "--state", os.path.join(self.workdir, "import.state")] + list(args),
                       timeout=300)

        dry = importer(s5, "--dry-run")
        self.assertEqual(dry.returncode, 0, dry.stdout)
        total = sum(self.sizes.values())
        self.assertIn("would send: 1 studies, 2 series, 60 instances, %d bytes (%.1f MB, from the IDC index)"
                      % (total, total / 1e6), dry.stdout)
        for s in self.indexed:
            self.assertIn("series %s %s: 30 instance(s), %d bytes (bucket %s/%s)"
                          % (self.study, s, self.sizes[s], BUCKET, self.crdc[s]), dry.stdout)
        self.assertEqual(bucket.gets(), [], "--dry-run fetches nothing")
        p = importer(s5)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("using bucket_endpoint %s of the configuration" % bucket.url, p.stdout)
        self.assertRegex(p.stdout, r"import summary: sent 60, skipped 0 \(already delivered\), failed 0")
        got = self.received(pacs)
        self.assertEqual(sorted(got), sorted(self.object_url))
        self.assertEqual(len(bucket.gets()), 60)
        self.assertEqual(self.wado_series(), [], "import took every instance from the bucket")
        for sop, f in got.items():
            self.assertEqual(dump(f, "RetrieveURL"), self.object_url[sop])
        # The CSV form of the portal's manifest (series_uuid column), TSV here, for the same series: the state file
        # says they were delivered; --force sends them again, from the bucket.
        tsv = os.path.join(self.workdir, "manifest.tsv")
        with open(tsv, "w") as f:
            f.write("collection_id\tStudyInstanceUID\tSeriesInstanceUID\tseries_uuid\n")
            for s in self.indexed:
                f.write("test_collection\t%s\t%s\t%s\n" % (self.study, s, self.crdc[s]))
        again = importer(tsv)
        self.assertEqual(again.returncode, 0, again.stdout)
        self.assertIn("nothing to send", again.stdout)
        forced = importer(tsv, "--force")
        self.assertEqual(forced.returncode, 0, forced.stdout)
        self.assertRegex(forced.stdout, r"import summary: sent 60,")
        self.assertEqual(len(bucket.gets()), 120)
        self.assertEqual(self.wado_series(), [])

    def test_bad_index_and_manifest_give_one_line_errors(self):
        bucket = self.make_bucket()
        bad = os.path.join(self.workdir, "bad_index.csv")
        with open(bad, "w") as f:
            f.write("StudyInstanceUID,SeriesInstanceUID,Modality\n1.2,1.2.3,CT\n")
        cfg, path = self.config(bucket, bad, 104)
        p = run([harness.BINARY, "check-config", "--config", path])
        self.assertEqual(p.returncode, 2)
        self.assertIn("no column 'crdc_series_uuid'", p.stdout)
        self.assertEqual(len(p.stdout.strip().splitlines()), 1, p.stdout)
        _, path = self.config(bucket, self.write_index(), 104)
        junk = os.path.join(self.workdir, "junk.s5cmd")
        with open(junk, "w") as f:
            f.write("# s5cmd --no-sign-request run\ncp s3://idc-open-data/../../etc/* .\n")
        p = run([harness.BINARY, "import", "--config", path, "--upstream", "IDC", "--dry-run", "--manifest", junk])
        self.assertEqual(p.returncode, 2, p.stdout)
        self.assertIn("junk.s5cmd:2: no <crdc_series_uuid> folder after the bucket", p.stdout)


if __name__ == "__main__":
    harness.main()
