#!/usr/bin/env python3
"""`aiokit bench` beyond one job: mixes, clones, job files, fsync, block size ranges, offsets, ramp time,
batching, verify (and that it catches a corrupted, a misplaced and a missing block), --compare, --sweep and the
progress line. Each check can fail; numbers are checked for consistency, never for speed."""
import json
import os
import pty
import shutil
import subprocess
import sys
import tempfile

aiokit = sys.argv[1]
tmp = tempfile.mkdtemp(prefix="aiokit-bench-jobs-", dir=os.environ.get("AIOKIT_TEST_DIR") or None)
failures = []


def run(*args, env=None):
    p = subprocess.run([aiokit, "bench", *args], capture_output=True, text=True, timeout=240, env=env)
    return p.returncode, p.stdout, p.stderr


def run_json(*args):
    code, out, err = run(*args, "--output-format=json")
    if code != 0:
        return code, None, err
    return code, json.loads(out), err


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)
    return cond


# Mixed reads and writes: --size bytes in all, about rwmixread percent of them reads.
code, doc, err = run_json("--rw=randrw", "--rwmixread=70", "--size=8m", "--iodepth=8")
if check(code == 0, f"randrw: exit {code}: {err}"):
    job = doc["jobs"][0]
    r, w = job["read"]["total_ios"], job["write"]["total_ios"]
    check(r + w == 2048, f"randrw: {r} + {w} requests, want 2048")
    check(0.6 < r / (r + w) < 0.8, f"randrw: {r / (r + w):.2f} reads, want about 0.7")
    check(job["job options"]["rwmixread"] == "70", "randrw: rwmixread in job options")

# Clones: one entry each, or one for all with group_reporting.
code, doc, err = run_json("--numjobs=2", "--size=4m", "--iodepth=4")
if check(code == 0, f"numjobs: exit {code}: {err}"):
    check(len(doc["jobs"]) == 2, f"numjobs=2: {len(doc['jobs'])} entries")
    check(all(j["read"]["total_ios"] == 1024 for j in doc["jobs"]), "numjobs=2: 1024 each")
code, doc, err = run_json("--numjobs=3", "--group_reporting", "--size=4m", "--iodepth=4")
if check(code == 0, f"group_reporting: exit {code}: {err}"):
    check(len(doc["jobs"]) == 1 and doc["jobs"][0]["read"]["total_ios"] == 3072,
          f"group_reporting: {[j['read']['total_ios'] for j in doc['jobs']]}")

# A job file in fio's format: [global], two jobs, comments, a bare flag; the command line wins over it.
jobfile = os.path.join(tmp, "two.fio")
with open(jobfile, "w") as f:
    f.write("; two jobs\n[global]\nsize=4m\n# a comment\nioengine=libaio\niodepth=4\n\n"
            "[reader]\nrw=randread\nbs=4k\n\n[writer]\nrw=write\nbs=8k\nfsync=16\n")
code, doc, err = run_json(jobfile, "--direct=1")
if check(code == 0, f"job file: exit {code}: {err}"):
    names = [j["jobname"] for j in doc["jobs"]]
    check(names == ["reader", "writer"], f"job file: jobs {names}")
    if len(doc["jobs"]) == 2:
        reader, writer = doc["jobs"]
        check(reader["aiokit"]["engine"] == "linux-aio", "job file: ioengine=libaio is linux-aio")
        check(reader["read"]["total_ios"] == 1024, f"job file: reader {reader['read']['total_ios']} ios")
        check(writer["write"]["total_ios"] == 512, f"job file: writer {writer['write']['total_ios']} ios")
        # fsync=16: one fsync after every 16 writes.
        check(writer["sync"]["total_ios"] == 32, f"fsync=16: {writer['sync']['total_ios']} fsyncs, want 32")
code, doc, err = run_json(jobfile, "--bs=16k")
if check(code == 0, f"job file + --bs: exit {code}: {err}"):
    check(all(j["job options"]["bs"] == "16384" for j in doc["jobs"]), "the command line wins over the job file")
bad = os.path.join(tmp, "bad.fio")
with open(bad, "w") as f:
    f.write("[global]\nsize=4m\n[j]\nrw=randread\nno_such_option\n")
code, out, err = run(bad)
check(code == 2 and f"{bad}:5: no_such_option" in err and len(err.strip().splitlines()) == 1,
      f"an unknown option in a job file is refused by file:line and name: {code} {err}")

# --bsrange: every request a multiple of the smallest size, within the range.
code, doc, err = run_json("--rw=randwrite", "--bsrange=4k-16k", "--size=4m")
if check(code == 0, f"bsrange: exit {code}: {err}"):
    w = doc["jobs"][0]["write"]
    check(w["io_bytes"] % 4096 == 0 and 256 <= w["total_ios"] <= 1024 and w["io_bytes"] >= 4 << 20,
          f"bsrange: {w['total_ios']} ios, {w['io_bytes']} bytes")
    check(w["total_ios"] < 1000, f"bsrange: {w['total_ios']} ios: sizes are not drawn from the range")

# --offset: the region starts there (a write job extends the file to offset + size).
path = os.path.join(tmp, "offset.dat")
code, doc, err = run_json("--filename=" + path, "--rw=write", "--offset=1m", "--size=1m")
check(code == 0 and os.path.getsize(path) == 2 << 20, f"offset: exit {code}, size {os.path.getsize(path)}")
os.unlink(path)

# --ramp_time is not counted in the runtime.
code, doc, err = run_json("--size=4m", "--runtime=1", "--time_based", "--ramp_time=500ms", "--iodepth=4")
if check(code == 0, f"ramp_time: exit {code}: {err}"):
    rt = doc["jobs"][0]["read"]["runtime"]
    check(900 <= rt <= 1500, f"ramp_time: measured {rt} ms, want about 1000")

# Batching as fio means it.
code, doc, err = run_json("--size=4m", "--iodepth=16", "--iodepth_batch_submit=4",
                          "--iodepth_batch_complete_min=2", "--iodepth_batch_complete_max=8")
if check(code == 0, f"batching: exit {code}: {err}"):
    ak = doc["jobs"][0]["aiokit"]
    check(ak["avg_submit_batch"] <= 4.0, f"iodepth_batch_submit=4: {ak['avg_submit_batch']} per submit")
    check(ak["avg_reap_batch"] <= 8.0, f"iodepth_batch_complete_max=8: {ak['avg_reap_batch']} per reap")
    check(ak["avg_reap_batch"] >= 1.9, f"iodepth_batch_complete_min=2: {ak['avg_reap_batch']} per reap")
    check(isinstance(ak.get("sleeps"), int) and ak["sleeps"] >= 0, f"batching: sleeps {ak.get('sleeps')}")

# Verify: a random-write job checks every block; a read job later checks them again, and catches a corrupted
# block, a block copied to the wrong place, and (in a write job's file) a block that was never written.
path = os.path.join(tmp, "verify.dat")
for engine in ("linux-aio", "io_uring", "threads", "sync"):
    code, doc, err = run_json("--filename=" + path, "--rw=randwrite", "--verify=xxh3", "--size=1m",
                              "--engine=" + engine)
    if code == 2 and engine in err:
        print(f"verify on {engine}: engine refused here, skipped: {err.strip()}")
        continue
    if check(code == 0, f"verify {engine}: exit {code}: {err}"):
        v = doc["jobs"][0]["aiokit"]["verify"]
        check(v["checked"] == 256 and v["failed"] == 0, f"verify {engine}: {v}")
code, out, err = run("--filename=" + path, "--rw=read", "--verify=xxh3")
check(code == 0, f"verify read-back: exit {code}: {err}")
with open(path, "r+b") as f:
    f.seek(8192 + 100)
    f.write(b"XXXX")  # corrupt block 2
    f.seek(0)
    block0 = f.read(4096)
    f.seek(5 * 4096)
    f.write(block0)  # block 0 where block 5 belongs
code, doc, err = run_json("--filename=" + path, "--rw=randread", "--verify=xxh3")
check(code == 1, f"verify of a corrupted file: exit {code}, want 1")
check("offset 8192" in err or "offset 20480" in err, f"verify: the error names the offset: {err}")
code, out, err = run("--filename=" + path, "--rw=read", "--verify=xxh3")
check("offset 8192: expected checksum" in out and "found" in out, f"verify: corrupted block reported: {out}")
check("offset 20480: expected the block written for offset 20480, found the one written for offset 0" in out,
      f"verify: misplaced block reported: {out}")
os.unlink(path)
code, doc, err = run_json("--rw=randrw", "--verify=xxh3", "--size=2m", "--runtime=1", "--time_based",
                          "--iodepth=16")
if check(code == 0, f"verify randrw time_based: exit {code}: {err}"):
    v = doc["jobs"][0]["aiokit"]["verify"]
    check(v["checked"] > 512 and v["failed"] == 0, f"verify randrw: {v}")

# --compare: one row per engine, each measured or refused with a reason.
code, doc, err = run_json("--compare", "--size=4m", "--iodepth=8")
if check(code == 0, f"compare: exit {code}: {err}"):
    rows = doc["aiokit_table"]
    check([r["engine"] for r in rows] == ["linux-aio", "io_uring", "threads", "sync"], f"compare: rows {rows}")
    for r in rows:
        check(("iops" in r and r["iops"] > 0 and r["clat_p99_ns"] >= r["clat_p50_ns"]) or r.get("refused"),
              f"compare: row {r}")
    check(len(doc["jobs"]) == sum(1 for r in rows if "iops" in r), "compare: one job entry per engine run")
code, out, err = run("--compare", "--size=4m", "--iodepth=8")
check(code == 0 and "engine" in out and "CPU/IO" in out and "threads" in out, f"compare table: {out}{err}")

# --sweep: one run per value.
code, doc, err = run_json("--sweep=iodepth=1,4,16", "--size=2m", "--engine=threads")
if check(code == 0, f"sweep: exit {code}: {err}"):
    rows = doc["aiokit_table"]
    check([r["iodepth"] for r in rows] == ["1", "4", "16"], f"sweep: rows {rows}")
    check([j["job options"]["iodepth"] for j in doc["jobs"]] == ["1", "4", "16"], "sweep: job entries")
    check(all(j["aiokit"]["sweep"]["option"] == "iodepth" for j in doc["jobs"]), "sweep: marked in the job")
code, doc, err = run_json("--sweep=bs=4k,64k", "--compare", "--size=2m")
if check(code == 0, f"sweep x compare: exit {code}: {err}"):
    check(len(doc["aiokit_table"]) == 8, f"sweep x compare: {len(doc['aiokit_table'])} rows, want 8")

# --inject: faults through a wrapper on every engine; errors are counted, not fatal; every request accepted
# comes back exactly once, and verify checks what was written whole.
path = os.path.join(tmp, "inject.dat")
spec = ("eagain=0.05,partial=0.1,short=0.02,eio=0.02,enospc=0.02,delay=0.02:100us,reorder=0.05:300us,"
        "stall=0.01:1ms")
for engine in ("linux-aio", "io_uring", "threads", "sync"):
    code, doc, err = run_json("--filename=" + path, "--rw=randrw", "--verify=xxh3", "--size=2m", "--iodepth=16",
                              "--runtime=1", "--time_based", "--engine=" + engine, "--inject=" + spec)
    if code == 2 and engine in err:
        print(f"inject on {engine}: engine refused here, skipped: {err.strip()}")
        continue
    if check(code == 0, f"inject {engine}: exit {code}: {err}"):
        ak = doc["jobs"][0]["aiokit"]
        f = ak["inject"]
        check(f["spec"].startswith(spec + ",seed="), f"inject {engine}: spec {f['spec']}")
        check(f["accepted"] == f["completed"] and f["accepted"] > 1000 and f["reaped_twice"] == 0,
              f"inject {engine}: accepted {f['accepted']}, completed {f['completed']}, twice {f['reaped_twice']}")
        for k in ("eagain", "partial", "short", "eio", "enospc", "delayed", "reordered", "stalls"):
            check(f[k] > 0, f"inject {engine}: no {k} injected: {f}")
        check(ak["errors"].get("EIO") == f["eio"] and ak["errors"].get("ENOSPC") == f["enospc"],
              f"inject {engine}: errors {ak['errors']} vs injected {f}")
        check(ak["verify"]["failed"] == 0 and ak["verify"]["checked"] > 0, f"inject {engine}: verify {ak['verify']}")
    if os.path.exists(path):
        os.unlink(path)
# The same seed gives the same faults on the first submissions (one clone, one thread).
code, out, err = run("--size=1m", "--iodepth=1", "--engine=threads", "--rw=randread",
                     "--inject=eagain=0.3,seed=99", "--output-format=json")
code2, out2, err2 = run("--size=1m", "--iodepth=1", "--engine=threads", "--rw=randread",
                        "--inject=eagain=0.3,seed=99", "--output-format=json")
if check(code == 0 and code2 == 0, f"inject seed: exit {code} {code2}: {err} {err2}"):
    a = json.loads(out)["jobs"][0]["aiokit"]["inject"]
    b = json.loads(out2)["jobs"][0]["aiokit"]["inject"]
    check(a["eagain"] == b["eagain"] and a["eagain"] > 0, f"inject seed=99 replays: {a['eagain']} vs {b['eagain']}")
code, out, err = run("--size=1m", "--inject=eio=2")
check(code == 2 and "--inject" in err and "[0, 1)" in err, f"inject: a bad spec is refused: {code} {err}")

# The progress line: on stderr when it is a terminal, silent otherwise.
code, out, err = run("--size=4m", "--runtime=2", "--time_based", "--iodepth=4")
check(code == 0 and err == "", f"no terminal, no progress: {err!r}")
pid, fd = pty.fork()
if pid == 0:
    # stderr is the terminal; stdout is thrown away.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.execv(aiokit, [aiokit, "bench", "--size=4m", "--runtime=3", "--time_based", "--iodepth=4"])
seen = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
_, status = os.waitpid(pid, 0)
check(os.waitstatus_to_exitcode(status) == 0, "progress run exits 0")
check(b"IOPS=" in seen and b"elapsed" in seen and b"eta" in seen, f"progress line on a terminal: {seen[:300]!r}")

# --help lists the options.
p = subprocess.run([aiokit, "bench", "--help"], capture_output=True, text=True)
check(p.returncode == 0 and "--iodepth_batch_complete_max" in p.stdout and "--verify" in p.stdout,
      "bench --help lists the options")

shutil.rmtree(tmp)
print(f"check_bench_jobs: {len(failures)} failures")
sys.exit(1 if failures else 0)
