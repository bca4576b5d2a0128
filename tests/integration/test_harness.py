"""The harness itself: a sanitizer report or an unexpected exit of a process the suite built must fail the test
that started it, and a module that runs no test must fail. Without these the rest of the suite could pass
while the bridge reports memory errors."""
import os
import signal
import subprocess
import sys
import unittest

import harness


class Fake(harness.Server):
    """A stand-in for the bridge: a shell that prints what it is told and exits with the given status."""

    def __init__(self, workdir, script):
        super().__init__("fake", workdir)
        self.checked = True
        self._start(["sh", "-c", script])
        self.proc.wait(10)


class HarnessTest(unittest.TestCase):
    def setUp(self):
        self.workdir = os.path.join(os.environ.get("TMPDIR", "/tmp"), "dwb-harness-%d" % os.getpid())
        os.makedirs(self.workdir, exist_ok=True)

    def test_asan_report_in_log_is_a_problem(self):
        f = Fake(self.workdir, "echo '==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1'; exit 0")
        f.stop()
        probs = f.problems()
        self.assertEqual(len(probs), 1, probs)
        self.assertIn("heap-use-after-free", probs[0])

    def test_ubsan_and_lsan_reports_are_problems(self):
        for line in ("x.c:3:5: runtime error: signed integer overflow",
                     "==2==ERROR: LeakSanitizer: detected memory leaks"):
            f = Fake(self.workdir, "echo '%s'" % line)
            f.stop()
            self.assertTrue(any(line.split(":")[-1].strip() in p for p in f.problems()), (line, f.problems()))
            os.unlink(f.log_path)

    def test_tsan_report_is_a_problem_even_when_the_process_exits_0(self):
        # The first two lines of a real report (gcc 12's libtsan); a process may go on and exit 0 after it
        # (halt_on_error=0, as scripts/test runs the ThreadSanitizer stage).
        f = Fake(self.workdir, "echo ==================; echo 'WARNING: ThreadSanitizer: data race (pid=7)'; "
                               "echo '  Write of size 4 at 0x1 by thread T1:'; exit 0")
        f.stop()
        probs = f.problems()
        self.assertEqual(len(probs), 1, probs)
        self.assertIn("data race", probs[0])

    def test_nonzero_exit_is_a_problem_but_a_kill_the_test_sent_is_not(self):
        f = Fake(self.workdir, "exit 3")
        f.stop()
        self.assertEqual(f.problems(), ["fake exited with status 3 (signal sent by the test: None)"])
        g = harness.Server("sleeper", self.workdir)
        g.checked = True
        g._start(["sleep", "30"])
        g.stop(signal.SIGKILL)
        self.assertEqual(g.problems(), [])

    def test_shared_servers_are_checked_when_the_class_closes_them(self):
        # test_find.py and test_move.py share one bridge per class: its report fails the class, logs kept.
        bad_dir = os.path.join(self.workdir, "shared-bad")
        os.makedirs(bad_dir, exist_ok=True)
        f = Fake(bad_dir, "echo 'SUMMARY: UndefinedBehaviorSanitizer: undefined-behavior x.c:1'; exit 0")
        with self.assertRaises(AssertionError) as cm:
            harness.close_shared([f], bad_dir)
        self.assertIn("UndefinedBehaviorSanitizer", str(cm.exception))
        self.assertTrue(os.path.isdir(bad_dir), "the work directory is kept for a failure")
        good_dir = os.path.join(self.workdir, "shared-good")
        os.makedirs(good_dir, exist_ok=True)
        harness.close_shared([Fake(good_dir, "echo fine; exit 0")], good_dir)
        self.assertFalse(os.path.exists(good_dir))

    def test_clean_run_has_no_problem(self):
        f = Fake(self.workdir, "echo all well; exit 0")
        f.stop()
        self.assertEqual(f.problems(), [])

    def test_module_without_tests_fails(self):
        empty = os.path.join(self.workdir, "test_empty.py")
        with open(empty, "w") as fh:
            fh.write("import harness\nif __name__ == '__main__':\n    harness.main()\n")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(os.path.abspath(harness.__file__))
        p = subprocess.run([sys.executable, empty], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env, timeout=60)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("no test ran", p.stdout)

    def test_a_skipped_test_fails_the_module_unless_allowed(self):
        mod = os.path.join(self.workdir, "test_skipping.py")
        with open(mod, "w") as fh:
            fh.write("import unittest\nimport harness\n\n\nclass T(unittest.TestCase):\n"
                     "    def test_a(self):\n        pass\n\n"
                     "    def test_b(self):\n        raise unittest.SkipTest('squid is not installed')\n\n\n"
                     "if __name__ == '__main__':\n    harness.main()\n")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(os.path.abspath(harness.__file__))
        env.pop("DWB_ALLOW_SKIP", None)
        p = subprocess.run([sys.executable, mod], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env, timeout=60)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("test_b skipped: squid is not installed", p.stdout)
        env["DWB_ALLOW_SKIP"] = "1"
        p = subprocess.run([sys.executable, mod], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout)

    def test_report_fails_the_test_that_started_the_process(self):
        mod = os.path.join(self.workdir, "test_reported.py")
        with open(mod, "w") as fh:
            fh.write(
                "import harness\n"
                "class T(harness.TestCase):\n"
                "    def test_x(self):\n"
                "        s = self.start(harness.Server('bridge', self.workdir))\n"
                "        s.checked = True\n"
                "        s._start(['sh', '-c', 'echo ==9==ERROR: AddressSanitizer: stack-buffer-overflow'])\n"
                "        s.proc.wait(10)\n"
                "if __name__ == '__main__':\n"
                "    harness.main()\n")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(os.path.abspath(harness.__file__))
        p = subprocess.run([sys.executable, mod], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env, timeout=60)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("stack-buffer-overflow", p.stdout)
        self.assertIn("FAIL: test_x", p.stdout)

    def tearDown(self):
        import shutil
        shutil.rmtree(self.workdir, ignore_errors=True)


if __name__ == "__main__":
    harness.main()
