"""``python -m stream_app.dev.thread_cpu [--every S] -- COMMAND ...``: CPU of every thread on the
machine while COMMAND runs (Linux ``/proc``), to see which thread of which process a run waits on.

One line per thread and interval in which it ran: seconds since the start, pid, tid, per cent of one
core over the interval, the process's command line (cut). A worker's threads all carry the
interpreter's name; tell them apart by tid with ``py-spy dump --pid PID`` (the model thread is
``model_0``, the co-engagement fold ``cooc-fold_0``, the event loop ``MainThread``).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def snapshot() -> dict[tuple[int, int], tuple[int, str]]:
    """(pid, tid) -> (user + system ticks, the process's command line, cut)."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            raw = open(f"/proc/{pid}/cmdline", "rb").read()[:80]
            cmd = " ".join(raw.replace(b"\0", b" ").decode(errors="replace").split())  # one line
            for tid in os.listdir(f"/proc/{pid}/task"):
                stat = open(f"/proc/{pid}/task/{tid}/stat").read()
                fields = stat[stat.rindex(")") + 2:].split()
                out[(int(pid), int(tid))] = (int(fields[11]) + int(fields[12]), cmd)
        except OSError:  # gone meanwhile
            continue
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--every", type=float, default=0.5, help="seconds per interval (default: %(default)s)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = p.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        p.error("a command to run")
    proc = subprocess.Popen(cmd, stdout=sys.stderr)
    t0, before = time.monotonic(), snapshot()
    while proc.poll() is None:
        time.sleep(args.every)
        now, t = snapshot(), time.monotonic() - t0
        for key, (ticks, line) in now.items():
            ran = ticks - before.get(key, (ticks, ""))[0]
            if ran > 0:
                print(f"{t:.1f} {key[0]} {key[1]} {100 * ran / TICK / args.every:.0f} {line}", flush=True)
        before = now
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
