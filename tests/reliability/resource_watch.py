"""Watching the sidecar for files and sockets it should never touch (issue #10): the
container tests and the HTTP fuzzer use it around requests."""

from __future__ import annotations

import ctypes
import os
import struct
import threading
import time
from pathlib import Path

import psutil

from ..container_payloads import CANARY
from ..support.sidecar import SidecarProcess


class _Inotify:
    """Linux inotify on one directory: every open of a file in it, by any process, is an event.
    Polling a process's open files can miss a file opened and closed within a millisecond
    (FFmpeg's HLS demuxer does exactly that); the kernel does not."""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, directory: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self._fd >= 0, ctypes.get_errno()
        wd = self._libc.inotify_add_watch(
            self._fd, str(directory).encode(), self.IN_OPEN | self.IN_ACCESS
        )
        assert wd >= 0, ctypes.get_errno()

    def names(self) -> set[str]:
        """Names of the files opened or read since the last call; closes nothing."""
        seen: set[str] = set()
        while True:
            try:
                buffer = os.read(self._fd, 65536)
            except BlockingIOError:
                return seen
            pos = 0
            while pos < len(buffer):
                _wd, _mask, _cookie, length = struct.unpack_from("iIII", buffer, pos)
                name = buffer[pos + 16 : pos + 16 + length].rstrip(b"\0").decode()
                seen.add(name)
                pos += 16 + length

    def close(self) -> None:
        os.close(self._fd)


class ResourceWatch:
    """While a request runs: inotify on the server's working directory (the canary's), and the
    server's sockets polled from a thread (psutil)."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        assert sidecar.proc is not None
        self._process = psutil.Process(sidecar.proc.pid)
        self._port = sidecar.port
        self._inotify = _Inotify(sidecar.cwd)
        self._stop = threading.Event()
        self.files: set[str] = set()
        self.sockets: set[str] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _poll(self) -> None:
        for f in self._process.open_files():
            if CANARY in f.path:
                self.files.add(f.path)
        for c in self._process.net_connections(kind="inet"):
            local = c.laddr.port if c.laddr else None
            # our listener and the test client's connections to it are expected; anything else
            # (UDP for RTP/RTCP, outgoing TCP for http:/rtsp:) was opened on an upload's behalf
            if local != self._port:
                self.sockets.add(f"{c.type.name} {c.laddr} -> {c.raddr} {c.status}")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except psutil.Error:
                return
            time.sleep(0.002)

    def __enter__(self) -> ResourceWatch:
        self._inotify.names()  # drop anything from before
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()  # and once more after the answer: nothing left behind
        self.files |= self._inotify.names() & {CANARY}
        self._inotify.close()
