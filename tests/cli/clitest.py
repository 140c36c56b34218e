"""What the command-line checks share: a list of failures, check(), job files in a scratch directory, and
running `aiokit bench`. A check records a failure and goes on; finish() says how many failed and exits."""
import json
import os
import shutil
import subprocess
import sys
import tempfile


class Checks:
    def __init__(self, aiokit, prefix):
        self.aiokit = os.path.abspath(aiokit)
        self.tmp = tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("AIOKIT_TEST_DIR") or None)
        self.failures = []

    def check(self, cond, what):
        if not cond:
            self.failures.append(what)
            print("FAIL:", what)
        return cond

    def job_file(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def bench(self, *args, env=None, cwd=None):
        full = dict(os.environ)
        full.update(env or {})
        p = subprocess.run([self.aiokit, "bench", *args], capture_output=True, text=True, timeout=240, env=full,
                           cwd=cwd)
        return p.returncode, p.stdout, p.stderr

    def bench_json(self, *args, env=None, cwd=None):
        """The exit status, the JSON report (None when there is none) and stderr."""
        code, out, err = self.bench(*args, "--output-format=json", env=env, cwd=cwd)
        return code, (json.loads(out) if out.startswith("{") else None), err

    def finish(self, passed):
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.failures:
            print(f"{len(self.failures)} check(s) failed")
            sys.exit(1)
        print(passed)
