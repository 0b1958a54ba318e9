"""The per-thread CPU sampler finds the thread that is busy."""
from __future__ import annotations

import subprocess
import sys


def test_the_busy_thread_of_the_command_is_reported():
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.5: pass\n"
    out = subprocess.run([sys.executable, "-m", "stream_app.dev.thread_cpu", "--every", "0.2", "--",
                          sys.executable, "-c", busy], capture_output=True, text=True, timeout=120, check=True)
    lines = [ln.split(" ", 4) for ln in out.stdout.splitlines()]
    mine = [ln for ln in lines if "process_time" in ln[4]]
    assert mine and all(ln[1] == ln[2] for ln in mine)  # its one thread, the main one: tid = pid
    assert max(int(ln[3]) for ln in mine) > 0
