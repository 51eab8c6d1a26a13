"""Open a report page in headless Chromium and record what went wrong in it.

The page is loaded by Debian's ``chromium``, driven through the Chrome
DevTools Protocol (CDP) over ``--remote-debugging-pipe``: the protocol runs
over two inherited file descriptors, so no port is opened. The flags in
``CHROMIUM_FLAGS`` keep the browser off the network and away from the
user's profile. The tests and the report benchmark use this module; the
toolkit itself never starts a browser.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
DEFAULT_CHROMIUM = "/usr/bin/chromium"
WINDOW_SIZE = (1280, 800)

# The browser reads CDP commands from descriptor 3 and writes replies to 4.
_CDP_IN_FD = 3
_CDP_OUT_FD = 4

# A short summary of every <img> on the page: its source (data URIs cut to
# their header), whether it finished loading and its decoded size.
_IMAGES_JS = """JSON.stringify(Array.from(document.images).map((img) => ({
  src: img.currentSrc.startsWith("data:") ? img.currentSrc.slice(0, 30) + "..." : img.currentSrc,
  complete: img.complete,
  width: img.naturalWidth,
  height: img.naturalHeight,
})))"""


class BrowserError(RuntimeError):
    """Chromium failed to start, or did not respond to a CDP command in time."""


@dataclass
class PageCheck:
    """Record of one page load in headless Chromium: timing, errors, requests and images.

    Attributes
    ----------
    url : str
        The ``file://`` URL that was opened.
    load_seconds : float
        Wall time from the navigation command to the page's ``load`` event,
        in seconds; every inline image is decoded by then.
    console_errors : list of str
        Console errors, uncaught exceptions and browser log entries of level
        "error" (a failed resource load is also logged here by Chromium).
    failed_requests : list of str
        "URL: reason" for each request that failed.
    external_requests : list of str
        URLs requested besides the page itself and inline ``data:`` URIs; a
        self-contained report makes none.
    images : list of dict
        One dict per ``<img>`` with ``src``, ``complete``, ``width`` and
        ``height`` (natural size in pixels; 0 for a missing image).
    screenshot : bytes or None
        PNG of the viewport, if requested.
    values : dict
        The result of each JavaScript expression passed to ``check_page``,
        by name.
    """

    url: str
    load_seconds: float
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    screenshot: bytes | None = None
    values: dict = field(default_factory=dict)

    @property
    def broken_images(self) -> list[str]:
        """Sources of images that did not load or decoded to zero width."""
        return [image["src"] for image in self.images if not image["complete"] or image["width"] == 0]

    @property
    def problems(self) -> list[str]:
        """Every console error, failed or external request and broken image, one line each."""
        return ([f"console error: {text}" for text in self.console_errors]
                + [f"failed request: {text}" for text in self.failed_requests]
                + [f"external request: {url}" for url in self.external_requests]
                + [f"missing image: {src}" for src in self.broken_images])


def find_chromium() -> str | None:
    """Return the path of the ``chromium`` executable, or None when it is not installed."""
    if os.access(DEFAULT_CHROMIUM, os.X_OK):
        return DEFAULT_CHROMIUM
    return shutil.which("chromium")


class HeadlessChromium:
    """A headless Chromium process driven over the CDP pipe.

    Use as a context manager; the browser and its temporary profile folder
    are removed on exit.

    Parameters
    ----------
    executable : str, optional
        Path of the browser; defaults to ``find_chromium()``.
    window_size : tuple of (int, int)
        Viewport width and height in CSS pixels.
    timeout : float
        Seconds to wait for any one CDP reply or event before raising
        ``BrowserError``.
    """

    def __init__(self, executable: str | None = None, *, window_size: tuple[int, int] = WINDOW_SIZE,
                 timeout: float = 60.0):
        self.executable = executable
        self.window_size = window_size
        self.timeout = timeout
        self._process = None
        self._profile = None
        self._stderr = None
        self._to_browser = None
        self._from_browser = None
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []

    def __enter__(self) -> HeadlessChromium:
        try:
            self.start()
        except BaseException:
            # __exit__ does not run when __enter__ raises, so clean up here.
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        """Start the browser with ``CHROMIUM_FLAGS`` and a new, empty profile folder."""
        executable = self.executable or find_chromium()
        if executable is None:
            raise BrowserError(f"chromium not found at {DEFAULT_CHROMIUM} or on PATH; "
                               "install Debian's chromium package (scripts/bootstrap.sh does)")
        self._profile = tempfile.mkdtemp(prefix="mitigate-chromium-")
        self._stderr = tempfile.TemporaryFile()
        command_read, command_write = _pipe_above(_CDP_OUT_FD)
        reply_read, reply_write = _pipe_above(_CDP_OUT_FD)
        width, height = self.window_size
        args = [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}",
                "--remote-debugging-pipe", f"--window-size={width},{height}", "about:blank"]

        def wire_descriptors():
            # Runs in the child before exec. dup2 leaves the copies inheritable, and the
            # pipe ends sit above 4, so neither copy overwrites the other's source.
            os.dup2(command_read, _CDP_IN_FD)
            os.dup2(reply_write, _CDP_OUT_FD)

        try:
            # close_fds=False keeps descriptors 3 and 4 open; every other descriptor
            # Python opened is non-inheritable and closes on exec anyway.
            self._process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
                close_fds=False, preexec_fn=wire_descriptors, start_new_session=True,
            )
        finally:
            os.close(command_read)
            os.close(reply_write)
        self._to_browser = command_write
        self._from_browser = reply_read
        logger.debug("started %s (pid %d)", executable, self._process.pid)

    def close(self) -> None:
        """Ask the browser to quit, kill its process group if it does not, and remove the profile."""
        if self._process is not None:
            with contextlib.suppress(BrowserError, OSError):
                self.send("Browser.close", timeout=5.0)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # The browser was started in its own session, so its group is its own children.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=10)
            self._process = None
        for descriptor in (self._to_browser, self._from_browser):
            if descriptor is not None:
                with contextlib.suppress(OSError):
                    os.close(descriptor)
        self._to_browser = self._from_browser = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    def send(self, method: str, params: dict | None = None, *, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send one CDP command and return its result; events that arrive meanwhile are kept.

        Raises
        ------
        BrowserError
            If the browser replies with an error, exits, or does not reply
            within ``timeout`` seconds (default: the instance's timeout).
        """
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        try:
            os.write(self._to_browser, json.dumps(message).encode("utf-8") + b"\0")
        except BrokenPipeError as err:
            raise BrowserError(f"chromium exited before {method} was sent; "
                               f"its last output: {self._stderr_tail()!r}") from err
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            reply = self._read_message(deadline, waiting_for=method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"CDP command {method} failed: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_for_event(self, method: str, *, session: str | None = None,
                       timeout: float | None = None) -> dict:
        """Wait for the next event named ``method`` (for ``session``) and return its params."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for index, event in enumerate(self._events):
                if event.get("method") == method and event.get("sessionId") == session:
                    del self._events[index]
                    return event.get("params", {})
            self._events.append(self._read_message(deadline, waiting_for=method))

    def take_events(self) -> list[dict]:
        """Return and forget every event received so far."""
        events, self._events = self._events, []
        return events

    def _read_message(self, deadline: float, *, waiting_for: str) -> dict:
        """Read one NUL-terminated JSON message from the browser."""
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"chromium did not respond to {waiting_for} in time; "
                                   f"its last output: {self._stderr_tail()!r}")
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium exited while waiting for {waiting_for}; "
                                   f"its last output: {self._stderr_tail()!r}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def _stderr_tail(self, n_chars: int = 600) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-n_chars:]


def _pipe_above(lowest: int) -> tuple[int, int]:
    """Return a pipe (read end, write end) whose descriptors are both above ``lowest``, close-on-exec."""
    import fcntl

    ends = os.pipe()
    moved = tuple(fcntl.fcntl(end, fcntl.F_DUPFD_CLOEXEC, lowest + 1) for end in ends)
    for end in ends:
        os.close(end)
    return moved


def check_page(path: Path | str, *, screenshot: bool = False, expressions: dict | None = None,
               executable: str | None = None, window_size: tuple[int, int] = WINDOW_SIZE,
               timeout: float = 60.0) -> PageCheck:
    """Open ``path`` in a fresh headless Chromium and record errors, requests and images.

    Parameters
    ----------
    path : path
        An HTML file on disk.
    screenshot : bool
        Also capture the viewport (``window_size``) as a PNG.
    expressions : dict of str to str, optional
        JavaScript expressions to evaluate after the load event, by name;
        each must return a JSON-serialisable value.
    executable : str, optional
        Path of the browser; defaults to ``find_chromium()``.
    window_size : tuple of (int, int)
        Viewport width and height in CSS pixels.
    timeout : float
        Seconds allowed for the page to reach its ``load`` event (and for
        each CDP reply).

    Returns
    -------
    PageCheck

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    BrowserError
        If the browser fails to start or does not respond in time.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no page to open at {path}")
    url = path.as_uri()
    with HeadlessChromium(executable, window_size=window_size, timeout=timeout) as browser:
        session = _open_blank_page(browser, window_size)

        started = time.perf_counter()
        browser.send("Page.navigate", {"url": url}, session=session)
        browser.wait_for_event("Page.loadEventFired", session=session)
        load_seconds = time.perf_counter() - started

        images = json.loads(_evaluate(browser, session, _IMAGES_JS))
        check = PageCheck(url=url, load_seconds=load_seconds, images=images)
        for name, expression in (expressions or {}).items():
            check.values[name] = _evaluate(browser, session, expression)
        if screenshot:
            shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
            check.screenshot = base64.b64decode(shot["data"])
        _collect_problems(check, browser.take_events(), url)
    return check


def _open_blank_page(browser: HeadlessChromium, window_size: tuple[int, int]) -> str:
    """Open a blank tab, attach to it, enable the event domains and return the session id."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})
    attached = browser.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
    session = attached["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.send(f"{domain}.enable", session=session)
    width, height = window_size
    browser.send("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                 session=session)
    browser.take_events()
    return session


def _evaluate(browser: HeadlessChromium, session: str, expression: str):
    """Evaluate one JavaScript expression in the page and return its value."""
    reply = browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                         session=session)
    if "exceptionDetails" in reply:
        details = reply["exceptionDetails"]
        raise BrowserError(f"JavaScript expression {expression!r} failed: "
                           f"{details.get('exception', {}).get('description', details.get('text'))}")
    return reply["result"].get("value")


def _collect_problems(check: PageCheck, events: list[dict], url: str) -> None:
    """Sort the page's CDP events into console errors, failed requests and external requests."""
    requested = {}
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            check.console_errors.append(" ".join(_console_argument(arg) for arg in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            check.console_errors.append(details.get("exception", {}).get("description")
                                        or details.get("text", "uncaught exception"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            check.console_errors.append(f"{entry.get('text', '')} ({entry.get('url', '')})")
        elif method == "Network.requestWillBeSent":
            request_url = params.get("request", {}).get("url", "")
            requested[params.get("requestId")] = request_url
            if request_url != url and not request_url.startswith("data:"):
                check.external_requests.append(request_url)
        elif method == "Network.loadingFailed":
            request_url = requested.get(params.get("requestId"), "unknown URL")
            check.failed_requests.append(f"{_shorten(request_url)}: {params.get('errorText', 'failed')}")


def _console_argument(argument: dict) -> str:
    """Render one console.error argument (a CDP RemoteObject) as text."""
    if "value" in argument:
        return str(argument["value"])
    return argument.get("description", argument.get("type", ""))


def _shorten(url: str, n_chars: int = 80) -> str:
    return url if len(url) <= n_chars else url[:n_chars] + "..."
