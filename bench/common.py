"""What the benches share: the machine and commit they state, the load average around their runs, the README
block each one's --markdown rewrites, and curl STOW-RS of files in batches (bench.py and store.py).

A bench with --markdown makes a Run when it starts (its run script has just built the binary), and at the end
calls run.write_block(name, command, what, method, lines): the README's block between
<!-- NAME:begin ... --> and <!-- NAME:end --> becomes a header line (what was measured, how many runs and which
statistic, the machine, the commit, the date, the bench's wall time, the load average before and after) and the
lines. The block must be there exactly once: rewriting it again leaves one block."""
import os
import platform
import re
import shutil
import subprocess
import time

SOURCE_DIR = os.environ.get("DWB_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The file --markdown rewrites; another one (a copy) for a trial run.
README = os.environ.get("DWB_BENCH_README", os.path.join(SOURCE_DIR, "README.md"))

# The test helpers the benches import; the rest of tests/ cannot change a bench's figures.
BENCH_HELPERS = ("tests/integration/harness.py", "tests/integration/faultstore.py", "tests/integration/bucketstore.py")


def machine():
    """CPU count and model, RAM, kernel."""
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


def counts_for_bench(path):
    """Whether a changed file can change what a bench measures: the sources, the build, bench/ and the test
    helpers it uses; not documentation, packaging, CI, scripts or the tests."""
    if path.endswith(".md") or path.startswith(("docs/", "docker/", ".ci/", "scripts/")):
        return False
    if path.startswith("tests/"):
        return path.startswith("tests/tools/") or path in BENCH_HELPERS
    return True


def commit(root=SOURCE_DIR):
    """HEAD as 12 hex digits, with "+ local changes (paths)" when a file that counts_for_bench() differs from it."""
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, check=True).stdout.strip()
        st = subprocess.run(["git", "-C", root, "status", "--porcelain", "-z", "--untracked-files=all"],
                            stdout=subprocess.PIPE, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    entries = st.split("\0")
    paths, i = [], 0
    while i < len(entries):
        e = entries[i]
        i += 1
        if len(e) < 4:
            continue
        if e[0] in "RC":
            i += 1  # a rename or copy is followed by its source path
        paths.append(e[3:])
    dirty = sorted(p for p in paths if counts_for_bench(p))
    if not dirty:
        return rev
    shown = ", ".join(dirty[:3]) + (" and %d more" % (len(dirty) - 3) if len(dirty) > 3 else "")
    return "%s + local changes (%s)" % (rev, shown)


def fmt_s(v):
    return "%.0f ms" % (v * 1000) if v < 1 else "%.2f s" % v


def table(head, rows):
    """Markdown table lines."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def block_re(name):
    return re.compile(r"<!-- %s:begin\b.*?<!-- %s:end -->" % (re.escape(name), re.escape(name)), re.S)


def rewrite_block(text, name, command, lines):
    """text with its one NAME block replaced by lines between the markers; SystemExit unless there is exactly one."""
    begin = "<!-- %s:begin (written by %s --markdown; edits here are overwritten) -->" % (name, command)
    block = "\n".join([begin] + list(lines) + ["<!-- %s:end -->" % name])
    new, n = block_re(name).subn(lambda m: block, text)
    if n != 1:
        raise SystemExit("README.md has %d <!-- %s:begin --> ... <!-- %s:end --> blocks, expected exactly one "
                         "(put the two markers in its Performance section)" % (n, name, name))
    return new


class Run:
    """Taken when a bench starts: commit, date, load average; header() adds the load average at the end."""

    def __init__(self):
        self.commit = commit()
        self.date = time.strftime("%Y-%m-%d")
        self.load_before = os.getloadavg()[0]
        self.t0 = time.perf_counter()

    def header(self, what, method):
        load_after, cpus = os.getloadavg()[0], os.cpu_count() or 1
        # Before the runs nothing of the bench is running; after them its own processes count too.
        shared = self.load_before >= 0.5 or load_after > cpus
        secs = time.perf_counter() - self.t0
        took = "%.0f s" % secs if secs < 120 else "%.0f min" % (secs / 60)
        return ("%s; %s. On %s; commit %s, %s; the bench took %s; load average %.1f before and %.1f after the "
                "runs%s." % (what, method, machine(), self.commit, self.date, took, self.load_before, load_after,
                             " (other work shared the machine: the figures are noisy)" if shared else ""))

    def write_block(self, name, command, what, method, lines):
        with open(README) as f:
            text = f.read()
        new = rewrite_block(text, name, command, [self.header(what, method), ""] + list(lines))
        with open(README, "w") as f:
            f.write(new)
        print("%s: the %s block rewritten" % (README, name))


def curl_stow(work, url, files, parallel, batch):
    """A curl command that posts files to url's /studies as multipart bodies of batch files each (written into
    work), parallel requests at a time."""
    bodies = []
    for k in range(0, len(files), batch):
        path = os.path.join(work, "body-%04d" % (k // batch))
        with open(path, "wb") as out:
            for f in files[k:k + batch]:
                out.write(b"--BENCH\r\nContent-Type: application/dicom\r\n\r\n")
                with open(f, "rb") as inp:
                    shutil.copyfileobj(inp, out)
                out.write(b"\r\n")
            out.write(b"--BENCH--\r\n")
        bodies.append(path)
    # No "Expect: 100-continue" (the bridge sends none either): Orthanc does not answer it, and curl would wait
    # a second per request before sending the body.
    # -o and --fail hold for one transfer: each one after "-:" (--next) names them again.
    cmd = ["curl", "-s", "--no-progress-meter"]
    if parallel > 1:
        cmd += ["-Z", "--parallel-max", str(parallel)]
    for i, p in enumerate(bodies):
        if i:
            cmd.append("-:")
        cmd += ["-o", "/dev/null", "--fail", "-X", "POST", "-H", "Expect:", "-H",
                'Content-Type: multipart/related; type="application/dicom"; boundary=BENCH',
                "-H", "Accept: application/dicom+json", "--data-binary", "@" + p, url + "/studies"]
    return cmd


def process_cpu(pid):
    """User + system CPU seconds of a running process and its finished children, from /proc/PID/stat (fields
    14-17): for servers the bench started, whose rusage it cannot read until they exit."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state).
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
