"""Fixtures for integration tests: real Orthanc (DICOMweb plugin), DCMTK storescp and the bridge on free
loopback ports, plus wrappers around DCMTK's clients. Standard library only.

Each test gets a work directory under $TMPDIR, kept (and its path printed) when the test fails, removed
otherwise. Every server logs into that directory; the tail of each log is printed on failure."""
import atexit
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

BINARY = os.environ.get("DWB_BINARY", "")
BUILD_DIR = os.environ.get("DWB_BUILD_DIR", "")
SOURCE_DIR = os.environ.get("DWB_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"

# Lines by which ASan, LSan, UBSan and TSan announce a report. Any of them in the output of a process the
# suite built (the bridge, its tools) fails the test that started the process.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "WARNING: ThreadSanitizer",
                   "ERROR: ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")


def sanitizer_report(text):
    """The sanitizer report in a process's output (from its first marked line on), or None."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if any(m in line for m in SANITIZER_MARKS):
            return "\n".join(lines[max(0, i - 2):i + 60])
    return None


# Problems found in processes started by run() since the current test began: (command, report).
_run_problems = []


def peer_env():
    """Environment for DCMTK-based peers: Nagle off, as for the bridge, so that timings compare fairly."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


_handed_out = set()


def _port_range():
    """Ports for the tests' servers: below the kernel's ephemeral range, which outgoing connections take their
    source ports from (a port chosen by bind(0) lies inside it, and a test's own connections, dozens at once in
    test_load, could take it before the server that was to listen there starts: "Address already in use")."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (10000, low) if low > 12000 else (low + 30000, 65000)


def free_port():
    """A port nothing listens on, never the same one twice in this process: a test that asks for several ports
    before any of them is bound (listen.port, http.port, gateway.port) must not get one port twice."""
    lo, hi = _port_range()
    while True:
        port = random.randrange(lo, hi)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def wait_port(port, proc=None, timeout=20.0, log=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d%s" % (
                proc.returncode, port, ("; log:\n" + tail(log)) if log else ""))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on port %d after %.0f s%s" % (port, timeout, ("; log:\n" + tail(log)) if log else ""))


def raw_request(port, method, target, headers=None, body=b""):
    """One HTTP/1.1 request to 127.0.0.1:port on its own connection, the target sent byte for byte as given
    (http.client would refuse control characters in it), headers in the order given (a Host for the port unless
    one is given), then Connection: close and the body; (status, headers as a lower-cased dict, body)."""
    hdrs = dict(headers or {})
    if not any(k.lower() == "host" for k in hdrs):
        hdrs["Host"] = "127.0.0.1:%d" % port
    head = "%s %s HTTP/1.1\r\n" % (method, target) + "".join("%s: %s\r\n" % kv for kv in hdrs.items())
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        sock.sendall((head + "Connection: close\r\n\r\n").encode("latin-1") + body)
        r = http.client.HTTPResponse(sock, method=method)
        r.begin()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        sock.close()


def tail(path, n=40):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def run(cmd, timeout=120, env=None, check=False):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                       env=env or peer_env(), text=True, errors="replace")
    if BINARY and cmd and cmd[0] == BINARY:
        rep = sanitizer_report(p.stdout)
        if rep:
            _run_problems.append((" ".join(cmd), rep))
    if check and p.returncode != 0:
        raise AssertionError("%s exited %d:\n%s" % (" ".join(cmd), p.returncode, p.stdout))
    return p


class Server:
    """A child process with a log file, stopped on close()."""

    def __init__(self, name, workdir):
        self.name = name
        self.workdir = workdir
        self.log_path = os.path.join(workdir, name + ".log")
        self.proc = None
        # Exit statuses of every run of this server: (status, signal the test sent or None).
        self.exits = []
        self.checked = False  # the bridge's own log and exit are checked by the test case

    def _start(self, cmd, env=None, preexec_fn=None):
        self._cmd, self._env, self._preexec = cmd, env, preexec_fn
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env or peer_env(),
                                     preexec_fn=preexec_fn)

    def restart(self):
        """Starts the same command again (after stop()), logging into the same file."""
        self._start(self._cmd, self._env, self._preexec)

    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc is None:
            return None
        sent = None
        if self.proc.poll() is None:
            sent = sig
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        rc = self.proc.returncode
        self.exits.append((rc, sent))
        self.proc = None
        return rc

    def problems(self):
        """What went wrong in this server's life that no test asserted: a sanitizer report in its log, or an
        exit status other than 0 that the test did not cause with SIGKILL. Only for processes the suite built."""
        out = []
        rep = sanitizer_report(self.log())
        if rep:
            out.append("sanitizer report in %s:\n%s" % (self.log_path, rep))
        for rc, sent in self.exits:
            if rc not in (0, None) and not (sent == signal.SIGKILL and rc == -signal.SIGKILL):
                out.append("%s exited with status %s (signal sent by the test: %s)" % (self.name, rc, sent))
        return out

    def close(self):
        self.stop()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


class Orthanc(Server):
    """Orthanc with the DICOMweb plugin: the store behind the bridge in tests."""

    def __init__(self, workdir, aet="ORTHANC", modalities=None, extra=None, http_port=None):
        super().__init__("orthanc-" + aet.lower(), workdir)
        self.aet = aet
        self.http_port = http_port or free_port()
        self.dicom_port = free_port()
        db = os.path.join(workdir, "orthanc-" + aet.lower())
        os.makedirs(db, exist_ok=True)
        cfg = {
            "Name": "dwb-test-" + aet, "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": aet,
            "StorageDirectory": db, "IndexDirectory": db, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            "DicomModalities": modalities or {}, "HttpServerEnabled": True, "StableAge": 1,
            "LimitFindResults": 0, "LimitFindInstances": 0,
        }
        if extra:
            cfg.update(extra)
        self.config_path = os.path.join(workdir, "orthanc-%s.json" % aet.lower())
        with open(self.config_path, "w") as f:
            json.dump(cfg, f)
        self._start(["Orthanc", self.config_path])
        self._wait_http()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.http_port

    @property
    def dicomweb_url(self):
        return self.url + "/dicom-web"

    def _wait_http(self, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("Orthanc exited with %s:\n%s" % (self.proc.returncode, tail(self.log_path)))
            try:
                with urllib.request.urlopen(self.url + "/system", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("Orthanc did not answer on %s:\n%s" % (self.url, tail(self.log_path)))

    def upload(self, files):
        """POST each Part-10 file to /instances over one keep-alive connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=60)
        try:
            for path in files:
                with open(path, "rb") as f:
                    body = f.read()
                conn.request("POST", "/instances", body, {"Content-Type": "application/dicom"})
                r = conn.getresponse()
                data = r.read()
                if r.status != 200:
                    raise RuntimeError("upload of %s failed: %d %s" % (path, r.status, data[:200]))
        finally:
            conn.close()

    def qido(self, path, accept="application/dicom+json"):
        req = urllib.request.Request(self.dicomweb_url + path, headers={"Accept": accept})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else []

    def instance_uids(self):
        """SOP Instance UIDs of every instance the store holds (via QIDO-RS)."""
        return sorted(i["00080018"]["Value"][0] for i in self.qido("/instances?includefield=00080018&limit=100000"))

    def get_json(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())


class StoreSCP(Server):
    """DCMTK's storescp as the PACS / move destination."""

    def __init__(self, workdir, aet="PACS", extra_args=None):
        super().__init__("storescp-" + aet.lower(), workdir)
        self.aet = aet
        self.port = free_port()
        self.dir = os.path.join(workdir, "received-" + aet.lower())
        os.makedirs(self.dir, exist_ok=True)
        self._start(["storescp", "--aetitle", aet, "-od", self.dir, "-uf"] + (extra_args or []) + [str(self.port)])
        wait_port(self.port, self.proc, log=self.log_path)

    def files(self):
        return sorted(os.path.join(self.dir, f) for f in os.listdir(self.dir) if not f.startswith("."))


class Bridge(Server):
    """dicomweb-bridge serve with a config written from a dict; waits until listen.port accepts."""

    def __init__(self, workdir, config, args=None, env=None, wait=True, preexec_fn=None):
        super().__init__("bridge", workdir)
        self.checked = True
        if not BINARY:
            raise RuntimeError("DWB_BINARY is not set (run through ctest)")
        self.config = config
        self.port = config.setdefault("listen", {}).setdefault("port", free_port())
        # Parallel tests must not fight over the default health port 8080.
        self.http_port = config.setdefault("http", {}).setdefault("port", free_port())
        # A test machine's disk may have less free space than the production default of spool.min_free_mb.
        config.setdefault("spool", {}).setdefault("min_free_mb", 16)
        self.config_path = os.path.join(workdir, "bridge.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)
        e = peer_env()
        if env:
            e.update(env)
        self._start([BINARY, "serve", "--config", self.config_path] + (args or []), env=e, preexec_fn=preexec_fn)
        if wait:
            wait_port(self.port, self.proc, log=self.log_path)

    def restart(self, wait=True):
        super().restart()
        if wait:
            wait_port(self.port, self.proc, log=self.log_path)


def vm_kib(pid, key):
    """VmHWM or VmRSS of a process, in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (key, pid))


def stop_servers(servers, workdir, keep=False):
    """Stops servers in reverse order of start, then removes workdir unless keep (it is printed then). For the
    benches, which start servers outside a TestCase."""
    for srv in reversed(servers):
        srv.close()
    if keep:
        print("work directory:", workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def close_shared(servers, workdir):
    """For servers a test class shares (setUpClass): stops them in reverse order and checks every one the suite
    built (bridges) as TestCase.tearDown does: a sanitizer report or an exit status the tests did not cause fails
    the class (tearDownClass raises), with the logs' tails printed and the work directory kept; otherwise the
    work directory is removed."""
    for s in reversed(servers):
        try:
            s.close()
        except Exception as e:  # keep stopping the others
            print("stopping %s failed: %s" % (s.name, e), file=sys.stderr)
    problems = []
    for s in servers:
        if getattr(s, "checked", False):
            problems += s.problems()
    problems += ["sanitizer report from `%s`:\n%s" % (c, r) for c, r in _run_problems]
    del _run_problems[:]
    if problems:
        print("\n--- work directory kept: %s" % workdir, file=sys.stderr)
        for s in servers:
            print("--- %s log (tail):\n%s" % (s.name, tail(s.log_path, 80)), file=sys.stderr)
        raise AssertionError("processes shared by this class misbehaved:\n" + "\n".join(problems))
    shutil.rmtree(workdir, ignore_errors=True)


def wait_for(pred, timeout=30, step=0.1):
    """Polls pred until it returns something true or the time is up; returns its last value."""
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def status_of(p):
    """The DIMSE status of the last response in a DCMTK client's -d output, e.g. "0xb000", or None."""
    import re
    m = re.findall(r"DIMSE Status\s*:\s*(0x[0-9a-fA-F]{4})", p.stdout)
    return m[-1].lower() if m else None


def counts_of(p):
    """(completed, failed, warning) sub-operations of the last C-MOVE/C-GET response in -d output."""
    import re

    def last(name):
        m = re.findall(r"%s\s*:\s*(\d+)" % name, p.stdout)
        return int(m[-1]) if m else None
    return last("Completed Suboperations"), last("Failed Suboperations"), last("Warning Suboperations")


def comment_of(p):
    """The ErrorComment (0000,0902) of the last response in a DCMTK client's -d output, "" if none."""
    import re
    m = re.findall(r"\(0000,0902\) LO \[([^\]]*)\]", p.stdout)
    return m[-1] if m else ""


def echoscu(port, aec, aet="ECHOSCU"):
    return run(["echoscu", "-aet", aet, "-aec", aec, "127.0.0.1", str(port)], timeout=60)


def dcm2json(path):
    p = run(["dcm2json", path], check=True)
    return json.loads(p.stdout)


def findscu(port, aec, keys, model="S", aet="FINDSCU", extra=None, workdir=None, timeout=120):
    """Runs findscu with -X (responses written as files) and returns (process, [DICOM JSON dict per response]).
    keys: list of "-k" values such as "QueryRetrieveLevel=STUDY" or "PatientName". The process gets .seconds:
    findscu's own wall time, without the conversion of its response files that follows."""
    out = tempfile.mkdtemp(prefix="find-", dir=workdir)
    cmd = ["findscu", "-" + model, "-aet", aet, "-aec", aec, "-X", "-od", out]
    for k in keys:
        cmd += ["-k", k]
    cmd += (extra or []) + ["127.0.0.1", str(port)]
    t0 = time.monotonic()
    p = run(cmd, timeout=timeout)
    p.seconds = time.monotonic() - t0
    results = []
    for f in sorted(os.listdir(out)):
        results.append(dcm2json(os.path.join(out, f)))
    shutil.rmtree(out, ignore_errors=True)
    return p, results


def pixels(path):
    """Pixel data (7FE0,0010) of a Part-10 file, as dcmdump writes it out (+W: raw value files)."""
    d = os.path.dirname(path) + "/px-" + os.path.basename(path)
    os.makedirs(d, exist_ok=True)
    run(["dcmdump", "-q", "+W", d, path], check=True)
    raw = [f for f in os.listdir(d) if f.endswith(".raw")]
    assert len(raw) == 1, (path, raw)
    with open(os.path.join(d, raw[0]), "rb") as f:
        return f.read()


def value(ds, tag):
    """First value of a tag in a DICOM JSON dict (PN as its Alphabetic group), or None."""
    a = ds.get(tag)
    if not a or "Value" not in a or not a["Value"]:
        return None
    v = a["Value"][0]
    if isinstance(v, dict) and "Alphabetic" in v:
        return v["Alphabetic"]
    return v


def dt_seconds(dt):
    """A DICOM DT value (PS3.5 6.2) with at least seconds, as seconds since the epoch; without a UTC offset it is
    local time. None when the value is not such a DT (or names no real date)."""
    import calendar
    import datetime
    import re
    m = re.match(r"^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\.\d{1,6})?(?:([+-])(\d{2})(\d{2}))?$", dt or "")
    if not m:
        return None
    try:
        t = datetime.datetime(*[int(m.group(i)) for i in range(1, 7)])
    except ValueError:
        return None
    frac = float(m.group(7)) if m.group(7) else 0.0
    if not m.group(8):
        return time.mktime(t.timetuple()) + frac
    off = (int(m.group(9)) * 60 + int(m.group(10))) * 60 * (1 if m.group(8) == "+" else -1)
    return calendar.timegm(t.timetuple()) - off + frac


def stamp_of(path):
    """The bridge's provenance stamp in a Part-10 file (conf/README.md, provenance), read with dcm2json: Retrieve
    AE Title, Retrieve URL, and from the last Original Attributes Sequence item Attribute Modification DateTime,
    Modifying System, Source of Previous Values and Reason for the Attribute Modification, by keyword (None when
    absent), and "items", how many items the sequence holds."""
    ds = dcm2json(path)
    items = ds.get("04000561", {}).get("Value", [])
    last = items[-1] if items else {}
    return {"RetrieveAETitle": value(ds, "00080054"), "RetrieveURL": value(ds, "00081190"),
            "AttributeModificationDateTime": value(last, "04000562"), "ModifyingSystem": value(last, "04000563"),
            "SourceOfPreviousValues": value(last, "04000564"),
            "ReasonForTheAttributeModification": value(last, "04000565"), "items": len(items)}


def assert_stamp(tc, path, bridge_ae, upstream_ae, base_url, t0, t1):
    """Checks the stamp of an instance the bridge forwarded between t0 and t1 (time.time() before and after the
    run that sent it) from the upstream upstream_ae at base_url: one Original Attributes Sequence item whose
    Attribute Modification DateTime is a valid DT within [t0, t1] (to the second the bridge writes), Modifying
    System the bridge's AE title, Reason COERCE, Source of Previous Values "<upstream AE> <host[:port]>" of
    base_url (LO, 64 characters at most), Retrieve AE Title the upstream's and Retrieve URL the instance's URL
    under base_url. Returns the stamp."""
    import urllib.parse
    st = stamp_of(path)
    what = "stamp of %s: %s" % (os.path.basename(path), st)
    tc.assertEqual(st["items"], 1, what)
    when = dt_seconds(st["AttributeModificationDateTime"])
    tc.assertIsNotNone(when, "Attribute Modification DateTime is not a DT: " + what)
    tc.assertTrue(int(t0) <= when <= t1, "Attribute Modification DateTime outside the run (%.3f to %.3f): %s" % (
        t0, t1, what))
    tc.assertEqual(st["ModifyingSystem"], bridge_ae, what)
    tc.assertEqual(st["ReasonForTheAttributeModification"], "COERCE", what)
    tc.assertEqual(st["SourceOfPreviousValues"], upstream_ae + " " + urllib.parse.urlsplit(base_url).netloc, what)
    tc.assertEqual(st["RetrieveAETitle"], upstream_ae, what)
    tc.assertTrue((st["RetrieveURL"] or "").startswith(base_url.rstrip("/") + "/studies/"), what)
    return st


def gencohort(workdir, name="cohort", **opts):
    """Generates a synthetic cohort with tests/tools/dwb_gencohort; returns (dir, manifest)."""
    tool = os.path.join(BUILD_DIR, "tests", "tools", "dwb_gencohort")
    out = os.path.join(workdir, name)
    cmd = [tool, "--out", out]
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            cmd.append(flag)
        else:
            cmd += [flag, str(v)]
    run(cmd, check=True)
    with open(os.path.join(out, "manifest.json")) as f:
        return out, json.load(f)


class TestCase(unittest.TestCase):
    """A test with its own work directory and servers that are stopped after the test. A sanitizer report or an
    unexpected exit status of any bridge process the test started fails the test, with the report shown."""

    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="dwb-it-%s-" % self._testMethodName)
        self._servers = []
        del _run_problems[:]

    def start(self, server):
        self._servers.append(server)
        return server

    def _failed_so_far(self):
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        if any(err is not None for _, err in getattr(outcome, "errors", [])):
            return True
        res = getattr(outcome, "result", None)
        return res is not None and any(t is self for t, _ in res.failures + res.errors)

    def tearDown(self):
        for s in reversed(self._servers):
            try:
                s.close()
            except Exception as e:  # keep stopping the others
                print("stopping %s failed: %s" % (s.name, e), file=sys.stderr)
        problems = []
        for s in self._servers:
            if s.checked:
                problems += s.problems()
        problems += ["sanitizer report from `%s`:\n%s" % (c, r) for c, r in _run_problems]
        del _run_problems[:]
        if problems or self._failed_so_far():
            print("\n--- work directory kept: %s" % self.workdir, file=sys.stderr)
            seen = set()
            for s in self._servers:
                if s.log_path in seen:
                    continue
                seen.add(s.log_path)
                print("--- %s log (tail):\n%s" % (s.name, tail(s.log_path, 80)), file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if problems:
            self.fail("processes started by this test misbehaved:\n" + "\n".join(problems))


def main():
    """Runs the module's tests; fails when none ran (a module whose tests all vanished must not pass) and when one
    was skipped (unless DWB_ALLOW_SKIP=1)."""
    prog = unittest.main(module="__main__", verbosity=2, exit=False)
    res = prog.result
    if res.testsRun == 0:
        print("FAILED: no test ran in %s" % sys.argv[0], file=sys.stderr)
        sys.exit(1)
    # A skipped test is not a passed one: in CI (scripts/test installs every peer) nothing may be skipped. A
    # developer without a peer sets DWB_ALLOW_SKIP=1.
    if res.skipped and os.environ.get("DWB_ALLOW_SKIP") != "1":
        for t, why in res.skipped:
            print("FAILED: %s skipped: %s" % (t.id(), why), file=sys.stderr)
        sys.exit(1)
    sys.exit(0 if res.wasSuccessful() else 1)
