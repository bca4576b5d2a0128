"""dicomweb-bridge benchmark. Everything runs on loopback in one run, every DCMTK-based peer with TCP_NODELAY=1:

  C-MOVE   bridge (QIDO + WADO-RS + C-STORE)   vs  the direct legs: curl WADO-RS of the same series, and
                                                    storescu of the same files into the same storescp
           vs  Orthanc's own C-MOVE of the study to the same storescp
  C-FIND   bridge study-level query            vs  findscu straight to Orthanc's DICOM port
  C-STORE  storescu -> bridge -> STOW-RS, until all instances are in the store
                                               vs  one curl STOW-RS of the same files straight to the store

Prints wall times (best of --repeat) and ratios. No assertion: the numbers are for people.
--markdown runs each measurement 5 times (unless --repeat says otherwise) and rewrites the performance table in
README.md (between the bench:begin/bench:end markers) with min/median/max, the commit and the machine."""
import argparse
import glob
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import harness  # noqa: E402


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


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            if m:
                cpu = m.group(1).strip()
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(re.search(r"^MemTotal:\s*(\d+)", f.read(), re.M).group(1))
            mem = ", %.0f GB RAM" % (kb / 1048576)
    except (OSError, AttributeError):
        pass
    return "%d × %s%s, %s %s" % (os.cpu_count() or 0, cpu, mem, platform.system(), platform.release())


def commit():
    root = harness.SOURCE_DIR
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               stdout=subprocess.PIPE, text=True).stdout.strip()
        return rev + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"


def fmt_s(v):
    return "%.0f ms" % (v * 1000) if v < 1 else "%.2f s" % v


def markdown_table(r, n_files, mb, repeat, load_before):
    """The README's performance section body: one row per measurement, min / median / max of the runs."""
    rows = [("storescu → bridge → STOW-RS, until all are in the store", "storescu -> bridge -> STOW", 1),
            ("one curl STOW-RS of the same files, straight to the store", "STOW-RS direct (curl)", 1),
            ("bridge C-MOVE (QIDO + WADO-RS + C-STORE)", "bridge C-MOVE", 1),
            ("Orthanc's own C-MOVE", "Orthanc C-MOVE", 1),
            ("WADO-RS of every series (curl)", "WADO-RS direct (curl)", 1),
            ("storescu → storescp of the same files", "storescu -> storescp direct", 1),
            ("bridge C-FIND, study level (per query, 20 queries a run)", "bridge C-FIND x20", 20),
            ("Orthanc's own C-FIND (per query)", "Orthanc C-FIND x20", 20)]
    load_after, cpus = os.getloadavg()[0], os.cpu_count() or 1
    out = ["<!-- bench:begin (written by bench/run --markdown; edits here are overwritten) -->",
           "%d CT instances (%.0f MB), %d runs of each, on %s; commit %s, %s; load average %.1f before and "
           "%.1f after the runs%s." % (
               n_files, mb, repeat, machine(), commit(), time.strftime("%Y-%m-%d"), load_before, load_after,
               " (above the CPU count: other work shared the machine)" if max(load_before, load_after) > cpus else ""),
           "", "| | min | median | max |", "|---|---|---|---|"]
    for label, key, per in rows:
        v = sorted(x / per for x in r[key])
        out.append("| %s | %s | %s | %s |" % (label, fmt_s(v[0]), fmt_s(statistics.median(v)), fmt_s(v[-1])))
    med = {k: statistics.median(v) for k, v in r.items()}
    out += ["", "Medians: bridge C-MOVE %.1f × Orthanc's C-MOVE, %.1f × WADO-RS + storescu; bridge C-STORE → STOW-RS "
            "%.2f × one direct STOW-RS; bridge C-FIND %.1f × Orthanc's." % (
                med["bridge C-MOVE"] / med["Orthanc C-MOVE"],
                med["bridge C-MOVE"] / (med["WADO-RS direct (curl)"] + med["storescu -> storescp direct"]),
                med["storescu -> bridge -> STOW"] / med["STOW-RS direct (curl)"],
                med["bridge C-FIND x20"] / med["Orthanc C-FIND x20"]),
            "<!-- bench:end -->"]
    return "\n".join(out)


def write_readme(table):
    path = os.path.join(harness.SOURCE_DIR, "README.md")
    with open(path) as f:
        text = f.read()
    new, n = re.subn(r"<!-- bench:begin.*?<!-- bench:end -->", lambda m: table, text, flags=re.S)
    if n != 1:
        raise SystemExit("README.md has no <!-- bench:begin --> ... <!-- bench:end --> section to rewrite")
    with open(path, "w") as f:
        f.write(new)
    print("README.md performance table rewritten")


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
    load_before = os.getloadavg()[0]
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
        stow_dir = os.path.join(work, "stow")
        os.makedirs(stow_dir, exist_ok=True)
        body_path = os.path.join(work, "stow-body")
        with open(body_path, "wb") as out:
            for f in files:
                out.write(b"\r\n--BENCHBOUNDARY\r\nContent-Type: application/dicom\r\n\r\n")
                with open(f, "rb") as src:
                    out.write(src.read())
            out.write(b"\r\n--BENCHBOUNDARY--\r\n")

        def empty_store():
            import urllib.request
            for i in store2.get_json("/instances"):
                urllib.request.urlopen(urllib.request.Request(store2.url + "/instances/" + i, method="DELETE")).read()

        def store_count():
            return len(store2.get_json("/instances"))

        def stow_direct():
            subprocess.run(["curl", "-sf", "-o", "/dev/null", "-X", "POST", "-H",
                            'Content-Type: multipart/related; type="application/dicom"; boundary=BENCHBOUNDARY',
                            "--data-binary", "@" + body_path, store2.dicomweb_url + "/studies"], check=True)
            if store_count() != len(files):
                raise SystemExit("direct STOW stored %d of %d" % (store_count(), len(files)))

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
        for name, fn in [("STOW-RS direct (curl)", stow_direct), ("storescu -> bridge -> STOW", store_via_bridge),
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
            print("  %-30s %8.3f s%s" % (k, v, extra))
        legs = max(r["WADO-RS direct (curl)"], r["storescu -> storescp direct"])
        print("\nratios")
        print("  bridge C-MOVE / slower direct leg        %.2f" % (r["bridge C-MOVE"] / legs))
        print("  bridge C-MOVE / (WADO + storescu)         %.2f" %
              (r["bridge C-MOVE"] / (r["WADO-RS direct (curl)"] + r["storescu -> storescp direct"])))
        print("  bridge C-MOVE / Orthanc C-MOVE            %.2f" % (r["bridge C-MOVE"] / r["Orthanc C-MOVE"]))
        print("  bridge C-FIND / Orthanc C-FIND            %.2f" % (r["bridge C-FIND x20"] / r["Orthanc C-FIND x20"]))
        print("  bridge C-STORE->STOW / direct STOW        %.2f   (target <= 1.2)" %
              (r["storescu -> bridge -> STOW"] / r["STOW-RS direct (curl)"]))
        if a.markdown:
            write_readme(markdown_table(runs, len(files), mb, a.repeat, load_before))
    finally:
        harness.stop_servers(servers, work, a.keep)


if __name__ == "__main__":
    main()
