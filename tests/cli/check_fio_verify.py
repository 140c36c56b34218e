#!/usr/bin/env python3
"""fio's verify layouts in `aiokit bench`, checked against Debian's fio: for every format (md5, crc64, crc32c,
crc32c-intel, sha256, xxhash, meta, fio's pattern with and without a header, verify_interval) a file fio wrote
verifies with aiokit (a read job and verify_only), a file aiokit wrote verifies with `fio --verify_only`, and a
corrupted block is caught by both tools. Then do_verify, verify_fatal, verify_dump, verify_backlog,
experimental_verify, buffer_pattern, and the refusals. Skipped (exit 0, with the reason) without fio."""
import os
import shutil
import subprocess
import sys

import clitest

aiokit = os.path.abspath(sys.argv[1])
if shutil.which("fio") is None:
    print("fio is not installed: the cross-tool checks are skipped (scripts/deps.sh test installs it)")
    sys.exit(0)
t = clitest.Checks(aiokit, "aiokit-fio-verify-")
tmp = t.tmp
check, job_file, bench_json = t.check, t.job_file, t.bench_json
SIZE = 256 << 10
BLOCKS = SIZE // 4096


def verify_of(doc):
    return doc["jobs"][0]["aiokit"]["verify"] if doc else None


def fio(name, lines):
    """Runs fio on a job file of `lines` (one job, fio's synchronous engine, 4 KiB blocks)."""
    path = job_file(name + ".fio", "[v]\nioengine=psync\nbs=4k\n" + "\n".join(lines) + "\n")
    p = subprocess.run(["fio", "--verify_state_save=0", path], capture_output=True, text=True, timeout=240,
                       cwd=tmp)
    return p.returncode, p.stdout + p.stderr


def corrupt(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


# Options as job-file lines, so that fio and aiokit read the same text (quotes included).
formats = {
    "crc32c": ["verify=crc32c"],
    "crc32c-intel": ["verify=crc32c-intel"],
    "crc64": ["verify=crc64"],
    "md5": ["verify=md5"],
    "sha256": ["verify=sha256"],
    "xxhash": ["verify=xxhash"],
    "meta": ["verify=meta"],
    "pattern-header": ["verify_pattern=0xdeadbeef01"],
    "pattern": ["verify=pattern", 'verify_pattern="abc"0x01'],
    "meta-pattern": ["verify=meta", "verify_pattern=70000"],
    "crc32c-pattern": ["verify=crc32c", "verify_pattern=0x11"],
    "md5-interval": ["verify=md5", "verify_interval=1k"],
}

for name, lines in formats.items():
    opts = "\n".join(lines) + "\n"
    fio_file = os.path.join(tmp, name + ".fio.dat")
    ours = os.path.join(tmp, name + ".aiokit.dat")
    # fio writes, aiokit reads and checks (a read job, then verify_only of the write job).
    code, out = fio(name + "-w", [f"filename={fio_file}", f"size={SIZE}", "rw=randwrite", "do_verify=0", *lines])
    check(code == 0, f"{name}: fio's write: exit {code}: {out[-300:]}")
    read_job = job_file(name + ".read", f"[v]\nfilename={fio_file}\nbs=4k\nsize={SIZE}\ndirect=0\n{opts}")
    code, doc, err = bench_json(read_job, "--rw=randread")
    if check(code == 0, f"{name}: aiokit reading fio's file: exit {code}: {err}"):
        v = verify_of(doc)
        check(v["checked"] == BLOCKS and v["failed"] == 0, f"{name}: aiokit reading fio's file: {v}")
    code, doc, err = bench_json(read_job, "--rw=randwrite", "--verify_only")
    if check(code == 0, f"{name}: aiokit verify_only of fio's file: exit {code}: {err}"):
        v = verify_of(doc)
        check(v["checked"] == BLOCKS and v["failed"] == 0, f"{name}: aiokit verify_only: {v}")
        check(doc["jobs"][0]["write"]["io_bytes"] == 0, f"{name}: verify_only wrote")
    # aiokit writes and reads back; fio verifies with verify_only.
    write_job = job_file(name + ".write", f"[v]\nfilename={ours}\nbs=4k\nsize={SIZE}\ndirect=0\n{opts}")
    code, doc, err = bench_json(write_job, "--rw=randwrite")
    if check(code == 0, f"{name}: aiokit's write: exit {code}: {err}"):
        v = verify_of(doc)
        check(v["checked"] == BLOCKS and v["failed"] == 0, f"{name}: aiokit's read-back: {v}")
    fio_check = [f"filename={ours}", f"size={SIZE}", "rw=randwrite", "verify_only", *lines]
    code, out = fio(name + "-check", fio_check)
    check(code == 0 and "io=256KiB" in out and "READ:" in out,
          f"{name}: fio verify_only of aiokit's file: exit {code}: {out[-400:]}")
    # One byte changed in the second block (in its data; in its header for meta, which sums no data): both
    # tools name the block.
    corrupt(ours, 4096 + (20 if name == "meta" else 500))
    code, doc, err = bench_json(write_job, "--rw=randwrite", "--verify_only")
    if check(code == 1 and doc is not None, f"{name}: aiokit on a corrupted block: exit {code}, want 1: {err}"):
        v = verify_of(doc)
        check(v["failed"] == 1 and v["mismatches"][0].startswith("offset 4096"),
              f"{name}: aiokit on a corrupted block: {v}")
    code, out = fio(name + "-check", fio_check)
    # fio 3.33 reports a bad interval that is not a block's last one, but a later good interval clears its
    # error: the exit status is 0 then.
    check((code != 0 or "interval" in name) and ("verify failed" in out or "verify: bad" in out) and "offset 4096" in out,
          f"{name}: fio on aiokit's corrupted block: exit {code}: {out[-400:]}")

# A misplaced block (block 2 copied over block 5): the header's offset names it in every header format.
src = os.path.join(tmp, "md5.aiokit.dat")
with open(src, "r+b") as f:
    f.seek(2 * 4096)
    b = f.read(4096)
    f.seek(5 * 4096)
    f.write(b)
code, doc, err = bench_json("--filename=" + src, "--rw=read", "--bs=4k", "--direct=0", "--verify=md5")
v = verify_of(doc)
check(code == 1 and v is not None and any("offset 20480: expected the block written for offset 20480, found the one "
                                          "written for offset 8192" in m for m in v["mismatches"]),
      f"misplaced block: exit {code}: {v} {err}")

# do_verify=0: written with headers, nothing read back; fio then verifies the file.
path = os.path.join(tmp, "noverify.dat")
code, doc, err = bench_json("--filename=" + path, "--rw=write", "--bs=4k", f"--size={SIZE}", "--direct=0",
                            "--verify=crc32c", "--do_verify=0")
if check(code == 0, f"do_verify=0: exit {code}: {err}"):
    check(verify_of(doc)["checked"] == 0, f"do_verify=0: {verify_of(doc)}")
code, out = fio("noverify", [f"filename={path}", f"size={SIZE}", "rw=write", "verify=crc32c", "verify_only"])
check(code == 0 and "io=256KiB" in out, f"do_verify=0: fio's check: exit {code}: {out[-300:]}")

# verify_fatal: three bad blocks, the check stops at the first (one request at a time, in order).
for off in (8192 + 100, 40960 + 100, 81920 + 100):
    corrupt(path, off)
base = ["--filename=" + path, "--rw=write", "--bs=4k", "--direct=0", "--verify=crc32c", "--verify_only",
        "--iodepth=1"]
code, doc, err = bench_json(*base)
check(code == 1 and verify_of(doc)["failed"] == 3, f"three bad blocks: exit {code}: {verify_of(doc)}")
code, doc, err = bench_json(*base, "--verify_fatal=1")
check(code == 1 and verify_of(doc)["failed"] == 1 and verify_of(doc)["checked"] == 3,
      f"verify_fatal: exit {code}: {verify_of(doc)}")

# verify_dump: the bad block as read, in the working directory, named as fio names it.
dump_dir = os.path.join(tmp, "dump")
os.mkdir(dump_dir)
code, doc, err = bench_json(*base, "--verify_dump=1", cwd=dump_dir)
received = os.path.join(dump_dir, "noverify.dat.8192.received")
if check(code == 1 and os.path.exists(received), f"verify_dump: exit {code}: {os.listdir(dump_dir)}"):
    with open(received, "rb") as f, open(path, "rb") as g:
        g.seek(8192)
        check(f.read() == g.read(4096), "verify_dump: the dump is the block as read")
    check("dumped to noverify.dat.8192.received" in verify_of(doc)["mismatches"][0],
          f"verify_dump: the mismatch names the dump: {verify_of(doc)['mismatches'][0]}")

# verify_backlog: every 16 writes are read back while the job runs; each write is checked once.
path = os.path.join(tmp, "backlog.dat")
code, doc, err = bench_json("--filename=" + path, "--rw=randwrite", "--bs=4k", "--size=1m", "--direct=0",
                            "--verify=xxhash", "--verify_backlog=16", "--iodepth=8")
if check(code == 0, f"verify_backlog: exit {code}: {err}"):
    v = verify_of(doc)
    check(v["checked"] == 256 and v["failed"] == 0 and v["backlog_rounds"] == 16, f"verify_backlog: {v}")
code, out = fio("backlog", [f"filename={path}", "size=1m", "rw=randwrite", "verify=xxhash", "verify_only"])
check(code == 0 and "io=1024KiB" in out, f"verify_backlog: fio's check: exit {code}: {out[-300:]}")

# experimental_verify is accepted and verifies as verify does.
code, doc, err = bench_json("--filename=" + path, "--rw=randwrite", "--bs=4k", "--size=1m", "--direct=0",
                            "--verify=sha256", "--experimental_verify=1")
check(code == 0 and verify_of(doc)["checked"] == 256, f"experimental_verify: exit {code}: {err}")

# buffer_pattern: what a write job without verify writes.
path = os.path.join(tmp, "pattern.dat")
code, doc, err = bench_json("--filename=" + path, "--rw=write", "--bs=4k", "--size=64k", "--direct=0",
                            "--buffer_pattern=0xabcd\"xy\"")
if check(code == 0, f"buffer_pattern: exit {code}: {err}"):
    with open(path, "rb") as f:
        data = f.read()
    check(data == (b"\xab\xcdxy" * (len(data) // 4)) and len(data) == 65536, "buffer_pattern: the file's bytes")

# Refusals, each naming the rule.
refusals = [
    (["--verify=crc16"], "--verify=crc16: fio's verify type, which aiokit bench does not have"),
    (["--verify=pattern", "--rw=write"], "--verify=pattern: needs --verify_pattern"),
    (["--verify=md5", "--verify_only", "--rw=read"], "--verify_only with --rw=read"),
    (["--verify=md5", "--rw=write", "--verify_interval=3000"], "--verify_interval=3000 must divide --bs=4096"),
    (["--verify=sha256", "--rw=write", "--verify_interval=64"], "smaller than the 104-byte verify header"),
    (["--verify_pattern=%o"], "fio's %o"),
    (["--verify=md5", "--rw=write", "--verify_only", "--filename=" + os.path.join(tmp, "missing.dat")],
     "did not exist: nothing to verify"),
]
for args, want in refusals:
    p = subprocess.run([aiokit, "bench", "--size=64k", "--direct=0", *args], capture_output=True, text=True,
                       timeout=60)
    check(p.returncode == 2 and want in p.stderr, f"{args}: exit {p.returncode}: {p.stderr.strip()}")
check(not os.path.exists(os.path.join(tmp, "missing.dat")), "verify_only left the file it refused")

t.finish("fio verify layouts: all checks passed")
