#!/usr/bin/env python3
"""The engine room of compare-fio.sh: runs each row's aiokit and fio jobs alternately and tabulates them."""
import argparse
import json
import os
import statistics
import subprocess
import sys

# name: (target, aiokit options, fio options, what the row claims)
RR4K = ["--rw=randread", "--bs=4k", "--direct=1"]
ROWS = {
    "ram-randread-qd32": ("ram", [*RR4K, "--iodepth=32", "--engine=linux-aio"],
                          [*RR4K, "--iodepth=32", "--ioengine=libaio"],
                          "linux-aio >= 1.05x fio libaio"),
    "ram-randread-qd32-nospin": ("ram", [*RR4K, "--iodepth=32", "--engine=linux-aio", "--spin_us=0"],
                                 [*RR4K, "--iodepth=32", "--ioengine=libaio"],
                                 "linux-aio never spinning (sleeps in io_getevents like fio)"),
    "ram-randread-qd1": ("ram", [*RR4K, "--iodepth=1", "--engine=linux-aio"],
                         [*RR4K, "--iodepth=1", "--ioengine=libaio"],
                         "linux-aio latency at depth 1"),
    "disk-randread-qd32": ("disk", [*RR4K, "--iodepth=32", "--engine=linux-aio"],
                           [*RR4K, "--iodepth=32", "--ioengine=libaio"],
                           "device limit; compare CPU per I/O"),
    "ram-uring-qd1": ("ram", [*RR4K, "--iodepth=1", "--engine=io_uring"],
                      [*RR4K, "--iodepth=1", "--ioengine=io_uring"],
                      "io_uring >= 1.0x fio io_uring; p50 within 1 us"),
    "ram-uring-qd32": ("ram", [*RR4K, "--iodepth=32", "--engine=io_uring"],
                       [*RR4K, "--iodepth=32", "--ioengine=io_uring"],
                       "io_uring >= 1.0x fio io_uring"),
    "ram-uring-qd32-fixed": ("ram", [*RR4K, "--iodepth=32", "--engine=io_uring", "--fixedbufs",
                                     "--registerfiles"],
                             [*RR4K, "--iodepth=32", "--ioengine=io_uring", "--fixedbufs",
                              "--registerfiles"],
                             "io_uring, fixed buffers and files, >= 1.0x fio"),
    "ram-uring-qd32-sqpoll": ("ram", [*RR4K, "--iodepth=32", "--engine=io_uring", "--sqthread_poll"],
                              [*RR4K, "--iodepth=32", "--ioengine=io_uring", "--sqthread_poll"],
                              "io_uring with a kernel submission poller, >= 1.0x fio"),
    "pc-threads-vs-posixaio": ("pc", ["--rw=randread", "--bs=4k", "--direct=0", "--iodepth=32",
                                      "--engine=threads", "--invalidate=0"],
                               ["--rw=randread", "--bs=4k", "--direct=0", "--iodepth=32",
                                "--ioengine=posixaio", "--invalidate=0"],
                               "threads >= 2x fio posixaio (glibc AIO), page-cached file"),
    "pc-threads-vs-psync2": ("pc", ["--rw=randread", "--bs=4k", "--direct=0", "--iodepth=32",
                                    "--engine=threads", "--invalidate=0"],
                             ["--rw=randread", "--bs=4k", "--direct=0", "--ioengine=psync",
                              "--numjobs=2", "--group_reporting", "--invalidate=0"],
                             "threads >= 0.8x fio psync x2 (two threads doing only pread)"),
}
# The fixed matrix (the default): aiokit's default engine here (io_uring) against fio's io_uring engine, on the
# three targets, the shapes storage engines issue. Each row: a direction, what fio calls it, and the claim.
URING = ["--engine=io_uring"]
FIO_URING = ["--ioengine=io_uring"]
ROWS.update({
    "matrix-ram-randread-4k-qd1": ("ram", [*RR4K, "--iodepth=1", *URING], [*RR4K, "--iodepth=1", *FIO_URING],
                                   "CPU-bound latency: >= 1.0x fio"),
    "matrix-ram-randread-4k-qd32": ("ram", [*RR4K, "--iodepth=32", *URING], [*RR4K, "--iodepth=32", *FIO_URING],
                                    "CPU-bound throughput: >= 1.0x fio"),
    "matrix-disk-randread-4k-qd32": ("disk", [*RR4K, "--iodepth=32", *URING],
                                     [*RR4K, "--iodepth=32", *FIO_URING], "the device limit; CPU per I/O"),
    "matrix-disk-read-128k-qd8": ("disk", ["--rw=read", "--bs=128k", "--direct=1", "--iodepth=8", *URING],
                                  ["--rw=read", "--bs=128k", "--direct=1", "--iodepth=8", *FIO_URING],
                                  "sequential bandwidth limit"),
    "matrix-disk-read-1m-qd4": ("disk", ["--rw=read", "--bs=1m", "--direct=1", "--iodepth=4", *URING],
                                ["--rw=read", "--bs=1m", "--direct=1", "--iodepth=4", *FIO_URING],
                                "large sequential reads: bandwidth"),
    "matrix-disk-write-1m-qd4": ("disk", ["--rw=write", "--bs=1m", "--direct=1", "--iodepth=4", *URING],
                                 ["--rw=write", "--bs=1m", "--direct=1", "--iodepth=4", *FIO_URING],
                                 "large sequential writes: bandwidth"),
    "matrix-disk-randwrite-4k-qd32": ("disk", ["--rw=randwrite", "--bs=4k", "--direct=1", "--iodepth=32", *URING],
                                      ["--rw=randwrite", "--bs=4k", "--direct=1", "--iodepth=32", *FIO_URING],
                                      "the device's write limit"),
    "matrix-pc-randread-4k-qd32": ("pc", ["--rw=randread", "--bs=4k", "--direct=0", "--iodepth=32",
                                          "--invalidate=0", *URING],
                                   ["--rw=randread", "--bs=4k", "--direct=0", "--iodepth=32", "--invalidate=0",
                                    *FIO_URING], "the buffered path: page-cache copies"),
})
# The engine's own cost, without buying speed with CPU: aiokit never spinning, with its default submission
# batch (a quarter of the depth) and with fio's (one request per submission call).
ROWS["ram-uring-qd32-nospin"] = ("ram", [*RR4K, "--iodepth=32", *URING, "--spin_us=0"],
                                 [*RR4K, "--iodepth=32", *FIO_URING],
                                 "never spinning: >= 1.0x fio at no more CPU per I/O")
ROWS["ram-uring-qd32-nospin-batch1"] = ("ram", [*RR4K, "--iodepth=32", *URING, "--spin_us=0",
                                                "--iodepth_batch_submit=1"],
                                        [*RR4K, "--iodepth=32", *FIO_URING],
                                        "never spinning, fio's submission batch: >= 1.0x at no more CPU")
# Two jobs, each a thread with its own engine (aiokit) or ring (fio), on the CPU-bound ram loop: spinning that
# takes the CPU from the other job and from the loop device's worker shows here.
ROWS["ram-uring-qd32-numjobs2"] = (
    "ram", [*RR4K, "--iodepth=32", *URING, "--numjobs=2", "--group_reporting"],
    [*RR4K, "--iodepth=32", *FIO_URING, "--numjobs=2", "--group_reporting"], "two jobs: >= 1.0x fio --numjobs=2")
# What a log store does: a 4 KiB O_DIRECT write, then an fsync, one at a time (the fsync runs on a kernel worker
# thread, which a spinning reaper would take the CPU from).
ROWS["disk-uring-write-fsync-qd1"] = (
    "disk", ["--rw=randwrite", "--bs=4k", "--direct=1", "--iodepth=1", "--fsync=1", *URING],
    ["--rw=randwrite", "--bs=4k", "--direct=1", "--iodepth=1", "--fsync=1", *FIO_URING],
    "write + fsync at depth 1: >= 1.0x fio")
# The threads engine on the device: O_DIRECT reads that block, handed to workers, against fio's psync with as many
# threads as the depth (each doing only pread).
ROWS["disk-threads-vs-psync8"] = (
    "disk", [*RR4K, "--iodepth=8", "--engine=threads"],
    [*RR4K, "--ioengine=psync", "--numjobs=8", "--group_reporting"],
    "threads at depth 8 >= 1.0x fio psync x8")
# The threads engine's O_DIRECT goes to the kernel's AIO where it can (threads_kernel_aio): against fio's libaio,
# and its workers alone (--threads_kernel_aio=0) against psync x8 as before.
ROWS["disk-threads-vs-libaio8"] = (
    "disk", [*RR4K, "--iodepth=8", "--engine=threads"], [*RR4K, "--iodepth=8", "--ioengine=libaio"],
    "threads (O_DIRECT on the kernel's AIO) at depth 8 >= 0.98x fio libaio")
ROWS["disk-threads-workers-vs-psync8"] = (
    "disk", [*RR4K, "--iodepth=8", "--engine=threads", "--threads_kernel_aio=0"],
    [*RR4K, "--ioengine=psync", "--numjobs=8", "--group_reporting"],
    "threads on workers only at depth 8 >= 1.0x fio psync x8")
MATRIX_ROWS = [r for r in ROWS if r.startswith("matrix-")]
# The libaio drop-in (issue 6): fio's libaio engine through compat/libaio.so.1 on an engine (side A) against
# fio with the system's libaio (side B). Side A is ("fio", AIOKIT_ENGINE, options).
LIBAIO = ["--ioengine=libaio"]
ROWS.update({
    "dropin-ram-linux-aio-qd32": ("ram", ("fio", "linux-aio", [*RR4K, "--iodepth=32", *LIBAIO])),
    "dropin-ram-io_uring-qd32": ("ram", ("fio", "io_uring", [*RR4K, "--iodepth=32", *LIBAIO])),
    "dropin-pc-threads-qd32": ("pc", ("fio", "threads", ["--rw=randread", "--bs=4k", "--direct=0", "--iodepth=32",
                                                         "--invalidate=0", *LIBAIO])),
    "dropin-pc-io_uring-qd32": ("pc", ("fio", "io_uring", ["--rw=randread", "--bs=4k", "--direct=0",
                                                           "--iodepth=32", "--invalidate=0", *LIBAIO])),
})
for _name, _claim in (("dropin-ram-linux-aio-qd32", "drop-in on linux-aio costs <= 3% (ratio >= 0.97)"),
                      ("dropin-ram-io_uring-qd32", "drop-in on io_uring >= 1.0x the system libaio"),
                      ("dropin-pc-threads-qd32", "drop-in on threads >= 2x the system libaio (buffered)"),
                      ("dropin-pc-io_uring-qd32", "drop-in on io_uring >= 2x the system libaio (buffered)")):
    _target, (_, _engine, _opts) = ROWS[_name]
    ROWS[_name] = (_target, ("fio", _engine, _opts), _opts, _claim)
# The ceiling of the io_uring row: fio's own io_uring engine (no drop-in, no libaio) against its libaio engine on
# the same device. The drop-in cannot beat the kernel's io_uring path it submits through.
ROWS["dropin-ram-ceiling-fio-io_uring"] = (
    "ram", ("fio", "io_uring", [*RR4K, "--iodepth=32", "--ioengine=io_uring"]), [*RR4K, "--iodepth=32", *LIBAIO],
    "the ceiling: fio's io_uring engine vs its libaio engine")
DROPIN_ROWS = [r for r in ROWS if r.startswith("dropin-")]
# The device layer (aiokit/device.h, issue 16) against the raw engine, both aiokit, same binary and options:
# side A runs --api=device, side B ("aiokit", options) the engine directly. The ratio is the layer's cost.
for _engine in ("io_uring", "linux-aio", "threads"):
    for _depth, _goal in ((32, "0.97"), (1, "0.95")):
        _opts = [*RR4K, f"--iodepth={_depth}", f"--engine={_engine}"]
        ROWS[f"device-ram-{_engine}-qd{_depth}"] = (
            "ram", [*_opts, "--api=device"], ("aiokit", _opts),
            f"device layer >= {_goal}x the raw engine")
DEVICE_ROWS = [r for r in ROWS if r.startswith("device-")]
# The coroutine path (aiokit/coro.h, issue 17): --iodepth coroutines on one loop, each with one request in flight,
# against the engine driven directly; the same binary and options otherwise.
for _engine in ("io_uring", "linux-aio"):
    _opts = [*RR4K, "--iodepth=32", f"--engine={_engine}"]
    ROWS[f"coro-ram-{_engine}-qd32"] = ("ram", [*_opts, "--api=coro"], ("aiokit", _opts),
                                        "32 coroutines >= 0.95x the raw engine")
    ROWS[f"asio-ram-{_engine}-qd32"] = ("ram", [*_opts, "--api=asio"], ("aiokit", _opts),
                                        "32 Asio handler chains >= 0.95x the raw engine")
CORO_ROWS = [r for r in ROWS if r.startswith(("coro-", "asio-"))]
# Rows behind earlier claims (issues 2-4), run with --rows=claims.
CLAIM_ROWS = ["ram-randread-qd32", "ram-randread-qd32-nospin", "ram-randread-qd1", "disk-randread-qd32",
              "ram-uring-qd1", "ram-uring-qd32", "ram-uring-qd32-fixed", "ram-uring-qd32-sqpoll",
              "pc-threads-vs-posixaio", "pc-threads-vs-psync2", "ram-uring-qd32-numjobs2",
              "ram-uring-qd32-nospin", "ram-uring-qd32-nospin-batch1", "disk-uring-write-fsync-qd1",
              "disk-threads-vs-psync8", "disk-threads-vs-libaio8", "disk-threads-workers-vs-psync8"]
DEFAULT_ROWS = MATRIX_ROWS


def parse(doc):
    job = doc["jobs"][0]
    d = job["read"] if job["read"]["total_ios"] else job["write"]
    secs = d["runtime"] / 1000.0
    ios = d["total_ios"]
    cpu = (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * secs
    if doc.get("fio version", "").startswith("fio-"):
        # fio's group (--group_reporting) CPU is the mean of its jobs' (each thread's rusage over its runtime);
        # aiokit bench's is the whole process's.
        cpu *= int(job.get("job options", {}).get("numjobs", "1"))
    return {
        "iops": d["iops"],
        "mibs": d["bw"] / 1024.0,
        "p50": d["clat_ns"]["percentile"]["50.000000"],
        "lat50": d["lat_ns"]["percentile"]["50.000000"],
        "p99": d["clat_ns"]["percentile"]["99.000000"],
        "cpu_us": cpu * 1e6 / ios if ios else 0.0,
    }


def run(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if p.returncode != 0:
        sys.exit(f"compare_fio: {' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    # fio may print warnings before its JSON.
    out = p.stdout[p.stdout.index("{"):]
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aiokit", required=True)
    ap.add_argument("--ram", required=True)
    ap.add_argument("--disk-file", required=True)
    ap.add_argument("--compat-lib", default="build/release/compat/lib")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runtime", type=int, default=5)
    ap.add_argument("--rows", default=",".join(DEFAULT_ROWS))
    ap.add_argument("--list", action="store_true")
    # A/B of two aiokit builds: the "fio" side of each aiokit row runs this aiokit instead, with the same
    # aiokit options (scripts/ab-bench.sh builds the baseline).
    ap.add_argument("--baseline", default="")
    a = ap.parse_args()
    if a.list:
        for name, (target, _, _, claim) in ROWS.items():
            print(f"{name:28} {target:5} {claim}")
        return
    rows = []
    for r in a.rows.split(","):
        rows += {"matrix": MATRIX_ROWS, "claims": CLAIM_ROWS, "dropin": DROPIN_ROWS, "device": DEVICE_ROWS, "coro": CORO_ROWS,
                 "all": list(ROWS)}.get(r, [r] if r else [])
    for r in rows:
        if r not in ROWS:
            sys.exit(f"compare_fio: unknown row {r!r}; --list shows them")
    if any(ROWS[r][0] in ("disk", "pc") for r in rows):
        # Lay the file out once (fio would otherwise do it inside the first timed job).
        subprocess.run(["fio", "--name=layout", f"--filename={a.disk_file}", "--size=1g", "--rw=write",
                        "--bs=1m", "--direct=1", "--ioengine=psync", "--output=/dev/null"], check=True)
    results = {}
    for name in rows:
        target, ak_opts, fio_opts, claim = ROWS[name]
        path = a.ram if target == "ram" else a.disk_file
        def warm():
            # The page cache is the target: read the file so every block is cached, before every run (this
            # VM's kernel reclaims cold page-cache pages by itself (DAMON), and a read that misses turns a
            # page-cache benchmark into a disk one, for one tool and not the other).
            if target != "pc":
                return ""
            subprocess.run(["cat", a.disk_file], stdout=subprocess.DEVNULL, check=True)
            fc = subprocess.run(["fincore", "--bytes", "--noheadings", "--output=RES,SIZE", a.disk_file],
                                capture_output=True, text=True)
            if fc.returncode != 0 or not fc.stdout.split():
                return ""
            res, total = (int(x) for x in fc.stdout.split()[:2])
            return f" (cached before the runs: {100.0 * res / total:.1f}%"
        size = ["--size=1g"]
        common = [f"--runtime={a.runtime}", "--time_based", "--output-format=json"]
        ak_env = None
        if isinstance(ak_opts, tuple):
            # fio through the drop-in: the same fio, the same options, our libaio.so.1 first.
            _, engine, opts = ak_opts
            ak_env = dict(os.environ, AIOKIT_ENGINE=engine, LD_LIBRARY_PATH=os.path.abspath(a.compat_lib))
            ak_cmd = ["fio", "--name=fio", f"--filename={path}", *size, *opts, *common, "--lat_percentiles=1"]
        else:
            ak_cmd = [a.aiokit, "bench", f"--filename={path}", *size, *ak_opts, *common]
        if isinstance(fio_opts, tuple):
            # The other side is aiokit too (the device rows): the engine API with the same options.
            fio_cmd = [a.aiokit, "bench", f"--filename={path}", *size, *fio_opts[1], *common]
        else:
            fio_cmd = ["fio", "--name=fio", f"--filename={path}", *size, *fio_opts, *common,
                       "--lat_percentiles=1"]
        if a.baseline:
            if isinstance(ak_opts, tuple):
                sys.exit(f"compare_fio: --baseline compares aiokit rows; {name} runs fio through the drop-in")
            fio_cmd = [a.baseline, "bench", f"--filename={path}", *size, *ak_opts, *common]
        pingpong = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(a.aiokit)))),
                                "bench", "cpu_pingpong")

        def round_trip():
            # The cross-CPU round trip of a cache line (bench/cpu_pingpong.cc): on this VM it moves between ~80 ns
            # and ~400 ns with where the host runs the vCPUs, and an engine that hands requests to a worker pays
            # it per I/O where two pread threads do not. Printed so that such a round can be told apart.
            if not os.access(pingpong, os.X_OK) or (os.cpu_count() or 1) < 2:
                return ""
            r = subprocess.run([pingpong], capture_output=True, text=True)
            return f"; CPU0-CPU1 round trip {float(r.stdout):.0f} ns" if r.returncode == 0 else ""

        rounds = []
        for i in range(a.rounds):
            rtt = round_trip()
            # Who goes first alternates (A B, B A, ...): a machine that speeds up or slows down within a round
            # then favours neither tool.
            if i % 2 == 0:
                cached = warm()
                ak = parse(run(ak_cmd, ak_env))
                cached_fio = warm()
                fo = parse(run(fio_cmd))
            else:
                cached_fio = warm()
                fo = parse(run(fio_cmd))
                cached = warm()
                ak = parse(run(ak_cmd, ak_env))
            rounds.append((ak, fo))
            note = f"{cached}, {cached_fio.split(': ')[-1]})" if cached else ""
            print(f"# {name} round {i + 1}: aiokit {ak['iops']:.0f} IOPS, {'baseline' if a.baseline else 'fio'} "
                  f"{fo['iops']:.0f} IOPS, "
                  f"ratio {ak['iops'] / fo['iops']:.3f}{note}{rtt}", file=sys.stderr, flush=True)
        results[name] = rounds

    def med(rounds, who, key):
        return statistics.median(r[who][key] for r in rounds)

    other = "baseline" if a.baseline else "fio"
    if all(isinstance(ROWS[n][2], tuple) and ROWS[n][2][0] == "aiokit" for n in results):
        other = "engine API"
    if a.baseline:
        print(f"(A/B: 'aiokit' is {a.aiokit}, 'baseline' is {a.baseline}, same options)")
    print(f"| row | claim | aiokit IOPS (median) | {other} IOPS (median) | ratio (median of rounds) | "
          f"MiB/s aiokit / {other} | clat p50 aiokit / {other} (us) | lat p50 aiokit / {other} (us) | "
          f"CPU per I/O aiokit / {other} (us) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, rounds in results.items():
        ratio = statistics.median(r[0]["iops"] / r[1]["iops"] for r in rounds)
        print(f"| {name} | {ROWS[name][3]} | {med(rounds, 0, 'iops'):,.0f} | {med(rounds, 1, 'iops'):,.0f} | "
              f"{ratio:.3f} | {med(rounds, 0, 'mibs'):,.0f} / {med(rounds, 1, 'mibs'):,.0f} | "
              f"{med(rounds, 0, 'p50') / 1000:.1f} / {med(rounds, 1, 'p50') / 1000:.1f} | "
              f"{med(rounds, 0, 'lat50') / 1000:.1f} / {med(rounds, 1, 'lat50') / 1000:.1f} | "
              f"{med(rounds, 0, 'cpu_us'):.2f} / {med(rounds, 1, 'cpu_us'):.2f} |")
    fio_version = subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"\n{a.rounds} rounds of {a.runtime} s per tool and row, alternating aiokit and fio, each first in "
          f"every other round ({fio_version}); "
          f"kernel {os.uname().release}, {os.cpu_count()} CPUs. Command: scripts/compare-fio.sh "
          f"--rounds {a.rounds} --runtime {a.runtime} --rows {a.rows}")


if __name__ == "__main__":
    main()
