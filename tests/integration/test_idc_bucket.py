"""IDC bulk data from a public bucket (issue 16), at the issue's sizes: an S3-compatible bucket (bucketstore.py)
holds two series of 120 instances as IDC lays them out (<bucket>/<crdc_series_uuid>/<crdc_instance_uuid>.dcm), an
index CSV maps them, and the same study is in Orthanc (behind faultstore.py, which counts requests) for QIDO-RS,
with a third series that the index does not hold. The bucket lists pages of 50 keys, so every series takes three
listing requests (two continuation tokens). C-MOVE, C-GET and import --manifest (s5cmd and CSV forms) take the
indexed series from the bucket with no WADO-RS request for them, stamped with the object URL; the series absent
from the index comes by WADO-RS; V1 listing where V2 is refused; an object that stays 404 fails with its key after
retrieve.max_attempts requests; a C-CANCEL while the bucket is slow stops the object requests at once.

The cohort, the bucket's files and Orthanc are set up once for the class (tests only read them); each test has its
own bucket server, request counter and bridge."""
import csv
import io
import json
import os
import re
import shutil
import tempfile
import time
import uuid
import zipfile

import harness
from bucketstore import BucketStore
from faultstore import FaultStore
from harness import Bridge, Orthanc, StoreSCP, TestCase, counts_of, run, status_of

BUCKET = "idc-open-data"
PER_SERIES = 120
UNINDEXED = 10  # instances of the series absent from the index (WADO-RS)
PAGE = 50
WADO_RE = re.compile(r"^/dicom-web/studies/[0-9.]+/series/([0-9.]+)(/instances/[0-9.]+)?$")
PIXEL_BYTES = 16 * 16 * 2


def dump(path, tag):
    p = run(["dcmdump", "-q", "+L", "+P", tag, path])
    m = re.search(r"\[(.*)\]", p.stdout)
    return m.group(1) if m else None


def stamps(files):
    """{SOP Instance UID: {tag name: [values in data set order], "file": path}} of received files, with one dcmdump
    per 100 files (one per file would cost seconds): SOP Instance UID, Retrieve URL (the data set's own, then the
    empty previous value in Modified Attributes Sequence), Retrieve AE Title, and the Original Attributes Sequence
    item's Source of Previous Values."""
    out = {}
    names = ("SOPInstanceUID", "RetrieveURL", "RetrieveAETitle", "SourceOfPreviousValues")
    for i in range(0, len(files), 100):
        cmd = ["dcmdump", "-q", "+F", "+L"]
        for n in names:
            cmd += ["+P", n]
        p = run(cmd + files[i:i + 100], check=True)
        cur = None
        for line in p.stdout.splitlines():
            h = re.match(r"# dcmdump \(\d+/\d+\): (.*)$", line)
            if h:
                cur = {n: [] for n in names}
                cur["file"] = h.group(1)
                continue
            m = re.search(r"(?:\[(.*)\]|\(no value available\)).*# +\S+, \S+ +(\w+)\s*$", line)
            if cur is not None and m and m.group(2) in cur:
                cur[m.group(2)].append(m.group(1) or "")
                if m.group(2) == "SOPInstanceUID":
                    out[m.group(1)] = cur
    return out


def tail_bytes(path, n=PIXEL_BYTES):
    with open(path, "rb") as f:
        f.seek(-n, os.SEEK_END)
        return f.read()


class IdcBucketTest(TestCase):
    @classmethod
    def setUpClass(cls):
        cls.shared = tempfile.mkdtemp(prefix="dwb-it-idc-bucket-")
        cls.cohort, man = harness.gencohort(cls.shared, patients=1, studies=1, series=3, instances=PER_SERIES,
                                            rows=16, cols=16, modalities="CT")
        series = sorted({i["SeriesInstanceUID"] for i in man["instances"]})
        cls.indexed, cls.unindexed = series[:2], series[2]
        cls.by_series = {s: [i for i in man["instances"] if i["SeriesInstanceUID"] == s] for s in series}
        cls.by_series[cls.unindexed] = cls.by_series[cls.unindexed][:UNINDEXED]
        cls.instances = [i for s in series for i in cls.by_series[s]]
        cls.study = cls.instances[0]["StudyInstanceUID"]
        cls.src = {i["SOPInstanceUID"]: os.path.join(cls.cohort, i["file"]) for i in cls.instances}
        cls.orthanc = Orthanc(cls.shared)
        try:
            cls.orthanc.upload(list(cls.src.values()))
        except Exception:
            cls.orthanc.close()
            raise
        # The bucket's files, IDC's layout; the URLs depend on each test's bucket server.
        cls.bucket_root = os.path.join(cls.shared, "bucket")
        cls.crdc = {s: str(uuid.uuid4()) for s in cls.indexed}
        cls.key_of, cls.sizes = {}, {}
        for s in cls.indexed:
            cls.sizes[s] = 0
            for i in cls.by_series[s]:
                key = "%s/%s.dcm" % (cls.crdc[s], uuid.uuid4())
                dst = os.path.join(cls.bucket_root, BUCKET, key)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(cls.src[i["SOPInstanceUID"]], dst)
                cls.key_of[i["SOPInstanceUID"]] = key
                cls.sizes[s] += os.path.getsize(dst)

    @classmethod
    def tearDownClass(cls):
        cls.orthanc.close()
        shutil.rmtree(cls.shared, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.fs = FaultStore(self.orthanc.http_port)
        self.addCleanup(self.fs.close)

    def make_bucket(self, **opts):
        b = BucketStore(self.bucket_root, **dict({"page_size": PAGE}, **opts))
        self.addCleanup(b.close)
        self.object_url = {sop: "%s/%s/%s" % (b.url, BUCKET, key) for sop, key in self.key_of.items()}
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

    def listings_per_series(self, bucket, version=2):
        """{crdc_series_uuid: [(path, code), ...]} of the listing requests."""
        out = {}
        for path, code in bucket.listings(version=version):
            m = re.search(r"prefix=([0-9a-f-]+)%2F", path)
            out.setdefault(m.group(1) if m else path, []).append((path, code))
        return out

    def move(self, port, level="STUDY", series=None):
        keys = ["-k", "QueryRetrieveLevel=" + level, "-k", "StudyInstanceUID=" + self.study]
        if series:
            keys += ["-k", "SeriesInstanceUID=" + series]
        return run(["movescu", "-d", "-S", "-aec", "IDC", "-aem", "PACS"] + keys + ["127.0.0.1", str(port)], timeout=180)

    def check_received(self, files, expected, bucket):
        """Every expected instance arrived once, with the source's pixels, stamped: Retrieve URL = the object's URL
        and Source of Previous Values = the bucket's host for bucket instances; the store's WADO-RS URL and host for
        the others. Returns {SOP Instance UID: file}."""
        got = stamps(files)
        self.assertEqual(len(files), len(expected), "one file per expected instance")
        self.assertEqual(sorted(got), sorted(expected))
        fs_host = "IDC " + self.fs.url[len("http://"):].split("/")[0]
        bucket_host = "IDC " + bucket.url[len("http://"):]
        for sop, st in got.items():
            self.assertEqual(st["RetrieveAETitle"][0], "IDC", sop)
            if sop in self.key_of:
                self.assertEqual(st["RetrieveURL"][0], self.object_url[sop])
                self.assertEqual(st["SourceOfPreviousValues"], [bucket_host], sop)
            else:
                self.assertTrue(st["RetrieveURL"][0].startswith(
                    "%s/studies/%s/series/%s" % (self.fs.url, self.study, self.unindexed)), st["RetrieveURL"])
                self.assertEqual(st["SourceOfPreviousValues"], [fs_host], sop)
            self.assertEqual(tail_bytes(st["file"]), tail_bytes(self.src[sop]), "pixel data of %s" % sop)
        return {sop: st["file"] for sop, st in got.items()}

    def test_move_from_bucket_paged_wado_fallback_and_stamp(self):
        bucket = self.make_bucket()
        pacs = self.start(StoreSCP(self.workdir, aet="PACS"))
        cfg, _ = self.config(bucket, self.write_index(), pacs.port)
        bridge = self.start(Bridge(self.workdir, cfg))
        self.assertIn("IDC index", bridge.log())
        p = self.move(bridge.port)
        n = 2 * PER_SERIES + UNINDEXED
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:])
        self.assertEqual(counts_of(p)[:2], (n, 0))
        self.check_received(pacs.files(), list(self.src), bucket)
        # Indexed series: every object once from the bucket, none by WADO-RS; the other series by WADO-RS.
        gets = bucket.gets()
        self.assertEqual(sorted(p for p, _ in gets), sorted("/%s/%s" % (BUCKET, k) for k in self.key_of.values()),
                         "one GET per object of the two indexed series")
        self.assertEqual(sorted(set(self.wado_series())), [self.unindexed],
                         "WADO-RS only for the series absent from the index")
        # 120 objects per series in pages of 50: 3 listing requests per series, all V2, the last two continued.
        lists = self.listings_per_series(bucket)
        self.assertEqual(sorted(lists), sorted(self.crdc.values()), lists)
        for crdc, reqs in lists.items():
            self.assertEqual(len(reqs), 3, reqs)
            self.assertEqual([("continuation-token=" in p, c) for p, c in reqs],
                             [(False, 200), (True, 200), (True, 200)], reqs)
        self.assertEqual(bucket.listings(version=1), [])

    def test_v1_listing_when_v2_refused_and_zip_index(self):
        bucket = self.make_bucket(v2_refused=True)
        pacs = self.start(StoreSCP(self.workdir, aet="PACS"))
        cfg, _ = self.config(bucket, self.write_index(zipped=True), pacs.port)
        bridge = self.start(Bridge(self.workdir, cfg))
        s = self.indexed[0]
        p = self.move(bridge.port, level="SERIES", series=s)
        self.assertEqual(status_of(p), "0x0000", p.stdout[-2000:])
        self.check_received(pacs.files(), [i["SOPInstanceUID"] for i in self.by_series[s]], bucket)
        self.assertEqual(self.wado_series(), [])
        self.assertEqual([c for _, c in bucket.listings(version=2)], [400], "V2 asked once, refused")
        v1 = bucket.listings(version=1)
        self.assertEqual(len(v1), 3, v1)  # 120 objects in pages of 50, continued from the last key
        self.assertEqual([("marker=" in p, c) for p, c in v1], [(False, 200), (True, 200), (True, 200)], v1)
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
        self.check_received([os.path.join(out, f) for f in os.listdir(out)],
                            [i["SOPInstanceUID"] for i in self.by_series[s]], bucket)
        self.assertEqual(len(bucket.gets()), PER_SERIES)
        self.assertEqual(self.wado_series(), [])

    def test_object_404_retried_then_failed_with_its_key(self):
        bucket = self.make_bucket()
        s = self.indexed[1]
        # The object in the middle of the series' listing: on the second page, fetched while others are in flight.
        keys = sorted(self.key_of[i["SOPInstanceUID"]] for i in self.by_series[s])
        bad_key = keys[len(keys) // 2]
        bad_sop = [sop for sop, k in self.key_of.items() if k == bad_key][0]
        bucket.missing.add(BUCKET + "/" + bad_key)
        pacs = self.start(StoreSCP(self.workdir, aet="PACS"))
        cfg, _ = self.config(bucket, self.write_index(), pacs.port)
        bridge = self.start(Bridge(self.workdir, cfg))
        p = self.move(bridge.port, level="SERIES", series=s)
        self.assertEqual(status_of(p), "0xb000", p.stdout[-2000:])
        self.assertEqual(counts_of(p)[:2], (PER_SERIES - 1, 1))
        self.check_received(pacs.files(), [i["SOPInstanceUID"] for i in self.by_series[s]
                                           if i["SOPInstanceUID"] != bad_sop], bucket)
        asked = [c for path, c in bucket.gets() if path == "/%s/%s" % (BUCKET, bad_key)]
        self.assertEqual(asked, [404, 404, 404], "retrieve.max_attempts requests of the missing object")
        self.assertEqual(len(bucket.gets()), PER_SERIES + 2, "every other object once")
        log = bridge.log()
        self.assertRegex(log, r"bucket object %s/%s failed after 3 requests" % (BUCKET, re.escape(bad_key)))
        self.assertIn("first %s/%s: HTTP 404" % (BUCKET, bad_key), log, "the failure names the object's key")
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

        n = 2 * PER_SERIES
        dry = importer(s5, "--dry-run")
        self.assertEqual(dry.returncode, 0, dry.stdout)
        total = sum(self.sizes.values())
        self.assertIn("would send: 1 studies, 2 series, %d instances, %d bytes (%.1f MB, from the IDC index)"
                      % (n, total, total / 1e6), dry.stdout)
        for s in self.indexed:
            self.assertIn("series %s %s: %d instance(s), %d bytes (bucket %s/%s)"
                          % (self.study, s, PER_SERIES, self.sizes[s], BUCKET, self.crdc[s]), dry.stdout)
        self.assertEqual(bucket.gets(), [], "--dry-run fetches nothing")
        p = importer(s5)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("using bucket_endpoint %s of the configuration" % bucket.url, p.stdout)
        self.assertRegex(p.stdout, r"import summary: sent %d, skipped 0 \(already delivered\), failed 0" % n)
        self.check_received(pacs.files(), list(self.key_of), bucket)
        self.assertEqual(len(bucket.gets()), n)
        self.assertEqual(self.wado_series(), [], "import took every instance from the bucket")
        self.assertEqual({c: len(r) for c, r in self.listings_per_series(bucket).items()},
                         {c: 3 for c in self.crdc.values()}, "3 listing pages per series")
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
        self.assertEqual(len(bucket.gets()), n)
        for f in pacs.files():
            os.unlink(f)
        forced = importer(tsv, "--force")
        self.assertEqual(forced.returncode, 0, forced.stdout)
        self.assertRegex(forced.stdout, r"import summary: sent %d, skipped 0 \(already delivered\), failed 0" % n)
        self.check_received(pacs.files(), list(self.key_of), bucket)
        self.assertEqual(len(bucket.gets()), 2 * n)
        self.assertEqual(self.wado_series(), [])

    def test_cancel_while_the_bucket_is_slow(self):
        """C-GET of an indexed series from a bucket that takes 0.2 s per object, cancelled after the 6th C-STORE
        (the tool sends C-CANCEL before answering it): the C-GET ends with 0xFE00, the bridge asks the bucket for
        at most one more object per worker after the cancel (those already on their way), none later, and the same
        association answers a C-ECHO."""
        bucket = self.make_bucket(delay=0.2)
        cfg, _ = self.config(bucket, self.write_index(), 104)
        bridge = self.start(Bridge(self.workdir, cfg))
        s = self.indexed[0]
        tool = os.path.join(harness.BUILD_DIR, "tests", "tools", "dwb_getcancel")
        p = run([tool, "127.0.0.1", str(bridge.port), "IDC", self.study, "6", s], timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout)
        m = re.search(r"^cancel sent at ([0-9.]+)$", p.stdout, re.M)
        self.assertTrue(m, p.stdout)
        t_cancel = float(m.group(1))
        finals = re.findall(r"^get status 0x([0-9a-f]{4}) completed (\d+) failed (\d+) remaining (\d+)$", p.stdout,
                            re.M)
        self.assertEqual(finals[-1][0], "fe00", p.stdout)
        self.assertGreaterEqual(int(finals[-1][1]), 5, p.stdout)
        self.assertIn("echo status 0x0000", p.stdout)
        t_done = time.monotonic()
        parallel = cfg["retrieve"]["parallel_objects"]
        # The bridge stopped (SIGTERM, drained): every request it would ever make about this C-GET has been made,
        # so the checks below are evidence, not a pause's guess.
        log = bridge.log()
        self.assertEqual(bridge.stop(), 0)
        after = bucket.gets(since=t_cancel)
        self.assertLessEqual(len(after), parallel, "object requests after the C-CANCEL: %s" % after)
        self.assertEqual(bucket.gets(since=t_done), [], "object requests once the C-GET was answered")
        self.assertLess(len(bucket.gets()), PER_SERIES // 2, "the bridge went on fetching the series")
        self.assertIn("C-GET: C-CANCEL received", log)

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

    def test_manifest_endpoint_not_in_the_configuration_is_refused(self):
        """A manifest naming an endpoint the configuration does not (issue 25, SSRF): the import is refused with
        the manifest's line before any request, though that endpoint serves the very objects; none reaches it."""
        other = BucketStore(self.bucket_root, page_size=PAGE)  # would answer, were the bridge to ask it
        self.addCleanup(other.close)
        bucket = self.make_bucket()
        _, path = self.config(bucket, self.write_index(), 104)
        forms = {
            "comment.s5cmd": "# s5cmd --no-sign-request --endpoint-url %s run comment.s5cmd\n" % other.url
                             + "".join("cp s3://%s/%s/* .\n" % (BUCKET, self.crdc[s]) for s in self.indexed),
            "command.s5cmd": "".join("s5cmd --no-sign-request --endpoint-url %s cp s3://%s/%s/* .\n"
                                     % (other.url, BUCKET, self.crdc[s]) for s in self.indexed),
        }
        for name, text in forms.items():
            manifest = os.path.join(self.workdir, name)
            with open(manifest, "w") as f:
                f.write(text)
            for dry in (["--dry-run"], []):
                p = run([harness.BINARY, "import", "--config", path, "--upstream", "IDC", "--destination", "PACS",
                         "--manifest", manifest, "--state", os.path.join(self.workdir, "ssrf.state")] + dry,
                        timeout=120)
                self.assertEqual(p.returncode, 2, "%s %s: %s" % (name, dry, p.stdout))
                self.assertIn("%s:1: --endpoint-url %s is neither the upstream's bucket_endpoint (%s)"
                              % (name, other.url, bucket.url), p.stdout)
        self.assertEqual(other.requests(), [], "requests reached the manifest's endpoint")
        self.assertEqual(bucket.requests(), [], "a refused manifest fetches nothing")


if __name__ == "__main__":
    harness.main()
