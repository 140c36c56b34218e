#!/usr/bin/env python3
"""`aiokit info`: the JSON names every engine with a reason when refused, and a path probe answers."""
import json
import os
import subprocess
import sys

aiokit = sys.argv[1]
test_dir = os.environ.get("AIOKIT_TEST_DIR", "/var/tmp")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


p = subprocess.run([aiokit, "info", "--output-format=json", f"--filename={test_dir}"],
                   capture_output=True, text=True, timeout=120)
check(p.returncode == 0, f"info exit {p.returncode}: {p.stderr}")
if p.returncode == 0:
    doc = json.loads(p.stdout)
    names = [e["engine"] for e in doc["engines"]]
    check(names == ["io_uring", "linux-aio", "threads"], f"engines in auto order: {names}")
    for e in doc["engines"]:
        check(e["allowed"] or e.get("reason"), f"{e['engine']} refused without a reason")
    check(doc["auto_choice"] in names + ["none"], "auto_choice")
    allowed = [e["engine"] for e in doc["engines"] if e["allowed"]]
    check(not allowed or doc["auto_choice"] == allowed[0], "auto picks the first allowed engine")
    check(doc["linux_aio"]["fs.aio-max-nr"] != "", "aio-max-nr")
    check("memlock_soft_bytes" in doc["limits"], "memlock")
    if doc["io_uring"]["available"]:
        check("READ" in doc["io_uring"]["opcodes"], "io_uring opcodes list READ")
        check("NODROP" in doc["io_uring"]["features"], "io_uring features list NODROP")
        check("SQPOLL" in doc["io_uring"]["setup_flags"], "io_uring setup flags probed")
    path = doc["path"]
    check(path["path"] == test_dir, "path echoed")
    if path["o_direct"]:
        a = path["dio_offset_align"]
        check(a >= 1 and (a & (a - 1)) == 0, f"alignment {a} is a power of two")
        check("iopoll" in path, "iopoll probed")
    else:
        check(path.get("o_direct_error"), "O_DIRECT refused without a reason")

p = subprocess.run([aiokit, "info"], capture_output=True, text=True, timeout=120)
check(p.returncode == 0 and "engines (auto picks" in p.stdout and "RLIMIT_MEMLOCK" in p.stdout,
      f"text output: {p.stdout}{p.stderr}")

p = subprocess.run([aiokit, "info", "--filename=/nonexistent/aiokit"], capture_output=True, text=True)
check(p.returncode == 2 and "--filename=/nonexistent/aiokit" in p.stderr and "ENOENT" in p.stderr,
      f"missing path: {p.returncode} {p.stderr}")
p = subprocess.run([aiokit, "info", "--output-format=xml"], capture_output=True, text=True)
check(p.returncode == 2 and "--output-format" in p.stderr, f"bad format: {p.returncode} {p.stderr}")

sys.exit(1 if failures else 0)
