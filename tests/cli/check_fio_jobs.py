#!/usr/bin/env python3
"""fio job files as fio users write them, run by `aiokit bench`: comments after values, ${VAR} and fio's
keywords, stonewall and new_group (checked by when each group ran), wait_for, exitall, description, loops, io_size, number_ios,
offset_increment and startdelay, bssplit, CPU affinity (cpus_allowed and its policy), fio's synchronous and POSIX engine names, norandommap, randseed and randrepeat
(checked through the blocks a random writer touched), where requests go (rw's offset modifier, rw_sequencer, zonemode=strided,
random_distribution, blockalign; compared with fio's write_iolog where fio's rule is exact), rate, rate_iops,
rate_process, io_submit_mode, thinktime and rate_min, named files (directory, filename_format, filesize,
unlink, fallocate; the same names and places as fio), fio's logs (write_lat_log, write_bw_log, write_iops_log,
log_avg_msec, log_offset, per_job_logs, write_hist_log with log_hist_msec and log_hist_coarseness, json+ read by fio_jsonplus_clat2csv), I/O priority (prio, prioclass, cmdprio_percentage), and fio's options aiokit lacks refused by name with what
fio does. Each check can fail; nothing is timed."""
import json
import os
import shutil
import subprocess
import sys

import clitest

t = clitest.Checks(sys.argv[1], "aiokit-fio-jobs-")
aiokit, tmp = t.aiokit, t.tmp
check, job_file, bench, bench_json = t.check, t.job_file, t.bench, t.bench_json


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

# Where requests go. aiokit's order is read back from the generation in each block's verify header (depth 1, so
# generation n is the n-th write); fio's, for the same job, from its write_iolog. The offset modifier (holes),
# strided zones: the same blocks in the same order as fio; backwards: every block, last to first.
def zeroed(size):
    with open(data, "wb") as f:
        f.truncate(0)
        f.truncate(size)


def last_writes(blocks):
    """Block -> the generation that wrote it last (verify's header: magic, offset, generation, checksum)."""
    import struct
    with open(data, "rb") as f:
        raw = f.read(blocks * 4096)
    out = {}
    for b in range(blocks):
        _, off, gen, _ = struct.unpack_from("<QQQQ", raw, b * 4096)
        if gen != 0 and off == b * 4096:
            out[b] = gen
    return out


def aiokit_order(text, blocks):
    zeroed(blocks * 4096)
    path = job_file("place.fio", f"[global]\nfilename={data}\nsize={blocks * 4}k\nbs=4k\niodepth=1\n"
                    f"verify=xxh3\n[w]\n{text}\n")
    code, doc, err = bench_json(path)
    if not check(code == 0, f"{text!r}: exit {code}: {err}"):
        return None
    return last_writes(blocks)


def fio_order(args, blocks):
    """fio's writes for the job (block numbers in order), or None without fio."""
    if shutil.which("fio") is None:
        print("SKIP: fio is not installed; the comparison with fio's offsets is not made")
        return None
    zeroed(blocks * 4096)
    log = os.path.join(tmp, "fio.iolog")
    if os.path.exists(log):
        os.remove(log)
    p = subprocess.run(["fio", "--name=w", "--filename=" + data, f"--size={blocks * 4}k", "--bs=4k",
                        "--write_iolog=" + log, *args], capture_output=True, text=True, timeout=120)
    if not check(p.returncode == 0, f"fio {args}: exit {p.returncode}: {p.stderr}"):
        return None
    with open(log) as f:
        return [int(line.split()[3]) // 4096 for line in f if " write " in line]


def replay(order):
    """Block -> the index (from 1) of its last write."""
    return {b: i + 1 for i, b in enumerate(order)}


# A pass ends where the file ends (fio: 6 writes for the holes, 7 for the zones, the last zone being short);
# loops=2 starts over; io_size wraps around until it is done.
for text, args, blocks, n in (("rw=write:8k", ["--rw=write:8k"], 16, 6),
                              ("rw=write:8k\nloops=2", ["--rw=write:8k", "--loops=2"], 16, 12),
                              ("rw=write:8k\nio_size=32k", ["--rw=write:8k", "--io_size=32k"], 16, 8),
                              ("rw=write\nzonemode=strided\nzonesize=8k\nzonerange=16k\nzoneskip=4k",
                               ["--rw=write", "--zonemode=strided", "--zonesize=8k", "--zonerange=16k",
                                "--zoneskip=4k"], 16, 7)):
    ours = aiokit_order(text, blocks)
    theirs = fio_order(args, blocks)
    if ours is not None and theirs is not None:
        check(len(theirs) == n, f"fio {args}: {len(theirs)} writes, want {n}")
        check(ours == replay(theirs), f"{text!r}: aiokit's last writes {ours}, fio's {replay(theirs)}")
ours = aiokit_order("rw=write:-8k", 16)
if ours is not None:
    check(ours == {b: 16 - b for b in range(16)}, f"rw=write:-8k: last writes {ours}, want blocks 15 down to 0")
ours = aiokit_order("rw=randwrite:4\nrw_sequencer=sequential\nnumber_ios=64", 1024)
if ours is not None:
    block_of = {g: b for b, g in ours.items()}
    pairs = [(g, b) for g, b in sorted(block_of.items()) if g % 4 != 1 and g - 1 in block_of]
    check(len(pairs) >= 30 and all(block_of[g - 1] == b - 1 for g, b in pairs),
          f"rw=randwrite:4: runs of 4 blocks in order, got {sorted(block_of.items())[:12]}")

# The distribution on every way aiokit drives I/O: zoned sends every write to the first quarter of the file
# (written blocks are the ones no longer zero); blockalign=16k only to every fourth block.
def nonzero_blocks(blocks):
    with open(data, "rb") as f:
        raw = f.read(blocks * 4096)
    return {b for b in range(blocks) if raw[b * 4096:(b + 1) * 4096].count(0) != 4096}


for api in ("engine", "device", "coro"):
    for opt, allowed in (("--random_distribution=zoned:100/25", set(range(64))),
                         ("--blockalign=16k", set(range(0, 256, 4)))):
        zeroed(1 << 20)
        code, doc, err = bench_json("--filename=" + data, "--size=1m", "--rw=randwrite", "--number_ios=200",
                                    "--api=" + api, opt)
        if check(code == 0, f"{api} {opt}: exit {code}: {err}"):
            got = nonzero_blocks(256)
            check(got and got <= allowed, f"{api} {opt}: wrote blocks {sorted(got - allowed)[:10]} outside")
            check(len(got) >= len(allowed) // 2, f"{api} {opt}: only {len(got)} blocks written")
            key = opt[2:].split("=", 1)[0]
            check(key in doc["jobs"][0]["job options"], f"{api} {opt}: not in job options")

# A zipf writer touches fewer blocks than a uniform one (fio's figure for this job: 722 of 4096).
zeroed(16 << 20)
code, doc, err = bench_json("--filename=" + data, "--size=16m", "--rw=randwrite", "--number_ios=4096",
                            "--random_distribution=zipf:1.2", "--verify=xxh3")
if check(code == 0, f"zipf: exit {code}: {err}"):
    got = doc["jobs"][0]["aiokit"]["verify"]["checked"]
    check(500 < got < 950, f"zipf:1.2: {got} distinct blocks of 4096, want about 720")
code, out, err = bench("--filename=" + data, "--zonemode=zbd")
check(code == 2 and "zoned block devices" in err, f"zonemode=zbd: exit {code}: {err}")

# Rates, on every driver (the engine's, the device layer's, coroutines and Asio): rate_iops and rate held within 5%
# over a 2-second time-based job (a run that falls short is run once more, see below)
# (linear and poisson; a mixed job with a cap per direction; offload), written in a job file; thinktime bounds
# the count from above (a 20 ms think after each request: at most 51 in one second); rate_min fails a job that
# cannot reach it, naming it.
zeroed(64 << 20)
apis = ["engine", "device", "coro"]
if bench("--filename=" + data, "--size=1m", "--number_ios=1", "--api=asio")[0] == 0:
    apis.append("asio")
else:
    print("SKIP: --api=asio is not built here (libasio-dev); its pacing is not tried")
for api in apis:
    path = job_file("rate.fio", f"""[global]
filename={data}
size=64m
runtime=2
time_based
api={api}

[iops]
rw=randread
rate_iops=2000  # linear

[poisson]
rw=randread
rate_iops=1500
rate_process=poisson
io_submit_mode=offload

[bytes]
rw=randrw
bs=4k
rate=4m,2m
""")
    # The rate is a cap: never more than 5% above it, in any run. From below, within 5% too, but a device that
    # stalls beside other tests' fsyncs leaves a job behind (it catches up only as fast as the device allows),
    # so a run short of it is run once more: a pacing that falls short falls short both times.
    for attempt in (1, 2):
        code, doc, err = bench_json(path)
        if not check(code == 0, f"rates {api}: exit {code}: {err}"):
            break
        got = {j["jobname"]: j for j in doc["jobs"]}
        short = []
        for name, d, want in (("iops", "read", 2000), ("poisson", "read", 1500), ("bytes", "read", 1024),
                              ("bytes", "write", 512)):
            iops = got[name][d]["iops"]
            check(iops / want <= 1.05, f"{api} {name}: {d} at {iops:.0f} IOPS, above the {want} asked by over 5%")
            if iops / want < 0.95:
                short.append(f"{api} {name}: {d} at {iops:.0f} IOPS, want {want} within 5%")
        if not short:
            break
        if attempt == 2:
            for line in short:
                check(False, line + " (twice)")
        else:
            print("rates: short once, run again: " + "; ".join(short))
    if code == 0:
        check(got["poisson"]["job options"].get("rate_process") == "poisson", f"{api}: rate_process in job options")
    code, doc, err = bench_json("--filename=" + data, "--size=64m", "--runtime=1", "--time_based",
                                "--thinktime=20ms", "--api=" + api)
    if check(code == 0, f"thinktime {api}: exit {code}: {err}"):
        n = doc["jobs"][0]["read"]["total_ios"]
        check(5 <= n <= 51, f"thinktime=20ms {api}: {n} requests in 1 s, want at most 51")
    code, out, err = bench("--filename=" + data, "--size=64m", "--runtime=3", "--time_based", "--rate_min=100g",
                           "--api=" + api)
    check(code == 1 and "rate_min=107374182400 B/s (reads) not met" in err, f"rate_min {api}: exit {code}: {err}")

# Files: named files in directories (clones round robin over a ':' list), filename_format with the directories
# it names made, filesize ranges, unlink, fallocate; the same names and places fio gives the same job file.
def job_files(tool, text):
    base = os.path.join(tmp, tool)
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(os.path.join(base, "d1"))
    os.makedirs(os.path.join(base, "d2"))
    path = job_file(tool + ".fio", text.replace("BASE", base))
    if tool == "fio":
        p = subprocess.run(["fio", "--output-format=json", path], capture_output=True, text=True, timeout=120)
        code, out, err = p.returncode, p.stdout, p.stderr
    else:
        code, out, err = bench(path, "--output-format=json")
    if not check(code == 0, f"{tool} files: exit {code}: {err}"):
        return None, None
    found = sorted(os.path.relpath(os.path.join(d, f), base) for d, _, fs in os.walk(base) for f in fs)
    sizes = {os.path.relpath(os.path.join(d, f), base): os.path.getsize(os.path.join(d, f))
             for d, _, fs in os.walk(base) for f in fs}
    return found, (json.loads(out[out.index("{"):]), sizes)


files_job = """[global]
rw=write
bs=4k
direct=0
[spread]
directory=BASE/d1:BASE/d2
numjobs=3
size=256k
[formatted]
directory=BASE/d1
filename_format=sub/$jobname-$jobnum.dat
numjobs=2
filesize=64k-128k
fallocate=posix
[gone]
directory=BASE/d2
unlink=1
size=128k
fallocate=truncate
"""
ours, got = job_files("aiokit", files_job)
if ours is not None:
    want = ["d1/spread.0.0", "d1/spread.2.0", "d1/sub/formatted-0.dat", "d1/sub/formatted-1.dat", "d2/spread.1.0"]
    check(ours == want, f"files: aiokit made {ours}, want {want}")
    doc, sizes = got
    for j in doc["jobs"]:
        if j["jobname"] == "formatted":
            name = os.path.relpath(j["job options"]["filename"], os.path.join(tmp, "aiokit"))
            check(65536 <= sizes[name] <= 131072 and j["write"]["io_bytes"] == sizes[name],
                  f"filesize=64k-128k: {name} is {sizes[name]} bytes, {j['write']['io_bytes']} written")
    if shutil.which("fio") is not None:
        theirs, _ = job_files("fio", files_job)
        check(theirs == ours, f"files: fio made {theirs}, aiokit {ours}")
# fallocate on a file the run creates: posix and native allocate the whole file before one 4k write, keep
# allocates without the size, truncate sets the size without allocating, none neither.
for mode, full_size, allocated in (("posix", True, True), ("native", True, True), ("keep", False, True),
                                   ("truncate", True, False), ("none", False, False)):
    made = os.path.join(tmp, "alloc-" + mode)
    code, out, err = bench("--filename=" + made, "--size=4m", "--rw=write", "--number_ios=1", "--direct=0",
                           "--fallocate=" + mode)
    if check(code == 0, f"fallocate={mode}: exit {code}: {err}"):
        st = os.stat(made)
        check((st.st_size == 4 << 20) == full_size, f"fallocate={mode}: size {st.st_size}")
        check((st.st_blocks * 512 >= 4 << 20) == allocated, f"fallocate={mode}: {st.st_blocks * 512} bytes allocated")
        os.remove(made)
for bad, words in (("--filename=a:b", "fio's list of files"),
                   ("--fallocate=maybe", "expected none, native"), ("--filename_format=$clientuid", "$clientuid")):
    code, out, err = bench(bad)
    check(code == 2 and words in err, f"{bad}: exit {code}: {err}")

# nrfiles: the clone's size divided among its files, named and sized as fio makes them; a file of each tool
# verifies with the other (fio's verify_only over the three files aiokit wrote, and the reverse); the blocks go
# round robin (every file half written after half the job) or file after file (file_service_type=sequential);
# every driver but the device layer's.
def nonzero_blocks(path):
    with open(path, "rb") as f:
        data = f.read()
    return [i for i in range(0, len(data) // 4096) if any(data[i * 4096:(i + 1) * 4096])]


for tool in ("fio", "aiokit"):
    d = os.path.join(tmp, "nr-" + tool)
    os.makedirs(d)
    lines = [f"directory={d}", "nrfiles=3", "size=3m", "bs=4k", "rw=write", "verify=crc32c", "ioengine=psync"]
    path = job_file("nr-" + tool + ".fio", "[nr]\n" + "\n".join(lines) + "\n")
    if tool == "fio":
        p = subprocess.run(["fio", "--verify_state_save=0", path], capture_output=True, text=True, timeout=120, cwd=d)
        check(p.returncode == 0, f"nrfiles: fio's write: {p.stderr[-300:]}")
    else:
        code, doc, err = bench_json(path, "--direct=0")
        if check(code == 0, f"nrfiles: aiokit's write: exit {code}: {err}"):
            v = doc["jobs"][0]["aiokit"]["verify"]
            check(doc["jobs"][0]["write"]["io_bytes"] == 3 << 20 and v["checked"] == 768 and v["failed"] == 0,
                  f"nrfiles: aiokit wrote {doc['jobs'][0]['write']['io_bytes']}, verify {v}")
    check(sorted((n, os.path.getsize(os.path.join(d, n))) for n in os.listdir(d)) ==
          [("nr.0.0", 1 << 20), ("nr.0.1", 1 << 20), ("nr.0.2", 1 << 20)], f"nrfiles: {tool} made {os.listdir(d)}")
# Each tool checks the other's files.
code, doc, err = bench_json(job_file("nr-check.fio", f"[nr]\ndirectory={tmp}/nr-fio\nnrfiles=3\nsize=3m\nbs=4k\n"
                                                     "rw=write\nverify=crc32c\n"), "--verify_only", "--direct=0")
check(code == 0 and doc["jobs"][0]["aiokit"]["verify"]["checked"] == 768, f"nrfiles: aiokit checking fio's: {err}")
p = subprocess.run(["fio", "--verify_state_save=0", "--verify_only", os.path.join(tmp, "nr-aiokit.fio")],
                   capture_output=True, text=True, timeout=120, cwd=tmp)
check(p.returncode == 0 and "io=3072KiB" in p.stdout, f"nrfiles: fio checking aiokit's: {p.stdout[-300:]}")
for service, want in (("roundrobin", [list(range(128))] * 2), ("roundrobin:4", [list(range(128))] * 2),
                      ("sequential", [list(range(256)), []])):
    for api in ("engine", "coro"):
        d = os.path.join(tmp, f"nr-{service}-{api}".replace(":", ""))
        os.makedirs(d)
        code, doc, err = bench_json("--name=nr", "--directory=" + d, "--nrfiles=2", "--size=2m", "--rw=write",
                                    "--number_ios=256", "--fallocate=none", "--direct=0", "--api=" + api,
                                    "--file_service_type=" + service)
        if check(code == 0, f"nrfiles {service} {api}: exit {code}: {err}"):
            got = [nonzero_blocks(os.path.join(d, f"nr.0.{f}")) for f in range(2)]
            check(got == want, f"nrfiles {service} {api}: blocks written {[len(g) for g in got]}")
for args, words in ((["--nrfiles=2", "--api=device"], "--api=device (the device layer drives one file"),
                    (["--nrfiles=2", "--bsrange=4k-8k"], "--bsrange or --bssplit"),
                    (["--nrfiles=2", "--filename=" + data], "--filename (fio's names"),
                    (["--nrfiles=2", "--file_service_type=zipf:1.2"], "this --file_service_type")):
    code, out, err = bench("--size=1m", *args)
    check(code == 2 and words in err, f"{args}: exit {code}: {err}")

# Logs in fio's format ("time ms, value, direction, block size[, offset], priority"): a row per request (as many
# as the JSON's requests, slat only where the driver measures it, offsets with log_offset), windows of
# log_avg_msec (a 1000-IOPS job logs about 1000 IOPS per window), and per_job_logs=0 sharing one file.
def read_log(path, columns):
    rows = []
    with open(path) as f:
        for line in f:
            fields = [int(x) for x in line.split(",")]
            check(len(fields) == columns, f"{path}: {line!r} has {len(fields)} columns, want {columns}")
            rows.append(fields)
    return rows


logs = os.path.join(tmp, "logs")
os.makedirs(logs)
for api in ("engine", "device", "coro"):
    prefix = os.path.join(logs, api)
    code, doc, err = bench_json("--filename=" + data, "--size=4m", "--rw=randrw", "--number_ios=300", "--api=" + api,
                                "--write_lat_log=" + prefix, "--write_bw_log=" + prefix, "--write_iops_log=" + prefix,
                                "--log_offset=1")
    if not check(code == 0, f"logs {api}: exit {code}: {err}"):
        continue
    j = doc["jobs"][0]
    n = j["read"]["total_ios"] + j["write"]["total_ios"]
    for kind in ("clat", "lat", "bw", "iops") + (("slat",) if api != "coro" else ()):
        rows = read_log(f"{prefix}_{kind}.1.log", 6)
        check(len(rows) == n, f"{api} {kind} log: {len(rows)} rows, {n} requests")
        check(all(r[2] in (0, 1) and r[3] == 4096 and r[4] % 4096 == 0 and r[4] < 4 << 20 for r in rows),
              f"{api} {kind} log: a row out of place: {rows[:3]}")
        if kind == "iops":
            check(all(r[1] == 1 for r in rows), f"{api}: per-request IOPS rows are 1")
        if kind == "clat" and rows:
            reads = sum(1 for r in rows if r[2] == 0)
            check(reads == j["read"]["total_ios"], f"{api}: {reads} read rows, {j['read']['total_ios']} reads")
    if api == "coro":
        check(os.path.getsize(f"{prefix}_slat.1.log") == 0, "coro: no slat rows (not measured)")
prefix = os.path.join(logs, "win")
code, doc, err = bench_json("--filename=" + data, "--size=4m", "--rw=randread", "--runtime=1", "--time_based",
                            "--rate_iops=1000", "--log_avg_msec=100", "--write_iops_log=" + prefix,
                            "--write_lat_log=" + prefix)
if check(code == 0, f"windowed logs: exit {code}: {err}"):
    rows = read_log(prefix + "_iops.1.log", 5)
    full = [r for r in rows if r[0] % 100 == 0]
    check(len(full) >= 9, f"log_avg_msec=100 over 1 s: {len(full)} whole windows")
    check([r[0] for r in full] == list(range(100, 100 * len(full) + 1, 100)), f"window times {[r[0] for r in rows]}")
    # The windows account for every request (a late window and the one that catches up still add up), and the
    # typical window is at the rate.
    last_end = full[-1][0] if full else 0
    counted = sum(r[1] * 100 / 1000 for r in full) + sum(r[1] * (r[0] - last_end) / 1000 for r in rows[len(full):])
    total = doc["jobs"][0]["read"]["total_ios"]
    check(abs(counted - total) <= 0.02 * total + 3, f"windows count {counted:.0f} requests, the JSON {total}")
    middle = sorted(r[1] for r in full)[len(full) // 2] if full else 0
    check(abs(middle - 1000) <= 100, f"rate_iops=1000: the median window at {middle} IOPS")
    lat = read_log(prefix + "_lat.1.log", 5)
    mean = doc["jobs"][0]["read"]["lat_ns"]["mean"]
    avg = sum(r[1] for r in lat) / max(1, len(lat))
    check(lat and 0.5 * mean <= avg <= 2 * mean, f"windowed lat {avg:.0f} ns against the JSON's mean {mean:.0f}")
prefix = os.path.join(logs, "shared")
code, doc, err = bench_json("--filename=" + data, "--size=4m", "--number_ios=50", "--numjobs=2",
                            "--per_job_logs=0", "--write_iops_log=" + prefix)
if check(code == 0, f"per_job_logs=0: exit {code}: {err}"):
    check(len(read_log(prefix + "_iops.log", 5)) == 100, "per_job_logs=0: both clones' rows in one file")


# write_hist_log: fio's histogram rows ("ms, dir, bs, " and a column per fio bucket), as many columns as fio's
# own file, every completion counted once, and percentiles read from the buckets with fio's bucket values (the
# formula of fio's fiologparser_hist.py) agreeing with the JSON's.
def fio_bucket_value(idx):
    if idx < 128:
        return idx
    error_bits = (idx >> 6) - 1
    return (1 << (error_bits + 6)) + ((idx % 64) + 0.5) * (1 << error_bits)


for api in ("engine", "coro"):
    prefix = os.path.join(logs, "hist-" + api)
    code, doc, err = bench_json("--filename=" + data, "--size=4m", "--rw=randrw", "--runtime=1", "--time_based",
                                "--api=" + api, "--write_hist_log=" + prefix, "--log_hist_msec=100")
    if not check(code == 0, f"hist log {api}: exit {code}: {err}"):
        continue
    rows = read_log(prefix + "_clat_hist.1.log", 3 + 1856)
    j = doc["jobs"][0]
    for d, name in ((0, "read"), (1, "write")):
        mine = [r for r in rows if r[1] == d]
        counts = [sum(col) for col in zip(*(r[3:] for r in mine))]
        check(sum(counts) == j[name]["clat_ns"]["N"], f"hist {api} {name}: {sum(counts)} counted, "
                                                       f"{j[name]['clat_ns']['N']} completions")
        check(len(mine) >= 8 and all(b[0] - a[0] >= 100 for a, b in zip(mine, mine[1:-1])),
              f"hist {api} {name}: rows at {[r[0] for r in mine]}")
        check(all(r[2] == 4096 for r in mine), f"hist {api} {name}: block sizes")
        half, seen, p50 = (sum(counts) + 1) // 2, 0, 0
        for i, n in enumerate(counts):
            seen += n
            if seen >= half:
                p50 = fio_bucket_value(i)
                break
        want = j[name]["clat_ns"]["percentile"]["50.000000"]
        check(abs(p50 - want) <= 0.02 * want + 2, f"hist {api} {name}: p50 {p50} from buckets, {want} in the JSON")
prefix = os.path.join(logs, "hist-coarse")
code, doc, err = bench_json("--filename=" + data, "--size=4m", "--number_ios=500", "--write_hist_log=" + prefix,
                            "--log_hist_msec=50", "--log_hist_coarseness=2")
if check(code == 0, f"log_hist_coarseness: exit {code}: {err}"):
    rows = read_log(prefix + "_clat_hist.1.log", 3 + 1856 // 4)
    check(sum(sum(r[3:]) for r in rows) == 500, "log_hist_coarseness=2: 500 completions in the columns")
if shutil.which("fio") is not None:
    prefix = os.path.join(logs, "fio-hist")
    p = subprocess.run(["fio", "--name=h", "--filename=" + data, "--size=4m", "--rw=randread", "--ioengine=psync",
                        "--runtime=1", "--time_based", "--write_hist_log=" + prefix, "--log_hist_msec=100"],
                       capture_output=True, text=True, timeout=120, cwd=logs)
    if check(p.returncode == 0, f"fio's hist log: {p.stderr[-300:]}"):
        with open(prefix + "_clat_hist.1.log") as f:
            first = f.readline()
        check(len(first.split(",")) == 3 + 1856, f"fio's hist log has {len(first.split(','))} columns")
code, out, err = bench("--filename=" + data, "--size=1m", "--write_hist_log=" + prefix)
check(code == 2 and "--write_hist_log: needs --log_hist_msec" in err, f"hist log without a period: {err}")

# --output-format=json+: clat's per-bucket counts in fio's buckets, which fio's fio_jsonplus_clat2csv reads.
code, out, err = bench("--filename=" + data, "--size=4m", "--rw=randrw", "--number_ios=1000",
                       "--output-format=json+")
if check(code == 0, f"json+: exit {code}: {err}"):
    doc = json.loads(out)
    j = doc["jobs"][0]
    for name in ("read", "write"):
        bins = j[name]["clat_ns"]["bins"]
        check(sum(bins.values()) == j[name]["total_ios"], f"json+ {name}: bins hold {sum(bins.values())}")
        valid = {int(fio_bucket_value(i)) for i in range(1856)}
        check(all(int(k) in valid for k in bins), f"json+ {name}: a key that is not a fio bucket's value")
    plus = os.path.join(logs, "plus.json")
    with open(plus, "w") as f:
        f.write(out)
    tool = shutil.which("fio_jsonplus_clat2csv")
    if tool is not None:
        csv = os.path.join(logs, "plus.csv")
        p = subprocess.run([tool, plus, csv], capture_output=True, text=True, timeout=120, cwd=logs)
        v = subprocess.run([tool, plus, csv, "--validate"], capture_output=True, text=True, timeout=120, cwd=logs)
        check(p.returncode == 0 and v.returncode == 0 and "validated" in v.stdout,
              f"fio_jsonplus_clat2csv: {p.stderr[-300:]} {v.stdout[-200:]} {v.stderr[-300:]}")
    else:
        print("SKIP: fio_jsonplus_clat2csv is not installed (Debian's fio has it)")

# I/O priority: prio and prioclass set the clone's (the kernel's answer in the JSON, and the engine's worker
# threads inherit it, read with ionice while a job runs); cmdprio_percentage gives that share of requests a
# priority of their own.
for args, want in ((["--prio=3"], "be/3"), (["--prioclass=1", "--prio=2"], "rt/2"), (["--prioclass=3"], "idle/0"),
                   ([], "none/0")):
    code, doc, err = bench_json("--filename=" + data, "--size=1m", "--number_ios=100", *args)
    if check(code == 0, f"{args}: exit {code}: {err}"):
        check(doc["jobs"][0]["aiokit"]["ioprio"] == want, f"{args}: ioprio {doc['jobs'][0]['aiokit']['ioprio']}")
if shutil.which("ionice") is not None:
    p = subprocess.Popen([aiokit, "bench", "--filename=" + data, "--size=1m", "--ioengine=threads", "--threads_min=2",
                          "--prio=5", "--runtime=2", "--time_based"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    seen = {}
    for _ in range(100):
        try:
            for tid in os.listdir(f"/proc/{p.pid}/task"):
                if int(tid) != p.pid and int(tid) not in seen:
                    got = subprocess.run(["ionice", "-p", tid], capture_output=True, text=True).stdout.strip()
                    if got:
                        seen[int(tid)] = got
        except FileNotFoundError:
            break
        if len(seen) >= 3:  # the clone and two workers
            break
        subprocess.run(["sleep", "0.1"])
    p.communicate(timeout=120)
    check(len(seen) >= 3 and all(v == "best-effort: prio 5" for v in seen.values()), f"prio=5: threads {seen}")
else:
    print("SKIP: ionice is not installed; the engine threads' priority is not read")
for engine in ("libaio", "io_uring", "posixaio"):
    code, doc, err = bench_json("--filename=" + data, "--size=16m", "--number_ios=2000", "--ioengine=" + engine,
                                "--cmdprio_percentage=30", "--cmdprio_class=2", "--cmdprio=1")
    if check(code == 0, f"cmdprio {engine}: exit {code}: {err}"):
        n = doc["jobs"][0]["aiokit"].get("cmdprio_ios", 0)
        check(450 <= n <= 750, f"cmdprio_percentage=30 on {engine}: {n} of 2000 requests")
code, out, err = bench("--filename=" + data, "--cmdprio_percentage=10", "--api=device")
check(code == 2 and "--cmdprio_percentage" in err, f"cmdprio with --api=device: exit {code}: {err}")

# cmdprio_bssplit: the share of requests with a priority of their own per block size; the logs' last column
# (fio's "command priority") says which requests had one.
prefix = os.path.join(logs, "cmdprio-bs")
code, doc, err = bench_json("--filename=" + data, "--size=4m", "--rw=randread", "--number_ios=400",
                            "--bssplit=4k/50:8k/50", "--cmdprio_bssplit=4k/100:8k/0", "--write_lat_log=" + prefix)
if check(code == 0, f"cmdprio_bssplit: exit {code}: {err}"):
    rows = read_log(prefix + "_clat.1.log", 5)
    check(len(rows) == 400 and all(r[4] == (1 if r[3] == 4096 else 0) for r in rows),
          f"cmdprio_bssplit: priorities by size {[(r[3], r[4]) for r in rows[:6]]}")
    small = sum(1 for r in rows if r[3] == 4096)
    check(doc["jobs"][0]["aiokit"].get("cmdprio_ios") == small and 100 < small < 300,
          f"cmdprio_bssplit: {doc['jobs'][0]['aiokit'].get('cmdprio_ios')} with a priority, {small} of 4k")
code, doc, err = bench_json("--filename=" + data, "--size=4m", "--rw=randread", "--number_ios=200",
                            "--bssplit=4k/50:8k/50", "--cmdprio_bssplit=4k/0/3/0:8k/100/3/0")
check(code == 0 and 50 < doc["jobs"][0]["aiokit"].get("cmdprio_ios", 0) < 150,
      f"cmdprio_bssplit with its own class: exit {code}: {err}")
code, out, err = bench("--filename=" + data, "--size=1m", "--cmdprio_percentage=10", "--cmdprio_bssplit=4k/10")
check(code == 2 and "not with --cmdprio_percentage" in err, f"cmdprio_bssplit and cmdprio_percentage: {err}")

# bs_unaligned: any size in the range, not only multiples of its minimum (buffered I/O only).
prefix = os.path.join(logs, "unaligned")
code, doc, err = bench_json("--filename=" + data, "--size=4m", "--rw=randread", "--number_ios=300", "--direct=0",
                            "--bsrange=1000-5000", "--bs_unaligned", "--write_lat_log=" + prefix)
if check(code == 0, f"bs_unaligned: exit {code}: {err}"):
    sizes = [r[3] for r in read_log(prefix + "_clat.1.log", 5)]
    check(all(1000 <= b <= 5000 for b in sizes) and sum(1 for b in sizes if b % 1000 != 0) > 250,
          f"bs_unaligned: sizes {sorted(set(sizes))[:10]}")
code, out, err = bench("--filename=" + data, "--size=1m", "--bsrange=1000-5000", "--bs_unaligned", "--direct=1")
check(code == 2 and "--bs_unaligned: needs --direct=0" in err, f"bs_unaligned with O_DIRECT: {err}")

# rate_ignore_thinktime: after each think the schedule moves on instead of catching up, so the think's time is
# lost: 200 requests at 1000/s then 50 ms of think make 800/s; without it the schedule catches up to 1000/s.
for ignore, want in ((True, 800), (False, 1000)):
    code, doc, err = bench_json("--filename=" + data, "--size=4m", "--rw=randread", "--runtime=2", "--time_based",
                                "--direct=0", "--rate_iops=1000", "--thinktime=50ms", "--thinktime_blocks=200",
                                *(["--rate_ignore_thinktime"] if ignore else []))
    if check(code == 0, f"rate_ignore_thinktime={ignore}: exit {code}: {err}"):
        iops = doc["jobs"][0]["read"]["iops"]
        check(abs(iops - want) <= 0.1 * want, f"rate_ignore_thinktime={ignore}: {iops:.0f} IOPS, want {want}")

# numa_mem_policy: the clone's policy as the kernel has it, and nodes the machine lacks refused.
if os.path.exists("/sys/devices/system/node/node0"):
    for policy, want in (("bind:0", "bind:0"), ("interleave:all", "interleave:"), ("local", "local"),
                         ("prefer:0", "prefer:0")):
        code, doc, err = bench_json("--filename=" + data, "--size=1m", "--number_ios=10", "--numa_mem_policy=" + policy)
        if check(code == 0, f"numa_mem_policy={policy}: exit {code}: {err}"):
            got = doc["jobs"][0]["aiokit"].get("mempolicy", "")
            check(got.startswith(want), f"numa_mem_policy={policy}: the kernel has {got!r}")
    code, out, err = bench("--filename=" + data, "--size=1m", "--numa_mem_policy=bind:1000")
    check(code == 2 and "this machine has no NUMA node 1000" in err, f"numa_mem_policy on a missing node: {err}")
else:
    print("SKIP: this kernel shows no NUMA nodes (/sys/devices/system/node): numa_mem_policy is not tried")

# fio's engine names.
for fio_name, ours in (("sync", "sync"), ("psync", "sync"), ("pvsync", "sync"), ("posixaio", "threads")):
    code, doc, err = bench_json("--filename=" + data, "--size=1m", "--ioengine=" + fio_name)
    if check(code == 0, f"ioengine={fio_name}: exit {code}: {err}"):
        got = doc["jobs"][0]["job options"]["ioengine"]
        check(got == ours, f"ioengine={fio_name}: ran on {got}, want {ours}")

# fio's options aiokit lacks: refused by name, with what fio does, and nothing run.
path = job_file("cycle.fio", f"[a]\nfilename={data}\nrwmixcycle=500  # alternate\n")
code, out, err = bench(path)
check(code == 2 and f"{path}:3: rwmixcycle: fio's option (it alternated reads and writes on this period in old "
      "versions; fio 3.33 refuses it too)" in err,
      f"rwmixcycle: exit {code}: {err}")

# steadystate: a paced job is steady within 50% at once, so it ends after ss_ramp + ss_dur, long before its
# runtime, with fio's JSON object; a job that ends first reports it not attained; group_reporting judges the
# clones together and stops them all.
path = job_file("steady.fio", f"""[global]
filename={data}
size=4m
direct=0
[paced]
rw=randread
rate_iops=500
runtime=60
time_based
ss=iops:50%   ; fio's example style
ss_dur=2
ss_ramp=1
""")
code, doc, err = bench_json(path)
if check(code == 0, f"steadystate: exit {code}: {err}"):
    j = doc["jobs"][0]
    ss = j.get("steadystate", {})
    check(ss.get("attained") == 1 and ss.get("ss") == "iops:50.000000%" and ss.get("duration") == 2,
          f"steadystate: {ss}")
    check(len(ss.get("data", {}).get("iops", [])) == 2, f"steadystate: window {ss.get('data')}")
    check(3000 <= j["job_runtime"] < 60000, f"steadystate: ran {j['job_runtime']} ms (ss_ramp 1 s + ss_dur 2 s)")
code, doc, err = bench_json("--filename=" + data, "--size=4m", "--direct=0", "--number_ios=200",
                            "--ss=iops_slope:0.1%", "--ss_dur=5")
if check(code == 0, f"steadystate not reached: exit {code}: {err}"):
    ss = doc["jobs"][0].get("steadystate", {})
    check(ss.get("attained") == 0 and doc["jobs"][0]["read"]["total_ios"] == 200, f"steadystate not reached: {ss}")
code, doc, err = bench_json("--filename=" + data, "--size=4m", "--direct=0", "--rate_iops=300", "--runtime=60",
                            "--time_based", "--ss=bw:50%", "--ss_dur=2", "--numjobs=2", "--group_reporting")
if check(code == 0, f"steadystate with group_reporting: exit {code}: {err}"):
    j = doc["jobs"][0]
    check(len(doc["jobs"]) == 1 and j["steadystate"]["attained"] == 1 and j["job_runtime"] < 60000,
          f"steadystate with group_reporting: {j.get('steadystate')} {j['job_runtime']}")
    check(abs(j["steadystate"]["data"]["iops_mean"] - 600) <= 120, f"the group's IOPS: {j['steadystate']['data']}")
for args, want in ((["--ss=iops:1%"], "--steadystate: needs --ss_dur"), (["--ss=lat:1%", "--ss_dur=2"], "expected iops"),
                   (["--ss=iops:1%", "--ss_dur=1500ms"], "whole seconds")):
    code, out, err = bench("--filename=" + data, "--size=1m", *args)
    check(code == 2 and want in err, f"{args}: exit {code}: {err}")

t.finish("fio job files: all checks passed")
