"""What de-identification and JPEG 2000 decoding cost the bridge per instance (issue 28), beside the plain path,
in one run on loopback, every DCMTK peer with TCP_NODELAY=1. One CT series (dwb_gencohort, 512 × 512 16-bit,
its pixels replaced by a CT-like phantom so that JPEG 2000 compresses and decodes as it would a CT slice):

  C-STORE  storescu -> bridge -> STOW-RS into Orthanc, until all are in the store, through an upstream
             plain  vs  with deidentify {"profile": "basic"}  vs  basic with the retain-uids option
           each run into a fresh Orthanc and a fresh bridge, the three interleaved
  C-MOVE   bridge (Orthanc as the store) -> storescp
             the series stored uncompressed, sent as stored to a destination that takes only uncompressed syntaxes
             vs  the same series stored as JPEG 2000 lossless (gdcmconv --j2k), decoded by the bridge (OpenJPEG)
                 for that destination
             vs  the JPEG 2000 series sent as stored to a destination that takes JPEG 2000 (storescp +xv)
           one bridge and one Orthanc per form of the series, the cases interleaved after one untimed move

For each case: the best wall time of --repeat runs and the least CPU seconds (user + system, /proc) the bridge
spent in one run, per instance and per MB: of the files sent for C-STORE, of the data delivered for C-MOVE
(decoded output when the bridge decodes). The ratio is the bridge's CPU over the plain case's, the same instances.
Not measured: the store transcoding JPEG 2000 for the bridge (destinations[].transfer_syntax); Debian's Orthanc
GDCM plugin, which would do it, crashes after a few requests (tests/integration/test_retrieve_faults.py) and is
not installed. No assertion: the numbers are for people.

  bench/run-cost                   150 instances, best of 3
  bench/run-cost --instances 60    quicker
  bench/run-cost --markdown        rewrites README.md's bench-cost block with the same figures"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from common import Run, process_cpu, table  # noqa: E402

SECRET = "bench-cost-uid-secret-0123456789"
STORE_CASES = [("plain", None),
               ("deidentify basic", {"profile": "basic"}),
               ("deidentify basic, retain-uids", {"profile": "basic", "options": ["retain-uids"]})]
MOVE_CASES = ["uncompressed, sent as stored", "JPEG 2000 lossless, decoded by the bridge",
              "JPEG 2000 lossless, sent as stored"]
EXPLICIT_LE = b"1.2.840.10008.1.2.1\0"
J2K_LOSSLESS = b"1.2.840.10008.1.2.4.90"


def phantom(rows, cols, k, seed=28):
    """A CT-like slice as 12-bit stored values (intercept -1024): air around an elliptical body of soft tissue
    with two lungs, a spine and noise, in a round field of view; the shapes change a little with k, as from slice
    to slice."""
    rnd = random.Random(seed + k)
    noise = [int(rnd.gauss(0, 12)) for _ in range(4099)]
    cy, cx = rows / 2, cols / 2
    by, bx = rows * (0.36 + 0.01 * (k % 5)), cols * 0.45
    ly, lx = rows * (0.22 - 0.01 * (k % 3)), cols * 0.13
    out = bytearray(rows * cols * 2)
    i = 0
    for y in range(rows):
        dy = (y - cy) / by
        ldy = (y - cy + rows * 0.03) / ly
        sdy = (y - cy - rows * 0.25) ** 2
        for x in range(cols):
            dx = (x - cx) / bx
            if dx * dx + dy * dy > 1:
                # Air, -1000 HU: with the scanner's noise inside the field of view, constant padding outside.
                v = 24 + noise[(i * 7 + y) % 4099] if (x - cx) ** 2 + (y - cy) ** 2 < (cols * 0.48) ** 2 else 24
            else:
                lung = ((abs(x - cx) - cols * 0.17) / lx) ** 2 + ldy * ldy
                if lung < 1:
                    v = 174  # lung, -850 HU
                elif (x - cx) ** 2 + sdy < (rows * 0.05) ** 2:
                    v = 1724  # bone, 700 HU
                else:
                    v = 1064 + (x * 3 + y * 5) % 17  # soft tissue, 40 HU, with some texture
                v += noise[(i * 7 + y) % 4099]
            v = 0 if v < 0 else 4095 if v > 4095 else v
            out[2 * i] = v & 0xff
            out[2 * i + 1] = v >> 8
            i += 1
    return bytes(out)


def replace_pixels(path, data):
    """Overwrites the pixel data of a dwb_gencohort file (Explicit VR Little Endian, Pixel Data last, OW)."""
    with open(path, "rb") as f:
        body = f.read()
    head = b"\xe0\x7f\x10\x00OW\x00\x00" + len(data).to_bytes(4, "little")
    at = body.rfind(head)
    if at < 0 or at + len(head) + len(data) != len(body):
        raise SystemExit("%s: no Pixel Data of %d bytes at its end" % (path, len(data)))
    with open(path, "wb") as f:
        f.write(body[:at + len(head)] + data)


def make_series(work, instances, rows, jobs):
    """(uncompressed files, JPEG 2000 lossless files, StudyInstanceUID)."""
    t0 = time.perf_counter()
    cohort, man = harness.gencohort(work, patients=1, studies=1, series=1, instances=instances, rows=rows,
                                    cols=rows, modalities="CT")
    files = [os.path.join(cohort, i["file"]) for i in man["instances"]]
    slices = [phantom(rows, rows, k) for k in range(8)]
    for n, f in enumerate(files):
        replace_pixels(f, slices[n % len(slices)])
    j2k_dir = os.path.join(work, "j2k")
    os.makedirs(j2k_dir)
    j2k = [os.path.join(j2k_dir, os.path.basename(f)) for f in files]

    def encode(pair):
        harness.run(["gdcmconv", "--j2k", pair[0], pair[1]], check=True, timeout=600)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(encode, zip(files, j2k)))
    with open(j2k[0], "rb") as f:
        if J2K_LOSSLESS not in f.read(4096):
            raise SystemExit("%s: gdcmconv --j2k did not write JPEG 2000 lossless" % j2k[0])
    print("%d instances generated and encoded in %.0f s" % (len(files), time.perf_counter() - t0))
    return files, j2k, man["instances"][0]["StudyInstanceUID"]


def mb_of(files):
    return sum(os.path.getsize(f) for f in files) / 1e6


def orthanc_count(orthanc):
    with urllib.request.urlopen(orthanc.url + "/statistics", timeout=30) as r:
        return json.loads(r.read())["CountInstances"]


def spooled(spool_dir):
    try:
        return sum(1 for e in os.listdir(spool_dir) if e.endswith(".dcm"))
    except FileNotFoundError:
        return 0


def store_run(work, tag, files, deid):
    """One C-STORE of files into a fresh bridge and Orthanc; (seconds until storescu ended, seconds until the
    store held them all, bridge CPU seconds from before the C-STORE until its spool was empty)."""
    wd = os.path.join(work, tag)
    os.makedirs(wd)
    servers = []
    try:
        orthanc = harness.Orthanc(wd)
        servers.append(orthanc)
        up = {"ae_title": "CLOUD", "base_url": orthanc.dicomweb_url}
        if deid:
            up["deidentify"] = dict(deid, uid_secret_file=os.path.join(work, "uid.secret"))
        spool = os.path.join(wd, "spool")
        bridge = harness.Bridge(wd, {"upstreams": [up], "spool": {"dir": spool, "min_free_mb": 0},
                                     "log": {"level": "warn"}})
        servers.append(bridge)
        time.sleep(0.3)  # past the bridge's start-up work
        cpu0 = process_cpu(bridge.proc.pid)
        t0 = time.perf_counter()
        harness.run(["storescu", "-aec", "CLOUD", "127.0.0.1", str(bridge.port)] + files, check=True, timeout=600)
        t_store = time.perf_counter() - t0
        end = time.time() + 600
        while orthanc_count(orthanc) < len(files):
            if time.time() > end:
                raise SystemExit("%s: the store holds %d of %d instances after 600 s" % (
                    tag, orthanc_count(orthanc), len(files)))
            time.sleep(0.02)
        t_all = time.perf_counter() - t0
        # The uploader removes a file once the store has confirmed it: its work ends with the spool empty.
        end = time.time() + 30
        while spooled(os.path.join(spool, "CLOUD")) and time.time() < end:
            time.sleep(0.02)
        cpu = process_cpu(bridge.proc.pid) - cpu0
        return t_store, t_all, cpu
    finally:
        harness.stop_servers(servers, wd)


def measure_store(work, files, repeat):
    with open(os.path.join(work, "uid.secret"), "w") as f:
        f.write(SECRET + "\n")
    runs = {name: [] for name, _ in STORE_CASES}
    for r in range(repeat):
        for k, (name, deid) in enumerate(STORE_CASES):
            runs[name].append(store_run(work, "store-%d-%d" % (r, k), files, deid))
    return runs


def measure_move(work, files, j2k, study, repeat):
    """{case: [(wall, bridge CPU, MB delivered)]} of the C-MOVE cases."""
    servers = []
    try:
        pacs = harness.StoreSCP(work, aet="PACS")
        servers.append(pacs)
        pacs_j2k = harness.StoreSCP(work, aet="PACSJ2K", extra_args=["+xv"])
        servers.append(pacs_j2k)
        stores = {}
        for ae, src in (("PLAIN", files), ("J2K", j2k)):
            d = os.path.join(work, "orthanc-" + ae.lower())
            os.makedirs(d)
            stores[ae] = harness.Orthanc(d, aet=ae)
            servers.append(stores[ae])
            stores[ae].upload(src)
        bridge = harness.Bridge(work, {
            "upstreams": [{"ae_title": ae, "base_url": o.dicomweb_url} for ae, o in stores.items()],
            "destinations": [{"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port},
                             {"ae_title": "PACSJ2K", "host": "127.0.0.1", "port": pacs_j2k.port}],
            "spool": {"dir": os.path.join(work, "spool"), "min_free_mb": 0}, "log": {"level": "warn"}})
        servers.append(bridge)
        cases = {MOVE_CASES[0]: ("PLAIN", pacs, EXPLICIT_LE), MOVE_CASES[1]: ("J2K", pacs, EXPLICIT_LE),
                 MOVE_CASES[2]: ("J2K", pacs_j2k, J2K_LOSSLESS)}

        def move(ae, dest):
            for f in dest.files():
                os.unlink(f)
            time.sleep(0.3)  # the previous run's writes settle
            cpu0 = process_cpu(bridge.proc.pid)
            t0 = time.perf_counter()
            harness.run(["movescu", "-S", "-aec", ae, "-aem", dest.aet, "-k", "QueryRetrieveLevel=STUDY", "-k",
                         "StudyInstanceUID=" + study, "127.0.0.1", str(bridge.port)], check=True, timeout=600)
            wall = time.perf_counter() - t0
            cpu = process_cpu(bridge.proc.pid) - cpu0
            got = dest.files()
            if len(got) != len(files):
                raise SystemExit("C-MOVE from %s to %s: %d of %d instances arrived" % (ae, dest.aet, len(got),
                                                                                      len(files)))
            return wall, cpu, got

        move("PLAIN", pacs)  # untimed: the bridge's memory and connections are made once
        runs = {name: [] for name in MOVE_CASES}
        for r in range(repeat):
            for name in MOVE_CASES:
                ae, dest, syntax = cases[name]
                wall, cpu, got = move(ae, dest)
                if r == 0:
                    with open(got[0], "rb") as f:
                        if syntax not in f.read(1024):
                            raise SystemExit("%s: %s did not arrive in %s" % (name, got[0], syntax.decode()))
                runs[name].append((wall, cpu, mb_of(got)))
        return runs
    finally:
        for s in reversed(servers):
            s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=150)
    ap.add_argument("--rows", type=int, default=512, help="rows and columns of 16-bit pixels (512: 512 KB each)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="gdcmconv processes at once while the series is encoded")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="rewrite README.md's bench-cost block")
    a = ap.parse_args()
    run = Run()
    work = tempfile.mkdtemp(prefix="dwb-bench-cost-")
    try:
        files, j2k, study = make_series(work, a.instances, a.rows, a.jobs)
        n, mb, j2k_mb = len(files), mb_of(files), mb_of(j2k)
        size = "%d CT instances of %d × %d 16-bit pixels (%.1f MB; %.1f MB as JPEG 2000 lossless)" % (
            n, a.rows, a.rows, mb, j2k_mb)
        print(size)
        store = measure_store(work, files, a.repeat)
        move = measure_move(work, files, j2k, study, a.repeat)

        print("\nC-STORE -> bridge -> STOW-RS into Orthanc; best wall of %d runs, least bridge CPU" % a.repeat)
        print("  %-32s %9s %9s %9s %9s %9s %7s" % ("", "C-STORE s", "stored s", "CPU s", "ms/inst", "ms/MB",
                                                  "ratio"))
        base = min(x[2] for x in store["plain"])
        store_rows = []
        for name, _ in STORE_CASES:
            v = store[name]
            t_store, t_all = min(x[0] for x in v), min(x[1] for x in v)
            cpu = min(x[2] for x in v)
            print("  %-32s %9.2f %9.2f %9.2f %9.2f %9.2f %7.2f" % (name, t_store, t_all, cpu, cpu / n * 1e3,
                                                                  cpu / mb * 1e3, cpu / base))
            print("  %-32s every run (C-STORE / stored / CPU): %s" % ("", "  ".join(
                "%.2f/%.2f/%.2f" % x for x in v)))
            label = "plain upstream" if name == "plain" else "`deidentify`: " + name.split(" ", 1)[1].replace(
                "basic", "`basic`").replace("retain-uids", "`retain-uids`")
            store_rows.append([label, "%.2f s" % t_store, "%.2f s" % t_all, "%.2f s" % cpu, "%.1f" % (cpu / n * 1e3),
                               "%.1f" % (cpu / mb * 1e3), "%.2f" % (cpu / base)])

        print("\nC-MOVE bridge -> storescp; best wall of %d runs, least bridge CPU" % a.repeat)
        print("  %-42s %8s %8s %8s %9s %9s %7s" % ("", "wall s", "MB", "CPU s", "ms/inst", "ms/MB", "ratio"))
        base = min(x[1] for x in move[MOVE_CASES[0]])
        move_rows = []
        for name in MOVE_CASES:
            v = move[name]
            wall, cpu, out_mb = min(x[0] for x in v), min(x[1] for x in v), v[0][2]
            print("  %-42s %8.2f %8.1f %8.2f %9.2f %9.2f %7.2f" % (name, wall, out_mb, cpu, cpu / n * 1e3,
                                                                  cpu / out_mb * 1e3, cpu / base))
            print("  %-42s every run (wall / CPU): %s" % ("", "  ".join("%.2f/%.2f" % x[:2] for x in v)))
            dest = "a destination taking JPEG 2000" if name == MOVE_CASES[2] else "an uncompressed-only destination"
            move_rows.append(["%s → %s" % (name, dest), "%.1f MB" % out_mb, "%.2f s" % wall, "%.2f s" % cpu,
                              "%.1f" % (cpu / n * 1e3), "%.1f" % (cpu / out_mb * 1e3), "%.2f" % (cpu / base)])
        if a.markdown:
            lines = table(["C-STORE → bridge → STOW-RS into Orthanc", "C-STORE done", "all in the store",
                           "bridge CPU", "CPU ms / instance", "CPU ms / MB", "CPU / plain"], store_rows)
            lines += [""] + table(["C-MOVE bridge → storescp", "delivered", "wall", "bridge CPU",
                                   "CPU ms / instance", "CPU ms / MB delivered", "CPU / plain"], move_rows)
            run.write_block("bench-cost", "bench/run-cost", size,
                            "best wall time of %d interleaved runs and the least CPU seconds (user + system) the "
                            "bridge spent in one of them" % a.repeat, lines)
    finally:
        if a.keep:
            print("work directory:", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
