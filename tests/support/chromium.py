"""Drive a headless Chromium from a test, with the standard library only.

The browser is started with ``--remote-debugging-pipe``: it speaks the Chrome DevTools Protocol
(CDP) as NUL-terminated JSON messages, reading commands on its file descriptor 3 and writing
replies and events on its descriptor 4. That needs no websocket client, no free port and no
selenium/playwright; a reader thread dispatches replies, so the API is plain blocking calls::

    from tests.support.chromium import HeadlessPage

    with HeadlessPage() as page:                      # starts chromium, opens a blank tab
        page.open("http://127.0.0.1:8080/?user=196")  # returns after the load event
        page.wait_for("document.querySelectorAll('#rec-list li.rec').length > 0", timeout=10)
        before = page.eval("document.querySelector('#events-applied').textContent")
        ...                                            # send an event
        page.wait_for(f"document.querySelector('#events-applied').textContent !== {before!r}")
        page.screenshot("artifacts/page.png")

:meth:`HeadlessPage.eval` returns the JSON value of the expression (promises are awaited) and
raises :class:`JavaScriptError` when it throws; :attr:`HeadlessPage.console` collects the page's
console messages and uncaught exceptions, and every timeout error quotes their tail.

Installing the browser on Debian 12 / Ubuntu (what ``.ci/run`` needs)::

    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

:func:`find_chromium` looks at ``$CHROMIUM_BIN``, then ``/usr/bin/chromium``, then ``chromium``,
``chromium-browser``, ``google-chrome`` and ``google-chrome-stable`` on ``PATH``.

>>> isinstance(chromium_available(), bool)
True
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

__all__ = ["BrowserError", "HeadlessPage", "JavaScriptError", "chromium_available",
           "find_chromium"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserError(RuntimeError):
    """The browser failed to start, died, or answered a command with an error."""


class JavaScriptError(RuntimeError):
    """An expression given to :meth:`HeadlessPage.eval` threw."""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or ``None``."""
    env = os.environ.get("CHROMIUM_BIN")
    if env:
        return env if os.access(env, os.X_OK) else shutil.which(env)
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_available() -> bool:
    return find_chromium() is not None


_TRAMPOLINE = (
    "import os, sys\n"
    "r, w = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.dup2(r, 3); os.dup2(w, 4); os.close(r); os.close(w)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def _high_fd(fd: int) -> int:
    """Move ``fd`` to a number >= 10 so that putting the pipes on fds 3 and 4 cannot clash."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class _Pipe:
    """CDP over the browser's pipe: send commands, wait for replies, collect events."""

    def __init__(self, argv: list[str], log_path: Path):
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        child_in, child_out = _high_fd(to_browser_r), _high_fd(from_browser_w)
        # A tiny Python trampoline puts our pipe ends on fds 3 and 4, then becomes the browser
        # (a POSIX shell cannot be used: dash only redirects fds 0-9).
        self._log = open(log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(child_in), str(child_out), *argv],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                pass_fds=(child_in, child_out), start_new_session=True)
        except BaseException:
            os.close(to_browser_w)
            os.close(from_browser_r)
            self._log.close()
            raise
        finally:
            os.close(child_in)
            os.close(child_out)
        self.log_path = log_path
        self._w = to_browser_w
        self._r = from_browser_r
        self._next_id = 0
        self._lock = threading.Lock()           # writes and ids
        self._cond = threading.Condition()      # replies, events, death
        self._replies: dict[int, dict] = {}
        self.events: deque[dict] = deque(maxlen=5000)
        self.event_seq = 0
        self.dead: str | None = None
        self.listeners: list = []
        self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        buf = b""
        try:
            while True:
                chunk = os.read(self._r, 1 << 16)
                if not chunk:
                    break
                buf += chunk
                if b"\0" not in chunk:  # a large reply (a screenshot) arrives in many chunks
                    continue
                *messages, buf = buf.split(b"\0")
                for raw in messages:
                    if raw:
                        self._dispatch(json.loads(raw))
        except OSError:
            pass
        finally:
            with self._cond:
                self.dead = self.dead or "browser closed the DevTools pipe"
                self._cond.notify_all()

    def _dispatch(self, msg: dict) -> None:
        if "id" in msg:
            with self._cond:
                self._replies[msg["id"]] = msg
                self._cond.notify_all()
            return
        for listener in list(self.listeners):
            try:
                listener(msg)
            except Exception:  # a listener must not stop the reader
                pass
        with self._cond:
            self.events.append(msg)
            self.event_seq += 1
            self._cond.notify_all()

    def send(self, method: str, params: dict | None = None, session_id: str | None = None,
             timeout: float = 30.0) -> dict:
        with self._lock:
            self._next_id += 1
            mid = self._next_id
            msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
            if session_id:
                msg["sessionId"] = session_id
            data = json.dumps(msg).encode() + b"\0"
            try:
                while data:
                    data = data[os.write(self._w, data):]
            except OSError as exc:
                raise BrowserError(f"{method}: cannot write to the browser: {exc}{self.tail()}")
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies:
                if self.dead:
                    raise BrowserError(f"{method}: {self.dead}{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{method}: no reply from the browser in {timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, since: int, session_id: str | None, timeout: float) -> dict:
        """The first event ``method`` (of ``session_id``) numbered after ``since``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                first = self.event_seq - len(self.events)  # seq number of events[0]
                for i, ev in enumerate(self.events):
                    if first + i >= since and ev.get("method") == method and (
                            session_id is None or ev.get("sessionId") == session_id):
                        return ev
                if self.dead:
                    raise BrowserError(f"waiting for {method}: {self.dead}{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {method} event within {timeout} s")
                self._cond.wait(left)

    def tail(self, n: int = 2000) -> str:
        try:
            text = self.log_path.read_bytes()[-n:].decode(errors="replace").strip()
        except OSError:
            return ""
        return f"\n--- browser output (tail) ---\n{text}" if text else ""

    def close(self, timeout: float = 10.0) -> None:
        try:
            if self.proc.poll() is None and not self.dead:
                try:
                    self.send("Browser.close", timeout=5.0)
                except (BrowserError, TimeoutError):
                    pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, 9)  # its own session: the browser's helpers too
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
            try:  # helpers (zygote, renderers) still shutting down: they are in its session
                os.killpg(self.proc.pid, 15)
            except (ProcessLookupError, PermissionError):
                pass
        finally:
            for fd in (self._w, self._r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._log.close()


class HeadlessPage:
    """One tab of a headless Chromium of its own (fresh temporary profile).

    ``binary``: the executable (default :func:`find_chromium`); ``width``/``height``: viewport
    in CSS pixels; ``timeout``: default for :meth:`open` and :meth:`wait_for`; ``extra_args``:
    more command-line switches. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, binary: str | None = None, *, width: int = 1280, height: int = 900,
                 timeout: float = 30.0, extra_args: tuple[str, ...] | list[str] = ()):
        binary = binary or find_chromium()
        if not binary:
            raise BrowserError("no Chromium found: apt-get install -y chromium, or set CHROMIUM_BIN")
        self.timeout = timeout
        self.console: list[str] = []
        self._profile = Path(tempfile.mkdtemp(prefix="stream-reco-chromium-"))
        argv = [
            binary,
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",                 # root in containers; only local test pages are opened
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--disable-component-update",
            "--disable-sync",
            "--metrics-recording-only",
            "--mute-audio",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--user-data-dir={self._profile}",
            *extra_args,
            "about:blank",
        ]
        self._cdp = _Pipe(argv, self._profile.parent / (self._profile.name + ".log"))
        self._cdp.listeners.append(self._on_event)
        try:
            self._cdp.send("Browser.getVersion", timeout=timeout)
            target = self._cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            self._session = self._cdp.send(
                "Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime"):
                self._send(f"{domain}.enable")
            self._send("Emulation.setDeviceMetricsOverride",
                       {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.close()
            raise

    # -- plumbing ----------------------------------------------------------------------------
    def _send(self, method: str, params: dict | None = None, timeout: float | None = None) -> dict:
        return self._cdp.send(method, params, self._session, timeout or self.timeout)

    def _on_event(self, msg: dict) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self._note(f"console.{p.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self._note(f"uncaught: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Inspector.targetCrashed":
            self._note("renderer crashed")

    def _note(self, line: str) -> None:
        self.console.append(line)
        del self.console[:-500]

    def _console_tail(self, n: int = 15) -> str:
        return ("\n--- page console (tail) ---\n" + "\n".join(self.console[-n:])) if self.console else ""

    # -- API ---------------------------------------------------------------------------------
    def open(self, url: str, timeout: float | None = None) -> None:
        """Navigate to ``url`` and return after its load event."""
        timeout = timeout or self.timeout
        since = self._cdp.event_seq
        nav = self._send("Page.navigate", {"url": url}, timeout)
        if nav.get("errorText"):
            raise BrowserError(f"cannot open {url}: {nav['errorText']}")
        try:
            self._cdp.wait_event("Page.loadEventFired", since, self._session, timeout)
        except TimeoutError:
            raise TimeoutError(f"{url} did not finish loading in {timeout} s"
                               f"{self._console_tail()}") from None

    def eval(self, js: str, timeout: float | None = None) -> Any:
        """Value of the JavaScript expression ``js`` (JSON-serialisable; promises awaited)."""
        res = self._send("Runtime.evaluate", {"expression": js, "returnByValue": True,
                                              "awaitPromise": True, "userGesture": True}, timeout)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            desc = d.get("exception", {}).get("description") or d.get("text")
            raise JavaScriptError(f"{js!r} threw: {desc}")
        return res.get("result", {}).get("value")

    def wait_for(self, js_predicate: str, timeout: float | None = None,
                 interval: float = 0.05) -> Any:
        """Evaluate ``js_predicate`` until it is truthy and return its value; raise
        :class:`TimeoutError` (quoting the last value and the page console) after ``timeout``."""
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = self.eval(js_predicate)
            except JavaScriptError as exc:  # e.g. an element not there yet
                last = exc
            else:
                if last:
                    return last
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{js_predicate!r} still not true after {timeout} s "
                                   f"(last: {last!r}){self._console_tail()}")
            time.sleep(interval)

    def screenshot(self, path: str | os.PathLike, full_page: bool = False) -> Path:
        """Write a PNG of the viewport (or the whole page) to ``path``; returns the path."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self._send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                              "scale": 1}
        data = base64.b64decode(self._send("Page.captureScreenshot", params)["data"])
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        return out

    def close(self) -> None:
        """Close the browser and remove its temporary profile (safe to call twice)."""
        cdp = getattr(self, "_cdp", None)
        if cdp is not None:
            self._cdp = None
            cdp.close()
            try:
                cdp.log_path.unlink()
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "HeadlessPage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
