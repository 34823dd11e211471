"""Run a command; write its wall time and peak resident memory as JSON.

Usage: ``python measure.py REPORT.json TIMEOUT_S -- COMMAND ...``

Why a separate, tiny launcher: Linux keeps a process's peak RSS (``ru_maxrss``)
across ``execve``, so a command started directly from the benchmark (a big Python
process holding the data) would inherit the benchmark's own peak. Started from
this launcher, which imports nothing heavy, the command starts from the
launcher's few MB (``launcher_rss_mb``: the launcher's own ``VmHWM``; its
``ru_maxrss`` shows the inherited peak, which its children do not get: a forked
child starts a fresh count). ``peak_rss_mb`` comes from
``os.wait4`` on the command and so covers it and the children it waited for; so
does ``cpu_s`` (user + system CPU seconds, which a busy shared machine disturbs
less than the wall time). ``ru_maxrss`` is the peak of the largest single process, not of
processes alive together (``scmaskgan impute`` fits in a child process while it waits),
so the whole tree's RSS is also sampled every 0.05 s (``peak_tree_rss_mb``) and
``peak_rss_mb`` is the larger of the two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time


def _own_peak_mb() -> float:
    """Peak RSS of this process's own memory map (``VmHWM``), not the inherited ``ru_maxrss``."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants now (0 once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # ended between the listing and the reading
            pass
    return total / 2**20


def _sample_tree(pid: int, peak: list[float], done: threading.Event) -> None:
    while not done.wait(0.05):
        peak[0] = max(peak[0], _tree_rss_mb(pid))


def main(argv: list[str]) -> int:
    """Run ``argv[3:]`` (after ``--``), write the report to ``argv[0]``; return its exit code."""
    report, timeout_s, sep, *command = argv
    if sep != "--" or not command:
        raise SystemExit("usage: measure.py REPORT.json TIMEOUT_S -- COMMAND ...")
    launcher_rss = _own_peak_mb()
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    tree_peak, done = [0.0], threading.Event()
    sampler = threading.Thread(target=_sample_tree, args=(proc.pid, tree_peak, done), daemon=True)
    sampler.start()
    timeout = float(timeout_s)
    timer = threading.Timer(timeout, proc.kill) if timeout > 0 else None
    if timer:
        timer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    elapsed = time.perf_counter() - start
    if timer:
        timer.cancel()
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    with open(report, "w") as out:
        json.dump({"exit_code": code, "process_s": elapsed, "cpu_s": usage.ru_utime + usage.ru_stime,
                   "peak_rss_mb": max(usage.ru_maxrss / 1024.0, tree_peak[0]),
                   "largest_process_rss_mb": usage.ru_maxrss / 1024.0, "peak_tree_rss_mb": tree_peak[0],
                   "launcher_rss_mb": launcher_rss, "timed_out": bool(timer and elapsed >= timeout and code != 0)},
                  out)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
