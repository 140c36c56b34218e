#!/usr/bin/env python3
"""Evicts random 4 KiB pages of a file from the page cache at a steady rate.

Beside a page-cache benchmark it turns a few of its reads into cache misses
that block, as in a store whose working set is mostly cached: the threads
engine's workers then see a request block now and then.

Usage: scripts/evict-pages.py FILE PAGES_PER_SECOND SECONDS
"""
import os
import random
import sys
import time


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip())
    path, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    if rate <= 0:
        sys.exit("evict-pages.py: PAGES_PER_SECOND must be above 0")
    fd = os.open(path, os.O_RDONLY)
    pages = os.fstat(fd).st_size // 4096
    if pages == 0:
        sys.exit(f"evict-pages.py: {path} is shorter than a page")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        os.posix_fadvise(fd, random.randrange(pages) * 4096, 4096, os.POSIX_FADV_DONTNEED)
        time.sleep(1.0 / rate)
    os.close(fd)


if __name__ == "__main__":
    main()
