"""dicomweb-bridge benchmark. Everything runs on loopback in one run, every DCMTK-based peer with TCP_NODELAY=1:

  C-MOVE   bridge (QIDO + WADO-RS + C-STORE)   vs  the direct legs: curl WADO-RS of the same series, and
                                                    storescu of the same files into the same storescp
           vs  Orthanc's own C-MOVE of the study to the same storescp
  C-FIND   bridge study-level query            vs  findscu straight to Orthanc's DICOM port
  C-STORE  storescu -> bridge -> STOW-RS, until all instances are in the store
                                               vs  direct STOW-RS of the same files straight to the store, two
                                                   ways: one curl request of all the files, and curl requests of
                                                   STOW_BATCH files, STOW_PARALLEL at a time (the bridge's own
                                                   default batches and parallelism, as bench/store.py posts them)

Prints wall times (best of --repeat) and ratios; the bridge's C-STORE -> STOW-RS is compared with the faster of
the two direct STOW-RS. No assertion: the numbers are for people.
--markdown runs each measurement 5 times (unless --repeat says otherwise) and rewrites the performance table in
README.md (between the bench:begin/bench:end markers) with min/median/max, the commit and the machine."""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from common import Run, curl_stow, fmt_s, table  # noqa: E402

# The uploader's defaults (conf/README.md: stow_batch_instances, stow_parallel).
STOW_BATCH = 50
STOW_PARALLEL = 4
STOW_ONE = "STOW-RS direct, one request (curl)"
STOW_PAR = "STOW-RS direct, %d in parallel (curl)" % STOW_PARALLEL


def timed(fn, repeat, setup=None):
    """Wall times of repeat runs of fn, in run order."""
    times = []
    for _ in range(repeat):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def markdown_table(r, n_files, mb, repeat):
    """The README's performance block: one row per measurement, min / median / max of the runs, and a summary
    of the medians."""
    rows = [("storescu → bridge → STOW-RS, until all are in the store", "storescu -> bridge -> STOW", 1),
            ("one curl STOW-RS request of all the files, straight to the store", STOW_ONE, 1),
            ("curl STOW-RS requests of %d files, %d at a time, straight to the store" % (STOW_BATCH, STOW_PARALLEL),
             STOW_PAR, 1),
            ("bridge C-MOVE (QIDO + WADO-RS + C-STORE)", "bridge C-MOVE", 1),
            ("Orthanc's own C-MOVE", "Orthanc C-MOVE", 1),
            ("WADO-RS of every series (curl)", "WADO-RS direct (curl)", 1),
            ("storescu → storescp of the same files", "storescu -> storescp direct", 1),
            ("bridge C-FIND, study level (per query, 20 queries a run)", "bridge C-FIND x20", 20),
            ("Orthanc's own C-FIND (per query)", "Orthanc C-FIND x20", 20)]
    lines = table(["", "min", "median", "max"], [
        [label] + [fmt_s(x) for x in (v[0], statistics.median(v), v[-1])]
        for label, key, per in rows for v in [sorted(x / per for x in r[key])]])
    med = {k: statistics.median(v) for k, v in r.items()}
    stow, other = sorted([STOW_ONE, STOW_PAR], key=lambda k: med[k])
    how = {STOW_ONE: "one request of all the files",
           STOW_PAR: "requests of %d files, %d at a time" % (STOW_BATCH, STOW_PARALLEL)}
    lines += ["", "Medians: bridge C-MOVE %.1f × Orthanc's C-MOVE, %.1f × WADO-RS + storescu; bridge C-STORE → "
              "STOW-RS %.2f × the faster direct STOW-RS, %s (%s took %.2f × as long); bridge C-FIND %.1f × "
              "Orthanc's." % (
                  med["bridge C-MOVE"] / med["Orthanc C-MOVE"],
                  med["bridge C-MOVE"] / (med["WADO-RS direct (curl)"] + med["storescu -> storescp direct"]),
                  med["storescu -> bridge -> STOW"] / med[stow], how[stow], how[other], med[other] / med[stow],
                  med["bridge C-FIND x20"] / med["Orthanc C-FIND x20"])]
    return "%d CT instances (%.0f MB)" % (n_files, mb), "%d runs of each, min / median / max" % repeat, lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=500, help="instances in the study (default 500)")
    ap.add_argument("--series", type=int, default=4)
    ap.add_argument("--rows", type=int, default=256, help="image rows and columns (16-bit pixels)")
    ap.add_argument("--repeat", type=int, default=None, help="runs of each measurement (default 2, 5 with --markdown)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="rewrite README.md's performance table")
    a = ap.parse_args()
    if a.repeat is None:
        a.repeat = 5 if a.markdown else 2
    run = Run()
    work = tempfile.mkdtemp(prefix="dwb-bench-")
    per_series = max(1, a.instances // a.series)
    cohort, man = harness.gencohort(work, patients=1, studies=1, series=a.series, instances=per_series,
                                    rows=a.rows, cols=a.rows, modalities="CT")
    files = [os.path.join(cohort, i["file"]) for i in man["instances"]]
    total_bytes = sum(os.path.getsize(f) for f in files)
    study = man["instances"][0]["StudyInstanceUID"]
    series = sorted({i["SeriesInstanceUID"] for i in man["instances"]})
    pacs = harness.StoreSCP(work, aet="PACS")
    # Orthanc answers C-FIND/C-MOVE only for known modalities: declare the DCMTK clients too.
    orthanc = harness.Orthanc(work, modalities={"PACS": ["PACS", "127.0.0.1", pacs.port],
                                                "MOVESCU": ["MOVESCU", "127.0.0.1", 104],
                                                "FINDSCU": ["FINDSCU", "127.0.0.1", 104]},
                              extra={"DicomAlwaysAllowMove": True, "DicomAlwaysAllowFind": True})
    servers = [pacs, orthanc]
    try:
        orthanc.upload(files)
        bridge = harness.Bridge(work, {
            "upstreams": [{"ae_title": "STORE", "base_url": orthanc.dicomweb_url}],
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
            "log": {"level": "warn"}})
        servers.append(bridge)

        def clear():
            for f in pacs.files():
                os.unlink(f)

        def check(n=len(files), what=""):
            got = len(pacs.files())
            if got != n:
                raise SystemExit("%s: expected %d instances at the PACS, got %d\n%s" % (what, n, got, pacs.log()[-2000:]))

        def wado():
            for s in series:
                subprocess.run(["curl", "-sf", "-o", "/dev/null", "-H",
                                'Accept: multipart/related; type="application/dicom"; transfer-syntax=*',
                                "%s/studies/%s/series/%s" % (orthanc.dicomweb_url, study, s)], check=True)

        def storescu():
            clear()
            harness.run(["storescu", "-aec", "PACS", "127.0.0.1", str(pacs.port)] + files, check=True, timeout=600)
            check(what="storescu")

        def bridge_move():
            clear()
            harness.run(["movescu", "-S", "-aec", "STORE", "-aem", "PACS", "-k", "QueryRetrieveLevel=STUDY",
                         "-k", "StudyInstanceUID=" + study, "127.0.0.1", str(bridge.port)], check=True, timeout=600)
            check(what="bridge C-MOVE")

        def orthanc_move():
            clear()
            harness.run(["movescu", "-S", "-aec", "ORTHANC", "-aem", "PACS", "-k", "QueryRetrieveLevel=STUDY",
                         "-k", "StudyInstanceUID=" + study, "127.0.0.1", str(orthanc.dicom_port)], check=True,
                        timeout=600)
            check(what="Orthanc C-MOVE")

        keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientName", "-k", "StudyDate",
                "-k", "NumberOfStudyRelatedInstances"]

        def bridge_find():
            for _ in range(20):
                harness.run(["findscu", "-S", "-aec", "STORE"] + keys + ["127.0.0.1", str(bridge.port)], check=True)

        def orthanc_find():
            for _ in range(20):
                harness.run(["findscu", "-S", "-aec", "ORTHANC"] + keys + ["127.0.0.1", str(orthanc.dicom_port)],
                            check=True)

        # A second, empty store for the STOW comparison; each run starts from an empty store.
        store2 = harness.Orthanc(work, aet="STOW")
        servers.append(store2)
        stow_cmds = {}
        for key, parallel, batch in ((STOW_ONE, 1, len(files)), (STOW_PAR, STOW_PARALLEL, STOW_BATCH)):
            d = os.path.join(work, "stow-%d" % parallel)
            os.makedirs(d)
            stow_cmds[key] = curl_stow(d, store2.dicomweb_url, files, parallel, batch)

        def empty_store():
            import urllib.request
            for i in store2.get_json("/instances"):
                urllib.request.urlopen(urllib.request.Request(store2.url + "/instances/" + i, method="DELETE")).read()

        def store_count():
            return len(store2.get_json("/instances"))

        def stow_direct(key):
            def fn():
                subprocess.run(stow_cmds[key], check=True, stdout=subprocess.DEVNULL)
                if store_count() != len(files):
                    raise SystemExit("%s stored %d of %d" % (key, store_count(), len(files)))
            return fn

        bridge_store = harness.Bridge(work, {
            "listen": {"port": harness.free_port()},
            "upstreams": [{"ae_title": "STOW", "base_url": store2.dicomweb_url}],
            "spool": {"dir": os.path.join(work, "spool")}, "log": {"level": "warn"}})
        servers.append(bridge_store)

        def store_via_bridge():
            harness.run(["storescu", "-aec", "STOW", "127.0.0.1", str(bridge_store.port)] + files, check=True,
                        timeout=600)
            end = time.time() + 600
            while store_count() < len(files) and time.time() < end:
                time.sleep(0.02)
            if store_count() != len(files):
                raise SystemExit("bridge STOW stored %d of %d" % (store_count(), len(files)))

        r = {}
        for name, fn in [(STOW_ONE, stow_direct(STOW_ONE)), (STOW_PAR, stow_direct(STOW_PAR)),
                         ("storescu -> bridge -> STOW", store_via_bridge),
                         ("WADO-RS direct (curl)", wado), ("storescu -> storescp direct", storescu),
                         ("bridge C-MOVE", bridge_move), ("Orthanc C-MOVE", orthanc_move),
                         ("bridge C-FIND x20", bridge_find), ("Orthanc C-FIND x20", orthanc_find)]:
            r[name] = timed(fn, a.repeat, empty_store if "STOW" in name else None)
        mb = total_bytes / 1e6
        runs = r
        r = {k: min(v) for k, v in runs.items()}
        print("\n%d instances, %d series, %.1f MB, best of %d" % (len(files), len(series), mb, a.repeat))
        for k, v in r.items():
            extra = "  (%.0f MB/s, %.2f ms/instance)" % (mb / v, 1000 * v / len(files)) if "x20" not in k else \
                "  (%.1f ms/query)" % (v * 50)
            print("  %-38s %8.3f s%s" % (k, v, extra))
        legs = max(r["WADO-RS direct (curl)"], r["storescu -> storescp direct"])
        print("\nratios")
        print("  bridge C-MOVE / slower direct leg        %.2f" % (r["bridge C-MOVE"] / legs))
        print("  bridge C-MOVE / (WADO + storescu)         %.2f" %
              (r["bridge C-MOVE"] / (r["WADO-RS direct (curl)"] + r["storescu -> storescp direct"])))
        print("  bridge C-MOVE / Orthanc C-MOVE            %.2f" % (r["bridge C-MOVE"] / r["Orthanc C-MOVE"]))
        print("  bridge C-FIND / Orthanc C-FIND            %.2f" % (r["bridge C-FIND x20"] / r["Orthanc C-FIND x20"]))
        stow = min(STOW_ONE, STOW_PAR, key=lambda k: r[k])
        print("  bridge C-STORE->STOW / best direct STOW   %.2f   (target <= 1.2; best: %s)" %
              (r["storescu -> bridge -> STOW"] / r[stow], stow))
        if a.markdown:
            run.write_block("bench", "bench/run", *markdown_table(runs, len(files), mb, a.repeat))
    finally:
        harness.stop_servers(servers, work, a.keep)


if __name__ == "__main__":
    main()
