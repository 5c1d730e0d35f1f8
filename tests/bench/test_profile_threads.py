"""`make profile`'s CPU-by-thread table: per-thread user/system time from /proc, per request."""

from __future__ import annotations

import os
import threading
import time

from bench.procstat import thread_times
from bench.profile import thread_table


def test_thread_times_reads_this_process_threads() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    t = threading.Thread(target=spin, name="spinner")
    t.start()
    try:
        before = thread_times(os.getpid())
        time.sleep(0.3)
        after = thread_times(os.getpid())
    finally:
        stop.set()
        t.join()
    assert os.getpid() in after and t.native_id in after
    name, user, system = after[t.native_id]
    assert user + system > before[t.native_id][1] + before[t.native_id][2]   # it ran meanwhile
    assert user >= 0 and system >= 0


def test_thread_table_per_request_with_main_labelled_and_small_threads_summed() -> None:
    before = {10: ("python", 1.0, 0.5), 11: ("python", 0.2, 0.1), 12: ("grpc", 0.0, 0.0)}
    after = {10: ("python", 1.8, 0.7), 11: ("python", 0.3, 0.2), 12: ("grpc", 0.001, 0.0),
             13: ("tokio", 0.05, 0.05)}   # 13 started inside the window
    text = thread_table(10, before, after, requests=10_000)
    lines = text.splitlines()
    # main: 0.8 s user + 0.2 s sys over 10,000 requests = 80 + 20 us
    assert "100.0  =   80.0 user +   20.0 sys   python 10 (main: event loop)" in lines[1]
    assert "python 11" in lines[2] and "20.0" in lines[2]
    assert "tokio 13" in lines[3]
    assert "1 other threads" in lines[4]            # grpc's 0.1 % is below the 1 % cut
    assert lines[-1].strip().startswith("130.1") and lines[-1].endswith("the whole process")


def test_thread_table_without_requests_says_so() -> None:
    assert "no requests" in thread_table(1, {}, {1: ("python", 1.0, 1.0)}, requests=0)
