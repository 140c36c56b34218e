#!/usr/bin/env python3
"""fio job files as fio users write them, run by `aiokit bench`: comments after values, ${VAR} and fio's
keywords, stonewall and new_group (checked by when each group ran), wait_for, exitall, description, loops, io_size, number_ios,
offset_increment and startdelay, bssplit, CPU affinity (cpus_allowed and its policy), fio's synchronous and POSIX engine names, norandommap, randseed and randrepeat
(checked through the blocks a random writer touched), and fio's options aiokit lacks refused by name with what
fio does. Each check can fail; nothing is timed."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

aiokit = sys.argv[1]
tmp = tempfile.mkdtemp(prefix="aiokit-fio-jobs-", dir=os.environ.get("AIOKIT_TEST_DIR") or None)
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)
    return cond


def job_file(name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def bench(*args, env=None):
    full = dict(os.environ)
    full.update(env or {})
    p = subprocess.run([aiokit, "bench", *args], capture_output=True, text=True, timeout=240, env=full)
    return p.returncode, p.stdout, p.stderr


def bench_json(*args, env=None):
    code, out, err = bench(*args, "--output-format=json", env=env)
    return code, (json.loads(out) if code == 0 else None), err


data = os.path.join(tmp, "data")

# Comments after values, ${VAR} from the environment and $pagesize: the values fio would use.
path = job_file("comments.fio", f"""; fio's own comment styles
[global]   # defaults
filename={data}  ; the file
size=${{AIOKIT_FIO_SIZE}}   # from the environment
bs=$pagesize
ioengine=pvsync2 ; fio's preadv2/pwritev2
description=comments and ${{AIOKIT_FIO_SIZE}}

[w]
rw=write # sequential
""")
code, doc, err = bench_json(path, env={"AIOKIT_FIO_SIZE": "2m"})
if check(code == 0, f"comments: exit {code}: {err}"):
    job = doc["jobs"][0]
    opts = job["job options"]
    check(job["write"]["io_bytes"] == 2 << 20, f"comments: wrote {job['write']['io_bytes']}, want 2 MiB")
    check(opts["bs"] == str(os.sysconf("SC_PAGESIZE")), f"comments: bs {opts['bs']}")
    check(opts["ioengine"] == "sync", f"comments: pvsync2 ran on {opts['ioengine']}")
    check(opts.get("description") == "comments and 2m", f"comments: description {opts.get('description')!r}")
    check(opts["filename"] == data, f"comments: filename {opts['filename']!r}")
code, out, err = bench(path, env={"AIOKIT_FIO_SIZE": ""})
check(code == 2 and "size=: not a size" in err, f"an empty variable: exit {code}: {err}")
env = dict(os.environ)
env.pop("AIOKIT_FIO_SIZE", None)
p = subprocess.run([aiokit, "bench", path], capture_output=True, text=True, timeout=60, env=env)
check(p.returncode == 2 and "${AIOKIT_FIO_SIZE} is not set in the environment" in p.stderr,
      f"an unset variable: exit {p.returncode}: {p.stderr}")

# stonewall: the reader starts after the writers ended and checks what they wrote (verify: a block read
# before its writer got to it fails); new_group runs beside the job before it, reported as a group of its own.
path = job_file("groups.fio", f"""[global]
filename={data}
size=4m
ioengine=psync
verify=xxh3

[w1]
rw=write
size=2m
[w2]
rw=write
offset=2m
size=2m
description=the second half

[r]
stonewall
rw=read
[r2]
new_group
rw=randread
""")
code, doc, err = bench_json(path)
if check(code == 0, f"groups: exit {code}: {err}"):
    jobs = {j["jobname"]: j for j in doc["jobs"]}
    check(sorted(jobs) == ["r", "r2", "w1", "w2"], f"groups: jobs {sorted(jobs)}")
    check([jobs[n]["groupid"] for n in ("w1", "w2", "r", "r2")] == [0, 0, 1, 2],
          f"groups: groupids {[jobs[n]['groupid'] for n in ('w1', 'w2', 'r', 'r2')]}")
    ak = {n: j["aiokit"] for n, j in jobs.items()}
    check(ak["w1"]["group_began_s"] == ak["w2"]["group_began_s"] == 0, "groups: w1 and w2 start together first")
    check(ak["r"]["group_began_s"] >= ak["w1"]["group_ended_s"],
          f"groups: r began at {ak['r']['group_began_s']} before the writers ended "
          f"({ak['w1']['group_ended_s']})")
    check(ak["r2"]["group_began_s"] == ak["r"]["group_began_s"], "groups: new_group r2 runs beside r")
    check(jobs["r"]["read"]["io_bytes"] == 4 << 20, f"groups: r read {jobs['r']['read']['io_bytes']}")
    check(ak["r"]["verify"] == {"checked": 1024, "failed": 0, "mismatches": []}, f"groups: r {ak['r']['verify']}")
    check(jobs["w2"]["job options"].get("description") == "the second half", "groups: w2's description")
    check(jobs["r"]["job options"].get("stonewall") == "1", "groups: r's stonewall in its job options")

# wait_for: b starts when a ended, in the same group (its verify would fail on blocks a had not written yet);
# c, waiting for nobody, runs beside a. exitall: when e ends, the time-based f stops long before its minute.
path = job_file("wait.fio", f"""[global]
filename={data}
size=4m
ioengine=psync
[a]
rw=write
verify=xxh3
[b]
wait_for=a
rw=read
verify=xxh3
[c]
rw=randread
size=1m
""")
code, doc, err = bench_json(path)
if check(code == 0, f"wait_for: exit {code}: {err}"):
    jobs = {j["jobname"]: j for j in doc["jobs"]}
    check([jobs[n]["groupid"] for n in "abc"] == [0, 0, 0], "wait_for: one group")
    check(jobs["b"]["aiokit"]["verify"] == {"checked": 1024, "failed": 0, "mismatches": []},
          f"wait_for: b {jobs['b']['aiokit']['verify']}")
    check(jobs["b"]["job options"].get("wait_for") == "a", "wait_for: in job options")
path = job_file("exitall.fio", f"""[global]
filename={data}
size=4m
ioengine=psync
[f]
rw=randread
runtime=60
time_based
[e]
rw=read
size=1m
exitall
""")
code, doc, err = bench_json(path)
if check(code == 0, f"exitall: exit {code}: {err}"):
    jobs = {j["jobname"]: j for j in doc["jobs"]}
    check(jobs["e"]["read"]["io_bytes"] == 1 << 20, f"exitall: e read {jobs['e']['read']['io_bytes']}")
    check(jobs["f"]["job_runtime"] < 30000, f"exitall: f ran {jobs['f']['job_runtime']} ms of its 60 s")
code, out, err = bench("--name=x", "--wait_for=y")
check(code == 2 and "--wait_for=y (job x): no job of that name before this one" in err, f"wait_for=y: {err}")

# stonewall in [global] (fio's usual way): every job waits for the one before it.
path = job_file("serial.fio", f"""[global]
filename={data}
size=1m
stonewall
[a]
rw=read
[b]
rw=read
[c]
rw=read
""")
code, doc, err = bench_json(path)
if check(code == 0, f"serial: exit {code}: {err}"):
    ak = [j["aiokit"] for j in doc["jobs"]]
    check([j["groupid"] for j in doc["jobs"]] == [0, 1, 2], "serial: one group per job")
    check(all(ak[i + 1]["group_began_s"] >= ak[i]["group_ended_s"] for i in range(2)),
          f"serial: overlapping groups {[(a['group_began_s'], a['group_ended_s']) for a in ak]}")


# Random writes over 1024 blocks at depth 1 (so that the order is the generator's alone): with fio's random
# map every block once; norandommap draws offsets that repeat, so fewer distinct blocks are written (verify
# counts them). The same randseed gives the same blocks; another seed, others.
def distinct_blocks(*extra):
    code, doc, err = bench_json("--filename=" + data, "--size=4m", "--rw=randwrite", "--verify=xxh3",
                                "--iodepth=1", "--ioengine=psync", *extra)
    if not check(code == 0, f"random {extra}: exit {code}: {err}"):
        return None
    return doc["jobs"][0]["aiokit"]["verify"]["checked"]


check(distinct_blocks() == 1024, "random map: every block once")
seeded = [distinct_blocks("--norandommap", "--randseed=" + s) for s in ("7", "7", "8")]
if None not in seeded:
    check(seeded[0] < 1024, f"norandommap: {seeded[0]} distinct blocks, want some repeated")
    check(seeded[0] == seeded[1], f"randseed=7 twice: {seeded[0]} and {seeded[1]} blocks")
    check(seeded[0] != seeded[2], f"randseed=7 and 8: both {seeded[0]} blocks (the seed is not used)")
repeat = [distinct_blocks("--norandommap") for _ in range(2)]
if None not in repeat:
    check(repeat[0] == repeat[1], f"randrepeat (default): {repeat} blocks in two runs")

# How much a job does: loops and io_size multiply or replace its size, number_ios stops it early; on every way
# aiokit drives I/O (the engine, the device layer, coroutines).
for api in ("engine", "device", "coro"):
    for extra, want_bytes in ((["--loops=3"], 6 << 20), (["--io_size=5m"], 5 << 20),
                              (["--io_limit=1m", "--loops=2"], 2 << 20), (["--number_ios=100"], 100 * 4096)):
        code, doc, err = bench_json("--filename=" + data, "--size=2m", "--rw=randread", "--api=" + api, *extra)
        if check(code == 0, f"{api} {extra}: exit {code}: {err}"):
            got = doc["jobs"][0]["read"]["io_bytes"]
            check(got == want_bytes, f"{api} {extra}: read {got} bytes, want {want_bytes}")

# offset_increment: clone c writes its own region of one file (a reader with verify then finds every block
# written); startdelay: the job's group cannot end before the delay.
code, doc, err = bench_json("--filename=" + data, "--size=1m", "--offset_increment=1m", "--numjobs=3",
                            "--rw=write", "--verify=xxh3", "--startdelay=200ms")
if check(code == 0, f"offset_increment: exit {code}: {err}"):
    check([j["write"]["io_bytes"] for j in doc["jobs"]] == [1 << 20] * 3, "offset_increment: 1 MiB each")
    check(doc["jobs"][0]["job options"].get("offset_increment") == str(1 << 20), "offset_increment: job options")
    check(doc["jobs"][0]["aiokit"]["group_ended_s"] >= 0.2,
          f"startdelay=200ms: the group ended at {doc['jobs'][0]['aiokit']['group_ended_s']} s")
    code, doc, err = bench_json("--filename=" + data, "--offset=0", "--size=3m", "--rw=read", "--verify=xxh3")
    if check(code == 0, f"offset_increment: the read back: exit {code}: {err}"):
        v = doc["jobs"][0]["aiokit"]["verify"]
        check(v["checked"] == 768 and v["failed"] == 0, f"offset_increment: read back {v}")

# CPU affinity: the clone and the engine threads it starts run on the CPU asked for (read from /proc while the
# job runs); split gives each clone one CPU of the list; a CPU this process may not use is refused by number.
cpus = sorted(os.sched_getaffinity(0))
last = cpus[-1]
p = subprocess.Popen([aiokit, "bench", "--filename=" + data, "--size=1m", "--ioengine=threads", "--threads_min=4",
                      "--cpus_allowed=" + str(last), "--runtime=2", "--time_based", "--output-format=json"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
pinned = {}
for _ in range(100):  # the threads appear within the first second; a loaded machine gets 10 s
    try:
        for tid in os.listdir(f"/proc/{p.pid}/task"):
            with open(f"/proc/{p.pid}/task/{tid}/status") as f:
                fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
            pinned[int(tid)] = fields.get("Cpus_allowed_list")
    except FileNotFoundError:
        break
    if len(pinned) >= 6:  # main, clone, 4 workers
        break
    subprocess.run(["sleep", "0.1"])
out, err = p.communicate(timeout=120)
if check(p.returncode == 0, f"cpus_allowed: exit {p.returncode}: {err}"):
    doc = json.loads(out)
    check(doc["jobs"][0]["aiokit"]["cpus"] == str(last), f"cpus_allowed: the clone ran on {doc['jobs'][0]['aiokit']['cpus']}")
    others = {tid: c for tid, c in pinned.items() if tid != p.pid}
    check(len(others) >= 5, f"cpus_allowed: saw threads {pinned}")
    check(all(c == str(last) for c in others.values()), f"cpus_allowed={last}: threads on {others}")
code, doc, err = bench_json("--filename=" + data, "--size=1m", "--numjobs=3", "--cpus_allowed_policy=split",
                            "--cpus_allowed=" + ",".join(map(str, cpus)))
if check(code == 0, f"split: exit {code}: {err}"):
    got = [j["aiokit"]["cpus"] for j in doc["jobs"]]
    check(got == [str(cpus[c % len(cpus)]) for c in range(3)], f"split over {cpus}: clones on {got}")
missing = max(cpus) + 1
code, out, err = bench("--filename=" + data, "--size=1m", f"--cpus_allowed={missing}")
check(code == 2 and f"CPU {missing} is not available here" in err, f"cpus_allowed={missing}: exit {code}: {err}")

# bssplit: block sizes by share of requests (recovered from the request and byte counts), and a split of its
# own for writes after the comma.
code, doc, err = bench_json("--filename=" + data, "--size=32m", "--rw=randread", "--bssplit=4k/25:16k/")
if check(code == 0, f"bssplit: exit {code}: {err}"):
    r = doc["jobs"][0]["read"]
    n16 = (r["io_bytes"] - r["total_ios"] * 4096) / (12 * 1024)
    check(abs(n16 / r["total_ios"] - 0.75) < 0.05, f"bssplit=4k/25:16k/: {n16 / r['total_ios']:.3f} of 16k requests")
    check(doc["jobs"][0]["job options"].get("bssplit") == "4k/25:16k/", "bssplit: in job options")
code, doc, err = bench_json("--filename=" + data, "--size=8m", "--rw=randrw", "--bssplit=4k/100,16k/100")
if check(code == 0, f"bssplit reads,writes: exit {code}: {err}"):
    r, w = doc["jobs"][0]["read"], doc["jobs"][0]["write"]
    check(r["io_bytes"] == 4096 * r["total_ios"] and w["io_bytes"] == 16384 * w["total_ios"],
          f"bssplit=4k/100,16k/100: reads {r['io_bytes']}/{r['total_ios']}, writes {w['io_bytes']}/{w['total_ios']}")
code, out, err = bench("--filename=" + data, "--bssplit=4k/60:8k/50")
check(code == 2 and "the shares add up to 110, over 100" in err, f"bssplit over 100: exit {code}: {err}")

# fio's engine names.
for fio_name, ours in (("sync", "sync"), ("psync", "sync"), ("pvsync", "sync"), ("posixaio", "threads")):
    code, doc, err = bench_json("--filename=" + data, "--size=1m", "--ioengine=" + fio_name)
    if check(code == 0, f"ioengine={fio_name}: exit {code}: {err}"):
        got = doc["jobs"][0]["job options"]["ioengine"]
        check(got == ours, f"ioengine={fio_name}: ran on {got}, want {ours}")

# fio's options aiokit lacks: refused by name, with what fio does, and nothing run.
path = job_file("rate.fio", f"[a]\nfilename={data}\nrate_iops=100  # a cap\n")
code, out, err = bench(path)
check(code == 2 and f"{path}:3: rate_iops: fio's option (it caps the job's requests per second)" in err,
      f"rate_iops: exit {code}: {err}")

shutil.rmtree(tmp, ignore_errors=True)
if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("fio job files: all checks passed")
