#!/usr/bin/env python3
"""Runs `aiokit bench` short jobs and checks that its JSON reads like fio's and its numbers add up."""
import json
import subprocess
import sys

aiokit = sys.argv[1]


def run(*args):
    p = subprocess.run([aiokit, "bench", *args], capture_output=True, text=True, timeout=240)
    return p.returncode, p.stdout, p.stderr


failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


for rw, direct in (("randread", "1"), ("randwrite", "1"), ("read", "0"), ("write", "0")):
    code, out, err = run("--size=8m", "--bs=4k", "--iodepth=16", "--rw=" + rw, "--direct=" + direct,
                         "--output-format=json")
    check(code == 0, f"{rw} direct={direct}: exit {code}: {err.strip()}")
    if code != 0:
        continue
    doc = json.loads(out)
    job = doc["jobs"][0]
    d = job["read" if "read" in rw else "write"]
    other = job["write" if "read" in rw else "read"]
    # Without --runtime the job does exactly --size bytes, as fio does.
    check(d["io_bytes"] == 8 << 20, f"{rw}: io_bytes {d['io_bytes']} != 8MiB")
    check(d["total_ios"] == 2048, f"{rw}: total_ios {d['total_ios']} != 2048")
    check(other["total_ios"] == 0, f"{rw}: the other direction has I/O")
    check(d["iops"] > 0 and d["bw"] > 0, f"{rw}: iops/bw not positive")
    # bw is KiB/s and consistent with iops * bs.
    check(abs(d["bw"] * 1024 - d["iops"] * 4096) <= 0.02 * d["iops"] * 4096 + 1024, f"{rw}: bw != iops*bs")
    pct = d["clat_ns"]["percentile"]
    check("50.000000" in pct and "99.000000" in pct, f"{rw}: missing fio percentile keys")
    c = d["clat_ns"]
    check(c["min"] <= pct["50.000000"] <= pct["99.000000"] <= c["max"], f"{rw}: percentiles out of order")
    check(c["N"] == d["total_ios"], f"{rw}: clat N != total_ios")
    check("usr_cpu" in job and "sys_cpu" in job, f"{rw}: no cpu")
    check(job["aiokit"]["engine"] in ("linux-aio", "io_uring", "threads", "sync"), f"{rw}: engine name")

# io_uring with fio's io_uring options, when this kernel allows io_uring.
for extra in ([], ["--fixedbufs", "--registerfiles"], ["--sqthread_poll"]):
    code, out, err = run("--size=8m", "--engine=io_uring", "--iodepth=8", "--output-format=json", *extra)
    if code == 2 and "io_uring" in err and "not" in err:
        print("io_uring refused here, skipped:", err.strip())
        break
    check(code == 0, f"io_uring {extra}: exit {code}: {err.strip()}")
    if code == 0:
        job = json.loads(out)["jobs"][0]
        check(job["read"]["total_ios"] == 2048, f"io_uring {extra}: total_ios {job['read']['total_ios']}")
        check(job["aiokit"]["engine"] == "io_uring", "engine is io_uring")
        check(job["read"]["lat_ns"]["N"] == 2048 and job["read"]["slat_ns"]["N"] == 2048,
              f"io_uring {extra}: slat/lat recorded")

# --api=device: the same jobs through the device layer, on every engine this machine allows, add up the
# same; options it does not measure are refused by name.
for engine in ("linux-aio", "io_uring", "threads", "sync"):
    for rw in ("randread", "write", "randrw"):
        code, out, err = run("--size=8m", "--bs=4k", "--iodepth=8", f"--engine={engine}", "--rw=" + rw,
                             "--api=device", "--output-format=json")
        if code == 2 and ("refused" in err or "not" in err) and engine == "io_uring":
            print("io_uring refused here, skipped:", err.strip())
            break
        check(code == 0, f"--api=device {engine} {rw}: exit {code}: {err.strip()}")
        if code != 0:
            continue
        job = json.loads(out)["jobs"][0]
        total = job["read"]["total_ios"] + job["write"]["total_ios"]
        check(total == 2048, f"--api=device {engine} {rw}: total_ios {total} != 2048")
        check(job["aiokit"]["engine"] == engine, f"--api=device {engine}: engine {job['aiokit']['engine']}")
code, out, err = run("--size=8m", "--api=device", "--verify=xxh3", "--rw=write")
check(code == 2 and "--verify" in err and "--api=device" in err, f"--api=device --verify: {code} {err}")
code, out, err = run("--size=8m", "--api=devices")
check(code == 2 and "engine, device, coro or asio" in err, f"--api=devices: {code} {err}")
# --api=coro and --api=asio: --iodepth coroutines on a loop (asio: when built with Asio).
for api in ("coro", "asio"):
    for engine in ("linux-aio", "io_uring", "threads", "sync"):
        code, out, err = run("--size=8m", "--bs=4k", "--iodepth=8", f"--engine={engine}", "--rw=randrw",
                             f"--api={api}", "--output-format=json")
        if code == 2 and api == "asio" and "without standalone Asio" in err:
            print("built without Asio, skipped:", err.strip())
            break
        if code == 2 and engine == "io_uring":
            print("io_uring refused here, skipped:", err.strip())
            continue
        check(code == 0, f"--api={api} {engine}: exit {code}: {err.strip()}")
        if code == 0:
            job = json.loads(out)["jobs"][0]
            total = job["read"]["total_ios"] + job["write"]["total_ios"]
            check(total == 2048, f"--api={api} {engine}: total_ios {total} != 2048")
            # The loop's workers submit inside their wait: no slat, unlike the engine driver (which is how a
            # run that fell back to the engine driver shows).
            check(job["read"]["slat_ns"]["N"] == 0, f"--api={api} {engine}: slat recorded, so not its driver")

# A time-based job runs for its runtime.
code, out, err = run("--size=4m", "--runtime=1", "--time_based", "--output-format=json")
check(code == 0, f"time_based: exit {code}: {err.strip()}")
if code == 0:
    job = json.loads(out)["jobs"][0]
    check(900 <= job["read"]["runtime"] <= 3000, f"time_based: runtime {job['read']['runtime']} ms")

# The normal output names what fio names.
code, out, err = run("--size=4m")
check(code == 0 and "IOPS=" in out and "clat:" in out and "p99=" in out, f"normal output: {out}{err}")

sys.exit(1 if failures else 0)
