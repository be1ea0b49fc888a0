"""Headless Chromium for the tests: find (or install) it, check a static page, take a screenshot.

No Python dependency: Chromium is started as a subprocess.  ``check_page`` talks to it over
``--remote-debugging-pipe``, the DevTools protocol on file descriptors 3 (commands in) and 4
(replies and events out), one JSON message per NUL-terminated chunk: the same channel
Puppeteer's ``pipe: true`` uses.  Through it the browser reports every console message with
its level, every uncaught exception (promise rejections included) and every failed resource
load, from the first byte of the page on.  That is what Chromium's ``--enable-logging=stderr``
output cannot give: it prints ``console.log`` and ``console.error`` alike and leaves out failed
file loads.

``find_or_install_chromium()`` looks for the binary (``$SALCURATE_CHROMIUM`` first, then the
usual names) and, when running as root with ``apt-get`` and none is found, installs Debian's
``chromium`` package, once per process.  ``SALCURATE_NO_BROWSER_INSTALL=1`` turns the install
off.  When it returns ``None``, ``chromium_unavailable_reason()`` says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Flags for every run (each also gets a fresh ``--user-data-dir``).  On a closed network the
#: background-networking flags matter: without them Chromium keeps trying to reach Google.
BASE_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)
BINARY_NAMES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL_TIMEOUT_S = 300.0

_NOT_TRIED = object()
_found: Any = _NOT_TRIED
_reason = ""


# --------------------------------------------------------------------------------------
# finding / installing
# --------------------------------------------------------------------------------------
def _working(binary: str) -> str | None:
    """``None`` when ``binary --version`` works, else what went wrong."""
    try:
        proc = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{binary} --version failed: {exc}"
    if proc.returncode != 0:
        return f"{binary} --version exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"
    return None


def _which() -> str | None:
    override = os.environ.get("SALCURATE_CHROMIUM")
    if override:
        return shutil.which(override) or (override if os.access(override, os.X_OK) else None)
    for name in BINARY_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _apt_install() -> str | None:
    """Install Debian's chromium; ``None`` on success, else why it failed."""
    deadline = time.monotonic() + INSTALL_TIMEOUT_S
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]

    def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(cmd, INSTALL_TIMEOUT_S)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=left, env=env)

    # Serialise concurrent test processes (pytest-xdist); apt's own lock would just fail one.
    lock_path = Path(tempfile.gettempdir()) / "salcurate-chromium-install.lock"
    try:
        import fcntl

        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _which():  # another process installed it while this one waited
                return None
            proc = run(install)
            if proc.returncode != 0:  # stale or missing package lists: update, then try again
                update = run(["apt-get", "update"])
                if update.returncode != 0:
                    return f"`apt-get update` exited {update.returncode}: {update.stderr.strip()[-300:]}"
                proc = run(install)
            if proc.returncode != 0:
                return f"`{' '.join(install)}` exited {proc.returncode}: {proc.stderr.strip()[-300:]}"
    except subprocess.TimeoutExpired:
        return f"installing chromium with apt-get took more than {INSTALL_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return f"installing chromium with apt-get failed: {exc}"
    return None


def find_or_install_chromium() -> str | None:
    """Path of a working Chromium, installing Debian's package when missing and allowed.

    Tried once per process; on ``None``, :func:`chromium_unavailable_reason` says why.
    """
    global _found, _reason
    if _found is not _NOT_TRIED:
        return _found
    _found, _reason = None, ""
    path = _which()
    if path is None:
        if os.environ.get("SALCURATE_CHROMIUM"):
            _reason = f"$SALCURATE_CHROMIUM={os.environ['SALCURATE_CHROMIUM']!r} is not an executable"
            return None
        if os.environ.get("SALCURATE_NO_BROWSER_INSTALL", "") not in ("", "0"):
            _reason = "chromium is not installed and SALCURATE_NO_BROWSER_INSTALL is set"
            return None
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            _reason = "chromium is not installed and installing it needs root (apt-get install chromium)"
            return None
        if shutil.which("apt-get") is None:
            _reason = "chromium is not installed and there is no apt-get to install it"
            return None
        problem = _apt_install()
        path = _which()
        if path is None:
            _reason = problem or "apt-get installed chromium but no chromium binary is on PATH"
            return None
    problem = _working(path)
    if problem:
        _reason = problem
        return None
    _found = path
    return path


def chromium_unavailable_reason() -> str:
    """Why :func:`find_or_install_chromium` returned ``None`` ("" when it did not)."""
    return _reason


# --------------------------------------------------------------------------------------
# the DevTools protocol over a pipe
# --------------------------------------------------------------------------------------
class BrowserError(RuntimeError):
    """Chromium failed to start, crashed, or did not answer in time."""


class _Cdp:
    """A minimal DevTools-protocol client over ``--remote-debugging-pipe``."""

    def __init__(self, chromium: str, extra_flags: list[str], profile: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        # The wrapper shell moves our pipes to fds 3 (commands) and 4 (replies), as Chromium wants.
        argv = ["/bin/sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2',
                chromium, *BASE_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                *extra_flags, "about:blank"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     start_new_session=True)
        self._out = self.proc.stdin.fileno()
        self._in = self.proc.stdout.fileno()
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def stderr_tail(self, n: int = 2000) -> str:
        self._log.flush()
        with contextlib.suppress(OSError):
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        return ""

    def _read_message(self, deadline: float) -> dict[str, Any] | None:
        """The next message, or ``None`` once ``deadline`` passed."""
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._in], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium closed the DevTools pipe (exit {self.proc.poll()}); "
                                   f"its log ends:\n{self.stderr_tail()}")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = memoryview(json.dumps(msg).encode() + b"\0")
        try:
            while data:
                data = data[os.write(self._out, data):]
        except BrokenPipeError as exc:
            raise BrowserError(f"chromium is gone (exit {self.proc.poll()}); "
                               f"its log ends:\n{self.stderr_tail()}") from exc
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply is None:
                raise BrowserError(f"no answer to {method} within {timeout:.0f} s; chromium's log ends:\n"
                                   f"{self.stderr_tail()}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, accept: Callable[[dict[str, Any]], bool], *, timeout: float) -> dict[str, Any] | None:
        """Collect events until one that ``accept`` takes arrives (returned) or ``timeout`` passes (``None``)."""
        for event in self.events:
            if accept(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self._read_message(deadline)
            if event is None:
                return None
            if "method" in event:
                self.events.append(event)
                if accept(event):
                    return event

    def drain(self, seconds: float) -> None:
        """Collect the events that arrive in the next ``seconds``."""
        deadline = time.monotonic() + seconds
        while (event := self._read_message(deadline)) is not None:
            if "method" in event:
                self.events.append(event)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrowserError, OSError, ValueError):
                self.call("Browser.close", timeout=5)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # Chromium's helper processes share its process group (start_new_session above).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout, self._log):
            with contextlib.suppress(OSError):
                f.close()


@contextlib.contextmanager
def _browser(chromium: str, extra_flags: list[str]) -> Iterator[_Cdp]:
    with tempfile.TemporaryDirectory(prefix="salcurate-chromium-") as tmp:
        cdp = _Cdp(chromium, extra_flags, Path(tmp) / "profile", Path(tmp) / "chromium.log")
        try:
            yield cdp
        finally:
            cdp.close()


# --------------------------------------------------------------------------------------
# checking a page
# --------------------------------------------------------------------------------------
#: Runs in the page after its load event: loads lazy images too (they would wait for a scroll
#: otherwise), waits for every image to load or fail, and describes each.
_IMAGES_JS = """
(async () => {
  const images = Array.from(document.images);
  for (const img of images) { if (img.loading === "lazy") img.loading = "eager"; }
  const settle = img => (img.complete ? Promise.resolve() : new Promise(resolve => {
    img.addEventListener("load", resolve, {once: true});
    img.addEventListener("error", resolve, {once: true});
  }));
  const timeout = new Promise(resolve => setTimeout(resolve, %d));
  await Promise.race([Promise.all(images.map(settle)), timeout]);
  return images.map(img => ({
    src: img.getAttribute("src") || img.currentSrc || "",
    complete: img.complete,
    naturalWidth: img.naturalWidth,
    naturalHeight: img.naturalHeight,
  }));
})()
"""

#: URL schemes a static, offline report may load; anything else is a network request.
_LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome-error:")


def _remote_text(obj: dict[str, Any]) -> str:
    if "value" in obj:
        return obj["value"] if isinstance(obj["value"], str) else json.dumps(obj["value"])
    return str(obj.get("unserializableValue") or obj.get("description") or obj.get("type", ""))


def _where(url: str | None, line: int | None) -> str:
    if not url:
        return ""
    return f" ({url}:{line + 1})" if line is not None and line >= 0 else f" ({url})"


def check_page(index_html: Path, *, chromium: str, timeout: float = 60.0,
               window_size: tuple[int, int] = (1280, 1024), settle_s: float = 0.5) -> dict[str, Any]:
    """Open ``index_html`` in headless Chromium and report what a reader's browser would show.

    Returns ``images_total`` (``<img>`` elements), ``images_broken`` (the ``src`` of those that did
    not load: not complete or zero natural width), ``console_errors`` (``console.error`` and
    ``console.assert`` messages, uncaught exceptions and unhandled rejections, and
    browser-logged errors such as failed resource loads), ``console_warnings`` (for
    information), ``external_requests`` (URLs that are not ``file:``/``data:``/``blob:``: an
    offline report makes none) and ``title``.
    """
    index_html = Path(index_html).resolve()
    if not index_html.is_file():
        raise FileNotFoundError(index_html)
    url = index_html.as_uri()
    flags = [f"--window-size={window_size[0]},{window_size[1]}"]
    with _browser(chromium, flags) as cdp:
        target = cdp.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
        session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            cdp.call(method, session=session)
        cdp.call("Page.setLifecycleEventsEnabled", {"enabled": True}, session=session)
        cdp.events.clear()  # whatever about:blank said is not the page's
        nav = cdp.call("Page.navigate", {"url": url}, session=session, timeout=timeout)
        if nav.get("errorText"):
            raise BrowserError(f"chromium could not open {url}: {nav['errorText']}")
        # The load event of this navigation (its loaderId), not a late one of about:blank.
        loader = nav.get("loaderId")
        loaded = cdp.wait_for(lambda e: (e["method"] == "Page.lifecycleEvent" and e.get("sessionId") == session
                                         and e["params"].get("name") == "load"
                                         and loader in (None, e["params"].get("loaderId"))), timeout=timeout)
        if loaded is None:
            raise BrowserError(f"{url} did not finish loading within {timeout:.0f} s")
        budget_ms = int(max(1.0, timeout / 2) * 1000)
        evaluated = cdp.call("Runtime.evaluate", {"expression": _IMAGES_JS % budget_ms, "awaitPromise": True,
                                                  "returnByValue": True}, session=session, timeout=timeout)
        if "exceptionDetails" in evaluated:
            raise BrowserError(f"the image check failed in the page: {evaluated['exceptionDetails']}")
        images = evaluated["result"]["value"]
        title = cdp.call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                         session=session)["result"].get("value", "")
        cdp.drain(settle_s)  # late errors (timers, late loads)
        events = [e for e in cdp.events if e.get("sessionId") == session]

    errors: list[str] = []
    warnings: list[str] = []
    external: list[str] = []
    for event in events:
        method, p = event["method"], event["params"]
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(a) for a in p.get("args", []))
            frame = (p.get("stackTrace") or {}).get("callFrames") or [{}]
            where = _where(frame[0].get("url"), frame[0].get("lineNumber"))
            if p["type"] in ("error", "assert"):
                errors.append(f"console.{p['type']}: {text}{where}")
            elif p["type"] == "warning":
                warnings.append(f"console.warn: {text}{where}")
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            desc = (d.get("exception") or {}).get("description") or ""
            text = d.get("text", "Uncaught")
            first = desc.splitlines()[0] if desc else ""
            errors.append(f"{text} {first}".strip() + _where(d.get("url"), d.get("lineNumber")))
        elif method == "Log.entryAdded":
            e = p["entry"]
            line = f"{e.get('source', 'log')}: {e.get('text', '')}{_where(e.get('url'), e.get('lineNumber'))}"
            if e.get("level") == "error":
                errors.append(line)
            elif e.get("level") == "warning":
                warnings.append(line)
        elif method == "Network.requestWillBeSent":
            req_url = p["request"]["url"]
            if not req_url.startswith(_LOCAL_SCHEMES):
                external.append(req_url)

    return {
        "title": title,
        "images_total": len(images),
        "images_broken": [im["src"] for im in images if not (im["complete"] and im["naturalWidth"] > 0)],
        "images": images,
        "console_errors": errors,
        "console_warnings": warnings,
        "external_requests": external,
    }


# --------------------------------------------------------------------------------------
# screenshots
# --------------------------------------------------------------------------------------
def screenshot(index_html: Path, out_png: Path, *, chromium: str, window_size: tuple[int, int] = (1280, 2400),
               timeout: float = 120.0) -> Path:
    """Render ``index_html`` with ``chromium --headless --screenshot`` into ``out_png``."""
    index_html, out_png = Path(index_html).resolve(), Path(out_png).resolve()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out_png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="salcurate-chromium-") as tmp:
        argv = [chromium, *BASE_FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}",
                f"--window-size={window_size[0]},{window_size[1]}", f"--screenshot={out_png}",
                "--virtual-time-budget=10000", index_html.as_uri()]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise BrowserError(f"chromium --screenshot took more than {timeout:.0f} s") from None
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode != 0 or not out_png.is_file():
        raise BrowserError(f"chromium --screenshot exited {proc.returncode} without writing {out_png}; "
                           f"its output ends:\n{log.decode('utf-8', 'replace')[-2000:]}")
    return out_png

