"""Room benchmark: what a user waits for in a real LiveKit room, beside the sidecar alone.

    python bench/room.py [--rounds 3] [--interims on|off]

Each round, in the same run and against the same sidecar:

- **sidecar only**: `bench/stream.py`'s one-stream measurement, conversation.wav replayed over
  the WebSocket at real time in 20 ms frames;
- **room**: a worker (`python agent/main.py dev`, real dispatch) in a real LiveKit room; a
  participant publishes conversation.wav as a 48 kHz microphone track at real time and a
  second participant listens.

Final latency is the arrival of an utterance's last final (at the WebSocket client, or at the
listener as a `transcription` data message) minus the true end of its speech. Needs a LiveKit
server: LIVEKIT_URL/LIVEKIT_API_KEY/LIVEKIT_API_SECRET, or `livekit-server` on PATH or in
LIVEKIT_SERVER_BIN (started here with --dev on free loopback ports); without one it says so
and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import time
import uuid

import numpy as np
import psutil

from stt_sidecar.replay import assign_finals, load_pcm16, replay
from tests.live.room_support import (
    Listener,
    Talker,
    WorkerProcess,
    check_room_transcripts,
    load_48k,
    silence_48k,
)
from tests.livekit_server import (
    SKIP_REASON,
    LocalLiveKitServer,
    find_server_binary,
    server_from_environment,
)
from tests.support.sidecar import SidecarProcess
from tests.support.speech import DATA, conversation, wer


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


SIDECAR_SERIES = {
    "latency": "stt_final_latency_seconds",
    "decode": 'stt_decode_seconds{kind="final"}',
}


def sidecar_totals(sidecar: SidecarProcess) -> dict[str, tuple[float, float]]:
    """(sum, count) of the sidecar's own final latency and final decode time histograms."""
    import urllib.request

    with urllib.request.urlopen(f"{sidecar.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    totals = {}
    for key, series in SIDECAR_SERIES.items():
        name, _, labels = series.partition("{")
        labels = "{" + labels if labels else ""
        values = []
        for suffix in ("_sum", "_count"):
            m = re.search(rf"^{re.escape(name + suffix + labels)} (\S+)$", text, re.M)
            values.append(float(m.group(1)) if m else 0.0)
        totals[key] = (values[0], values[1])
    return totals


def sidecar_split(before: dict, after: dict) -> str:
    """Mean time inside the sidecar per final during a round: from its VAD's last speech window
    to the final sent, and the final's decode alone. Equal in both paths means the room's extra
    time is spent before the audio reaches the sidecar (WebRTC, worker, plugin)."""
    parts = []
    for key in SIDECAR_SERIES:
        total = after[key][0] - before[key][0]
        count = after[key][1] - before[key][1]
        parts.append(f"{key} {total / count * 1000:.0f} ms" if count else f"{key} n/a")
    return "inside the sidecar per final: " + ", ".join(parts)


async def sidecar_round(sidecar: SidecarProcess) -> tuple[list[float], float]:
    ref = conversation()["utterances"]
    audio, rate = load_pcm16(DATA / "conversation.wav")
    result = await replay(sidecar.ws_url, audio, rate, frame_ms=20, speed=1.0)
    received_at = {id(m.message): m.at for m in result.timed("final")}
    groups = assign_finals(result.finals, ref)
    latencies = [
        received_at[id(g[-1])] - u["speech_end"] for g, u in zip(groups, ref, strict=False) if g
    ]
    hyps = [" ".join(f["text"] for f in g) for g in groups[:-1]]
    return latencies, wer([u["text"] for u in ref], hyps)


async def room_round(server, sidecar: SidecarProcess, interims: bool) -> tuple[list[float], str]:
    ref = conversation()["utterances"]
    worker = WorkerProcess(
        server, sidecar.url, "dev", PUBLISH_INTERIMS="true" if interims else "false"
    ).start()
    try:
        await worker.wait_registered()
        room = f"bench-room-{uuid.uuid4().hex[:6]}"
        listener, talker = Listener(server, room, "bob"), Talker(server, room, "alice")
        await listener.connect()
        await talker.connect()
        try:
            await talker.publish()
            await listener.wait_for_agent(60)
            await worker.wait_log("transcribing alice", 30)
            await talker.play(load_48k("conversation.wav"))
            await talker.play(silence_48k(1.0))
            await listener.wait_finals("alice", len(ref), timeout=30)
        finally:
            await talker.disconnect()
            await listener.disconnect()
        report = check_room_transcripts(
            listener, "alice", talker.track_sid, ref, talker.play_started
        )
        return report.latencies, report.summary() + worker_split(worker, listener, talker)
    finally:
        await worker.stop()
        worker.kill()


FINAL_LOG = re.compile(r"(\d\d:\d\d:\d\d,\d{3}) - .*final from alice \[([\d.]+)-([\d.]+) s\]")


def worker_split(worker: WorkerProcess, listener: Listener, talker: Talker) -> str:
    """Where the time goes: speech end -> the worker has the final (audio over WebRTC, plugin,
    sidecar) and the worker has it -> the listener has it (publish path), from the worker's
    DEBUG log ("final from ...", millisecond wall clock on the same machine)."""
    import datetime

    logged = []
    for m in FINAL_LOG.finditer(worker.log()):
        t = datetime.datetime.strptime(m.group(1), "%H:%M:%S,%f").time()
        day = datetime.datetime.now().date()
        logged.append(datetime.datetime.combine(day, t).timestamp())
    arrived = [r.wall for r in listener.finals("alice")]
    if len(logged) != len(arrived) or not arrived:
        return ""
    publish = [a - w for a, w in zip(arrived, logged, strict=True)]
    return f"; worker log -> listener p50 {pct(publish, 50) * 1000:.0f} ms"


def tree_rss_mib(pid: int) -> tuple[float, int]:
    """PSS of a process and all its descendants (job processes included), and their count.

    PSS, not RSS: forked job processes share the worker's pages, which RSS counts each time."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_full_info().pss
    return total / 2**20, len(procs)


def tree_cpu_s(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


async def box_round(server, rooms: int, executor: str, idle: str, seconds: float) -> str:
    """`rooms` one-speaker rooms on one worker (`start`) and its sidecar: memory and CPU."""
    sidecar = SidecarProcess(STT_MAX_STREAMS=str(max(8, rooms))).start(timeout=120)
    env = {"AGENT_JOB_EXECUTOR": executor}
    if idle:
        env["AGENT_IDLE_PROCESSES"] = idle
    worker = WorkerProcess(server, sidecar.url, "start", **env).start()
    talkers: list[Talker] = []
    try:
        await worker.wait_registered()
        await asyncio.sleep(3)  # idle processes warm up
        idle_rss, idle_n = tree_rss_mib(worker.proc.pid)
        side_idle = tree_rss_mib(sidecar.proc.pid)[0]
        for i in range(rooms):
            t = Talker(server, f"box-{uuid.uuid4().hex[:6]}-{i}", f"speaker{i}")
            await t.connect()
            await t.publish()
            talkers.append(t)
        await worker.wait_log("transcribing speaker", 60, count=rooms)
        pcm = load_48k("conversation.wav")[: int(seconds * 48000) // 480 * 480]
        cpu0 = (tree_cpu_s(worker.proc.pid), tree_cpu_s(sidecar.proc.pid), time.monotonic())
        peak_w = peak_s = 0.0
        n_procs = 0

        async def sample() -> None:
            nonlocal peak_w, peak_s, n_procs
            while True:
                w, n = tree_rss_mib(worker.proc.pid)
                peak_w, n_procs = max(peak_w, w), max(n_procs, n)
                peak_s = max(peak_s, tree_rss_mib(sidecar.proc.pid)[0])
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(t.play(pcm) for t in talkers))
        await asyncio.sleep(3)
        sampler.cancel()
        wall = time.monotonic() - cpu0[2]
        cpu_w = (tree_cpu_s(worker.proc.pid) - cpu0[0]) / wall
        cpu_s = (tree_cpu_s(sidecar.proc.pid) - cpu0[1]) / wall
        finals = worker.log().count("final from speaker")
        return (
            f"{rooms} rooms, executor {executor}, idle {idle or 'default'}: worker+jobs PSS idle "
            f"{idle_rss:.0f} MiB ({idle_n} procs) peak {peak_w:.0f} MiB ({n_procs} procs); "
            f"sidecar idle {side_idle:.0f} peak {peak_s:.0f} MiB; CPU cores: worker "
            f"{cpu_w:.2f}, sidecar {cpu_s:.2f}; finals {finals}; load {os.getloadavg()[0]:.1f}"
        )
    finally:
        for t in talkers:
            await t.disconnect()
        await worker.stop()
        worker.kill()
        sidecar.stop()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interims", choices=["on", "off"], default="on")
    parser.add_argument("--box", type=int, default=0, help="N one-speaker rooms: memory/CPU")
    parser.add_argument("--executor", default="process,thread", help="with --box")
    parser.add_argument("--idle", default="", help="AGENT_IDLE_PROCESSES with --box")
    parser.add_argument("--seconds", type=float, default=33.0, help="speech per room, --box")
    args = parser.parse_args()

    local: LocalLiveKitServer | None = None
    server = server_from_environment()
    if server is None:
        binary = find_server_binary()
        if binary is None:
            how = SKIP_REASON.replace("then `make test-live`", "then run this again")
            print(f"no LiveKit server configured: {how}")
            return 2
        local = LocalLiveKitServer(binary).start()
        server = local.info
    print(f"LiveKit server {server.url}; load average {os.getloadavg()}")
    if args.box:
        try:
            for executor in args.executor.split(","):
                print(await box_round(server, args.box, executor, args.idle, args.seconds))
        finally:
            if local is not None:
                local.stop()
        return 0
    sidecar = SidecarProcess(STT_MAX_STREAMS="8").start(timeout=120)
    side: list[float] = []
    room: list[float] = []
    try:
        for n in range(args.rounds):
            before = sidecar_totals(sidecar)
            lat, w = await sidecar_round(sidecar)
            side += lat
            after = sidecar_totals(sidecar)
            print(
                f"round {n + 1} sidecar only: p50 {pct(lat, 50):.2f} s, WER {w:.1%}; "
                + sidecar_split(before, after)
            )
            lat, summary = await room_round(server, sidecar, args.interims == "on")
            room += lat
            print(
                f"round {n + 1} room: p50 {pct(lat, 50):.2f} s  ({summary}); "
                + sidecar_split(after, sidecar_totals(sidecar))
            )
    finally:
        sidecar.stop()
        if local is not None:
            local.stop()
    print()
    print(f"{'path':<14} {'n':>3} {'p50':>7} {'p95':>7} {'max':>7}")
    for name, values in (("sidecar only", side), ("room", room)):
        print(
            f"{name:<14} {len(values):>3} {pct(values, 50):>6.2f}s {pct(values, 95):>6.2f}s "
            f"{max(values, default=float('nan')):>6.2f}s"
        )
    print(f"room adds {pct(room, 50) - pct(side, 50):+.2f} s at p50; load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
