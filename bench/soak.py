"""Soak test: K WebSocket streams play conversation.wav in a loop, in real time, for N minutes.

    python bench/soak.py --minutes 20 --streams 4
    python bench/soak.py --minutes 5 --streams 2 --url http://127.0.0.1:8765 [--api-key K]

Each stream is one long-lived `/v1/stream` connection (like a participant who stays in a room)
sending the file over and over in 20 ms frames at real-time pace. Without `--url` a sidecar is
started for the run (tiny.en, STT_MAX_STREAMS = max(8, K)); with `--url` the sidecar's pid is
found by its listening port (or given with `--pid`) so its RSS and FDs can be read.

One row per minute, for the utterances judged in that minute (an utterance is judged 10 s
after its speech ended, so a late final still counts and a missing one shows as missing):

- the sidecar's RSS and open file descriptors at the end of the minute;
- finals received for those utterances, and utterances delivered vs expected (7 per loop per
  stream; jfk.wav may give several finals, so utterances covered by a final are counted);
- final latency p50 / p95 / max: arrival of an utterance's last final minus its `speech_end`
  (the timing JSON's end of audible speech) on the stream's real-time clock;
- WER of the delivered utterances against the references, and finals outside any utterance.

At the end every stream sends `close`, the utterances spoken completely before that are
judged, and a total row is printed. Exit status 1 if an expected utterance never came.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.stream import pct
from stt_sidecar.replay import assign_finals, load_pcm16
from tests.support.sidecar import SidecarProcess
from tests.support.speech import wer  # the tests' normalisation, so figures match

ROOT = Path(__file__).resolve().parent.parent

JUDGE_AFTER_S = 10.0  # an utterance is judged this long after its speech ended
FRAME_MS = 20


@dataclass
class Judged:
    """One utterance of one loop of one stream, once judged."""

    finals: int
    delivered: bool
    latency: float | None
    reference: str
    hypothesis: str


@dataclass
class StreamState:
    index: int
    t0: float = 0.0  # wall clock of stream sample 0
    finals: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (arrival, final)
    judged_upto: int = 0  # utterances (loop * 7 + i) already judged
    extra: int = 0  # finals in no utterance (words invented in a pause)
    sent_s: float = 0.0  # stream audio sent when it stopped


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        timing = json.loads(Path(args.timing).read_text())
        self.utterances: list[dict[str, Any]] = timing["utterances"]
        self.audio, self.rate = load_pcm16(args.audio)
        self.duration = len(self.audio) / self.rate
        self.streams = [StreamState(i) for i in range(args.streams)]
        self.judged: list[Judged] = []
        self.started = 0.0
        self.proc: psutil.Process | None = None
        self.stop_at = 0.0
        self._extra = 0

    # -- streaming --------------------------------------------------------------------------
    async def run_stream(self, http: aiohttp.ClientSession, state: StreamState, url: str) -> None:
        headers = {"Authorization": f"Bearer {self.args.api_key}"} if self.args.api_key else None
        step = self.rate * FRAME_MS // 1000
        config = {"type": "config", "sample_rate": self.rate, "channels": self.audio.shape[1]}
        async with http.ws_connect(url, headers=headers, heartbeat=30.0) as ws:
            await ws.send_str(json.dumps(config))
            first = await ws.receive_json(timeout=30)
            if first.get("type") != "ready":
                raise RuntimeError(f"stream {state.index} refused: {first}")
            done = asyncio.Event()

            async def receive() -> None:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    data = json.loads(msg.data)
                    if data.get("type") == "final":
                        state.finals.append((time.monotonic(), data))
                    elif data.get("type") == "error":
                        print(f"stream {state.index}: error {data}", flush=True)
                    elif data.get("type") == "closed":
                        done.set()
                done.set()

            receiver = asyncio.create_task(receive())
            state.t0 = time.monotonic()
            sent = 0
            total = len(self.audio)
            while time.monotonic() < self.stop_at and not done.is_set():
                i = sent % total
                chunk = self.audio[i : min(i + step, total)]
                await ws.send_bytes(chunk.tobytes())
                sent += len(chunk)
                due = state.t0 + sent / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            state.sent_s = sent / self.rate
            if not done.is_set():
                await ws.send_str(json.dumps({"type": "close"}))
            async with asyncio.timeout(120):
                await done.wait()
            receiver.cancel()

    # -- judging ----------------------------------------------------------------------------
    def judge(self, state: StreamState, now: float, spoken_until: float | None = None) -> None:
        """Judge every utterance of `state` whose speech ended JUDGE_AFTER_S before `now`
        (or, at the end, whose audio was completely sent: `spoken_until` stream seconds)."""
        if state.t0 == 0.0:
            return
        n = len(self.utterances)
        while True:
            loop, i = divmod(state.judged_upto, n)
            u = self.utterances[i]
            offset = loop * self.duration
            end_wall = state.t0 + offset + u["speech_end"]
            if spoken_until is None:
                if now < end_wall + JUDGE_AFTER_S:
                    return
            elif offset + u["end"] > spoken_until:
                return
            local = [
                {**f, "start": f["start"] - offset, "end": f["end"] - offset, "at": at}
                for at, f in state.finals
                if offset <= (f["start"] + f["end"]) / 2 < offset + self.duration
            ]
            groups = assign_finals(local, self.utterances)
            mine = groups[i]
            latency = max(f["at"] for f in mine) - end_wall if mine else None
            self.judged.append(
                Judged(len(mine), bool(mine), latency, u["text"], " ".join(f["text"] for f in mine))
            )
            if i == n - 1:
                state.extra += len(groups[-1])
            state.judged_upto += 1

    def row(self, label: str, rows: list[Judged], extra: int) -> str:
        rss = fds = float("nan")
        if self.proc is not None:
            try:
                rss = self.proc.memory_info().rss / 2**20
                fds = self.proc.num_fds()
            except psutil.Error:
                pass
        lat = [j.latency for j in rows if j.latency is not None]
        delivered = [j for j in rows if j.delivered]
        error = (
            wer([j.reference for j in delivered], [j.hypothesis for j in delivered])
            if delivered
            else float("nan")
        )
        finals = sum(j.finals for j in rows)
        return (
            f"| {label:>6} | {rss:7.0f} | {fds:5.0f} | {finals:6d} | "
            f"{len(delivered):4d}/{len(rows):<4d} | {pct(lat, 50):5.2f} | {pct(lat, 95):5.2f} | "
            f"{max(lat) if lat else float('nan'):5.2f} | {error * 100:5.1f} | {extra:5d} |"
        )

    async def report(self) -> None:
        print(
            "| minute | RSS MiB |   FDs | finals | delivered/expected | "
            "p50 s | p95 s | max s | WER % | extra |",
            flush=True,
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
        minute = 0
        reported = 0
        while time.monotonic() < self.stop_at - 1:
            target = self.started + (minute + 1) * 60
            await asyncio.sleep(max(0.0, target - time.monotonic()))
            now = time.monotonic()
            for s in self.streams:
                self.judge(s, now)
            extra = sum(s.extra for s in self.streams)
            print(
                self.row(str(minute + 1), self.judged[reported:], extra - self._extra), flush=True
            )
            reported, self._extra = len(self.judged), extra
            minute += 1

    # -- main -------------------------------------------------------------------------------
    async def run(self, url: str) -> int:
        ws_url = url.rstrip("/").replace("http", "ws", 1) + "/v1/stream"
        self.started = time.monotonic()
        self.stop_at = self.started + self.args.minutes * 60
        async with aiohttp.ClientSession() as http:
            reporter = asyncio.create_task(self.report())
            tasks = []
            for s in self.streams:
                tasks.append(asyncio.create_task(self.run_stream(http, s, ws_url)))
                if self.args.stagger:
                    await asyncio.sleep(self.args.stagger)
            await asyncio.gather(*tasks)
            reporter.cancel()
        for s in self.streams:
            self.judge(s, time.monotonic(), spoken_until=s.sent_s)
        extra = sum(s.extra for s in self.streams)
        print(self.row("all", self.judged, extra), flush=True)
        missing = sum(not j.delivered for j in self.judged)
        wrong = Counter(
            (j.reference, j.hypothesis)
            for j in self.judged
            if j.delivered and wer(j.reference, j.hypothesis) > 0
        )
        if wrong:
            print("\nmost frequent transcripts with errors (count: reference | hypothesis):")
            for (reference, hypothesis), count in wrong.most_common(6):
                print(f"  {count:4d}: {reference} | {hypothesis}")
        print(
            f"\n{self.args.streams} stream(s) x {self.args.minutes:g} min of "
            f"{Path(self.args.audio).name} "
            f"looped in real time: {len(self.judged) - missing}/{len(self.judged)} utterances "
            f"delivered, {extra} final(s) outside any utterance",
            flush=True,
        )
        return 1 if missing else 0


def find_pid(url: str) -> int | None:
    port = urllib.parse.urlparse(url).port
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                return conn.pid
    except psutil.Error:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--url", help="a running sidecar (default: start one for the run)")
    parser.add_argument("--api-key")
    parser.add_argument("--pid", type=int, help="the sidecar's pid, if --url and not found")
    parser.add_argument("--stagger", type=float, default=0.0, help="seconds between stream starts")
    parser.add_argument("--audio", default=str(ROOT / "tests/data/conversation.wav"))
    parser.add_argument("--timing", default=str(ROOT / "tests/data/conversation.json"))
    args = parser.parse_args(argv)

    soak = Soak(args)
    sidecar = None
    if args.url:
        url = args.url
        pid = args.pid or find_pid(url)
    else:
        sidecar = SidecarProcess(STT_MAX_STREAMS=str(max(8, args.streams))).start()
        url, pid = sidecar.url, sidecar.proc.pid if sidecar.proc else None
    soak.proc = psutil.Process(pid) if pid else None
    print(
        f"soak: {args.streams} stream(s), {args.minutes:g} min, {url}, sidecar pid {pid}",
        flush=True,
    )
    try:
        return asyncio.run(soak.run(url))
    finally:
        if sidecar is not None:
            sidecar.stop()


if __name__ == "__main__":
    sys.exit(main())
