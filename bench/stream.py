"""Streaming benchmark: N concurrent real-time WebSocket streams against the sidecar.

    python bench/stream.py tests/data/conversation.wav --streams 1,4,8
    python bench/stream.py tests/data/conversation.wav --modes sync,turns \
        --streams 1,4,8,16,24,32 --baseline PYTHONPATH=/work/main

AUDIO comes with a timing JSON (default: AUDIO with .json; the format of
shared/speech/conversation.json: utterances with start/end, speech_start/speech_end, text).
Each of the N clients replays audio at real-time pace in 20 ms frames, all connected at once:

- `sync`: every client sends the file from its start (the worst case: every stream's
  utterances end together);
- `turns`: people taking turns. Each client's audio is the file followed by silence, so that
  it speaks `--talk-share` of the time (0.5: two people in turn), as a loop entered at a
  seeded random point (`--seed`; an utterance that point falls in is silenced): every client
  streams for the whole run, the same share of them speaks throughout the run (about 10 of 24
  with conversation.wav, whose pauses count as the file), and their utterances start and end
  at unrelated moments.

`--baseline NAME=VALUE` starts a second sidecar with those settings (e.g. another checkout on
PYTHONPATH) and runs every row on both, one after the other, so the two are compared under the
same machine load. Printed per mode and N, beside a baseline measured in the same run
("endpoint + batch": wait STT_ENDPOINT_SILENCE_MS of silence, then send the utterance to the
batch endpoint, one at a time):

- final latency from the true end of speech (p50 / p95 / max) -- the time the last final of an
  utterance arrived, minus its `speech_end`
- first-interim latency from the true start of speech (p50 / p95)
- WER against the references, and against batch transcripts of the same utterances
- utterances lost (no final), streams refused (1013 `overloaded`), interims sent and dropped
- sidecar CPU seconds per second of audio streamed, and its peak RSS
- per sidecar and mode, the largest N whose final p95 is at most 1.0 s with nothing lost

`--protocol realtime` runs every row twice in the same run, over `/v1/stream` and then over
`/v1/realtime` (OpenAI's Realtime transcription: 24 kHz PCM in base64 appends, events mapped
back to finals; "interims" counts deltas), so the two protocols' rows sit side by side.
Under each realtime row: the items whose deltas are not a prefix of their transcript, and the
finals that disagreed with the deltas already sent (counted in the sidecar's log).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
import soundfile

from stt_sidecar.replay import ReplayResult, assign_finals, load_pcm16, replay
from tests.support.realtime import as_stream_result, replay_realtime
from tests.support.sidecar import SidecarProcess
from tests.support.speech import wer  # the tests' normalisation, so figures match


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(values, q))


class ResourceSampler:
    """Polls the sidecar's RSS and CPU time while a run is going."""

    def __init__(self, pid: int | None) -> None:
        self.proc = psutil.Process(pid) if pid else None
        self.peak_rss = 0.0
        self._task: asyncio.Task[None] | None = None

    def cpu_seconds(self) -> float:
        if not self.proc:
            return float("nan")
        t = self.proc.cpu_times()
        return t.user + t.system

    async def _poll(self) -> None:
        assert self.proc
        while True:
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss / 2**20)
            await asyncio.sleep(0.2)

    def __enter__(self) -> ResourceSampler:
        if self.proc:
            self.peak_rss = 0.0
            self._task = asyncio.get_running_loop().create_task(self._poll())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()


async def metric_value(http: aiohttp.ClientSession, base: str, name: str, headers) -> float:
    async with http.get(base + "/metrics", headers=headers) as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, audio, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


async def batch_text(
    http: aiohttp.ClientSession, base: str, wav: bytes, headers: dict[str, str] | None = None
) -> str:
    """One clip's text from POST /v1/audio/transcriptions."""
    form = aiohttp.FormData()
    form.add_field("file", wav, filename="clip.wav", content_type="audio/wav")
    form.add_field("model", "whisper-1")
    form.add_field("response_format", "json")
    async with http.post(base + "/v1/audio/transcriptions", data=form, headers=headers) as r:
        r.raise_for_status()
        return str((await r.json())["text"])


async def batch_transcripts(
    http: aiohttp.ClientSession, base: str, audio: np.ndarray, rate: int, utterances, headers
) -> tuple[list[str], list[float]]:
    """Each utterance's clip through POST /v1/audio/transcriptions: text and round-trip time."""
    texts, times = [], []
    for u in utterances:
        wav = wav_bytes(audio[int(u["start"] * rate) : int(u["end"] * rate)], rate)
        started = time.monotonic()
        texts.append(await batch_text(http, base, wav, headers))
        times.append(time.monotonic() - started)
    return texts, times


def analyse(result: ReplayResult, utterances: list[dict[str, Any]]) -> dict[str, Any]:
    groups = assign_finals(result.finals, utterances)
    received_at = {id(m.message): m.at for m in result.messages}
    owner: dict[int, int] = {}  # utterance_id -> reference index
    latencies, first_interims, hyps, lost = [], [], [], 0
    for i, (u, finals) in enumerate(zip(utterances, groups[:-1], strict=True)):
        hyps.append(" ".join(f["text"] for f in finals))
        if not finals:
            lost += 1
            continue
        for f in finals:
            owner[f["utterance_id"]] = i
        latencies.append(received_at[id(finals[-1])] - u["speech_end"])
    firsts: dict[int, float] = {}
    for m in result.messages:
        uid = m.message.get("utterance_id")
        if m.message["type"] in ("interim", "final") and uid in owner:
            i = owner[uid]
            firsts.setdefault(i, m.at)
    for i, at in firsts.items():
        first_interims.append(at - utterances[i]["speech_start"])
    return {
        "latencies": latencies,
        "first_interims": first_interims,
        "hyps": hyps,
        "lost": lost,
        "interims": len(result.of_type("interim")),
        "extra_finals": len(groups[-1]),
    }


DIVERGED_LOG = "the final disagreed with the deltas sent"  # stt_sidecar/realtime/translator.py


def not_prefixed(result: ReplayResult) -> int:
    """Realtime items whose deltas (here interims) do not start their transcript (final)."""
    deltas: dict[int, str] = {}
    count = 0
    for m in result.messages:
        uid = m.message.get("utterance_id", 0)
        if m.message["type"] == "interim":
            deltas[uid] = deltas.get(uid, "") + m.message["text"]
        elif m.message["type"] == "final":
            count += not m.message["text"].startswith(deltas.get(uid, ""))
    return count


def diverged_so_far(server: Server) -> int:
    """Realtime finals that disagreed with the deltas sent, per the sidecar's log (0 when
    the bench did not start it, or the sidecar predates the log line)."""
    return server.process.log().count(DIVERGED_LOG) if server.process else 0


@dataclass
class StreamPlan:
    """One client's audio and the reference utterances in it (times in its own audio)."""

    audio: np.ndarray
    utterances: list[dict[str, Any]]


def turn_taking_plan(
    audio: np.ndarray, rate: int, utterances: list[dict[str, Any]], talk_share: float, rng
) -> StreamPlan:
    """The file then silence (the file is `talk_share` of it), as a loop entered at a uniformly
    random point: across N clients up to N x talk_share speak at any moment (less the file's
    own pauses). An utterance the point falls in is silenced and left out of the references,
    so none is cut and the timing stays exact."""
    duration = len(audio) / rate
    total = duration / talk_share
    padded = np.concatenate(
        [audio, np.zeros((round((total - duration) * rate), audio.shape[1]), audio.dtype)]
    )
    # Uniform over the whole loop: entering only in pauses put nearly every client's file
    # in the loop's middle, where up to all N then spoke at once.
    cut = rng.uniform(0, total)
    kept = []
    for u in utterances:
        if u["start"] <= cut <= u["end"]:
            padded[round(u["start"] * rate) : round(u["end"] * rate)] = 0
        else:
            kept.append(u)
    shift = len(padded) / rate - cut  # where the old time 0 lands
    turned = []
    for u in kept:
        moved = dict(u)
        delta = -cut if u["start"] >= cut else shift
        for key in ("start", "end", "speech_start", "speech_end"):
            moved[key] = u[key] + delta
        turned.append(moved)
    turned.sort(key=lambda u: u["start"])
    return StreamPlan(np.roll(padded, -round(cut * rate), axis=0), turned)


def plans(args, audio: np.ndarray, rate: int, utterances, mode: str, n: int) -> list[StreamPlan]:
    if mode == "sync":
        return [StreamPlan(audio, utterances)] * n
    rng = random.Random(f"{args.seed}-{n}")
    return [turn_taking_plan(audio, rate, utterances, args.talk_share, rng) for _ in range(n)]


async def replay_or_empty(
    protocol: str, base: str, audio: np.ndarray, rate: int, **kwargs: Any
) -> ReplayResult:
    """One client over `protocol`, or an empty result when the connection broke (an
    overloaded server that stopped answering pings): its utterances then count as lost."""
    try:
        if protocol == "realtime":
            mono16k = audio[:, 0] if audio.ndim > 1 else audio
            return as_stream_result(await replay_realtime(base, mono16k, **kwargs))
        return await replay(base.replace("http", "ws", 1) + "/v1/stream", audio, rate, **kwargs)
    except (aiohttp.ClientError, TimeoutError):
        return ReplayResult()


@dataclass
class Server:
    label: str
    base: str
    pid: int | None
    process: SidecarProcess | None = None


async def measure(
    http: aiohttp.ClientSession,
    server: Server,
    streams: list[StreamPlan],
    rate: int,
    batch_hyps: list[str],
    utterances: list[dict[str, Any]],
    args: argparse.Namespace,
    headers,
    protocol: str = "stream",
) -> dict[str, Any]:
    """One row: N clients on one sidecar, over `/v1/stream` or `/v1/realtime`."""
    dropped_before = await metric_value(http, server.base, "stt_interims_dropped_total", headers)
    sampler = ResourceSampler(server.pid)
    cpu_before = sampler.cpu_seconds()
    diverged_before = diverged_so_far(server)
    with sampler:
        results = await asyncio.gather(
            *(
                replay_or_empty(
                    protocol,
                    server.base,
                    plan.audio,
                    rate,
                    speed=1.0,
                    api_key=args.api_key,
                    session=http,
                    timeout=300,
                )
                for plan in streams
            )
        )
    cpu = sampler.cpu_seconds() - cpu_before
    if args.show_decode_times:
        async with http.get(server.base + "/metrics", headers=headers) as r:
            lines = (await r.text()).splitlines()
        print(
            "\n".join(
                x
                for x in lines
                if x.startswith("stt_decode_seconds_") and ("_sum" in x or "_count" in x)
            )
        )
    dropped = (
        await metric_value(http, server.base, "stt_interims_dropped_total", headers)
        - dropped_before
    )
    admitted = [(r, p) for r, p in zip(results, streams, strict=True) if not r.of_type("error")]
    refused = len(results) - len(admitted)
    stats = [analyse(r, p.utterances) for r, p in admitted]
    lat = [x for st in stats for x in st["latencies"]]
    refs = [u["text"] for _, p in admitted for u in p.utterances]
    order = {u["text"]: i for i, u in enumerate(utterances)}
    batch_refs = [batch_hyps[order[u["text"]]] for _, p in admitted for u in p.utterances]
    hyps = [h for st in stats for h in st["hyps"]]
    audio_seconds = sum(len(p.audio) / rate for _, p in admitted)
    return {
        "lat": lat,
        "first": [x for st in stats for x in st["first_interims"]],
        "wer": wer(refs, hyps) if refs else float("nan"),
        "wer_batch": wer(batch_refs, hyps) if refs else float("nan"),
        "lost": sum(st["lost"] for st in stats),
        "refused": refused,
        "extra": sum(st["extra_finals"] for st in stats),
        "interims": sum(st["interims"] for st in stats),
        "dropped": dropped,
        "cpu": cpu / audio_seconds if audio_seconds else float("nan"),
        "rss": sampler.peak_rss,
        "not_prefixed": sum(not_prefixed(r) for r, _ in admitted),
        "diverged": diverged_so_far(server) - diverged_before,
    }


HEADER = (
    f"{'sidecar':<9} {'mode':<5} {'streams':>7} {'final p50':>9} {'p95':>6} {'max':>6} "
    f"{'1st-int p50':>11} {'WER':>6} {'vs batch':>8} {'lost':>5} {'refused':>7} {'extra':>5} "
    f"{'interims':>8} {'dropped':>7} {'cpu/audio':>9} {'RSS MiB':>8} {'load 1m':>7}"
)


def format_row(label: str, mode: str, n: int, r: dict[str, Any]) -> str:
    lat = r["lat"]
    return (
        f"{label:<9} {mode:<5} {n:>7} {pct(lat, 50):>8.2f}s {pct(lat, 95):>5.2f}s "
        f"{max(lat, default=float('nan')):>5.2f}s {pct(r['first'], 50):>10.2f}s "
        f"{r['wer']:>6.3f} {r['wer_batch']:>8.3f} {r['lost']:>5} {r['refused']:>7} "
        f"{r['extra']:>5} {r['interims']:>8} {r['dropped']:>7.0f} {r['cpu']:>9.3f} "
        f"{r['rss']:>8.0f} {os.getloadavg()[0]:>7.2f}"
    )


def holds(r: dict[str, Any], limit: float = 1.0) -> bool:
    return bool(r["lat"]) and pct(r["lat"], 95) <= limit and r["lost"] == 0 and not r["refused"]


async def run(args: argparse.Namespace) -> None:
    audio_path = Path(args.audio)
    timing_path = Path(args.timing or audio_path.with_suffix(".json"))
    timing = json.loads(timing_path.read_text())  # noqa: ASYNC240 (before any traffic)
    utterances = timing["utterances"]
    refs = [u["text"] for u in utterances]
    audio, rate = load_pcm16(audio_path)
    duration = len(audio) / rate

    servers: list[Server] = []
    if args.url:
        servers.append(Server("given", args.url.rstrip("/"), None))
    else:
        # Past the largest N, so the bench measures latency rather than admission.
        env = {"STT_MAX_STREAMS": str(max(args.streams) * 2)}
        if args.baseline:
            process = SidecarProcess(**env, **dict(args.baseline)).start(timeout=120)
            servers.append(Server("baseline", process.url, process.proc.pid, process))
        process = SidecarProcess(**env, **dict(args.sidecar_env)).start(timeout=120)
        servers.append(Server("this", process.url, process.proc.pid, process))
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    rows: list[str] = []
    results: dict[tuple[str, str, int], dict[str, Any]] = {}
    try:
        async with aiohttp.ClientSession() as http:
            base = servers[-1].base
            batch_hyps, batch_times = await batch_transcripts(
                http, base, audio, rate, utterances, headers
            )
            async with http.get(base + "/ready", headers=headers) as r:
                ready = await r.json()
            endpoint_s = args.endpoint_ms / 1000
            baseline = [endpoint_s + t for t in batch_times]
            print(
                f"audio {audio_path.name}: {duration:.1f} s, {len(utterances)} utterances; "
                f"model {ready['model']} {ready['device']}/{ready['compute_type']}; "
                f"{os.cpu_count()} cores, load average {os.getloadavg()}"
            )
            print(
                f"endpoint+batch: latency p50 {pct(baseline, 50):.2f} s "
                f"p95 {pct(baseline, 95):.2f} s; batch WER {wer(refs, batch_hyps):.3f}"
            )
            print(HEADER, flush=True)
            protocols = ["stream", "realtime"] if args.protocol == "realtime" else ["stream"]
            for mode in args.modes:
                for n in args.streams:
                    streams = plans(args, audio, rate, utterances, mode, n)
                    for server in servers:
                        for proto in protocols:
                            label = server.label if proto == "stream" else f"{server.label}/rt"
                            r = await measure(
                                http,
                                server,
                                streams,
                                rate,
                                batch_hyps,
                                utterances,
                                args,
                                headers,
                                proto,
                            )
                            results[(label, mode, n)] = r
                            rows.append(format_row(label, mode, n, r))
                            if proto == "realtime":
                                rows[-1] += (
                                    f"\n{'':<9} items whose deltas do not start their "
                                    f"transcript: {r['not_prefixed']}; finals that disagreed "
                                    f"with the deltas (sidecar log): {r['diverged']}"
                                )
                            print(rows[-1], flush=True)
    finally:
        for server in servers:
            if server.process:
                server.process.stop()
    print("\n" + HEADER)
    print("\n".join(rows))
    labels = dict.fromkeys(label for label, _, _ in results)
    for label in labels:
        for mode in args.modes:
            held = [n for n in args.streams if holds(results[(label, mode, n)])]
            print(
                f"{label} {mode}: largest N with final p95 <= 1.0 s and nothing lost: "
                f"{max(held) if held else 'none'}"
            )


def add_setting_option(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    """A repeatable `FLAG NAME=VALUE` option: environment settings for a sidecar."""
    parser.add_argument(
        flag,
        action="append",
        default=[],
        type=lambda kv: tuple(kv.split("=", 1)),
        metavar="NAME=VALUE",
        help=help,
    )


def add_sidecar_env_option(parser: argparse.ArgumentParser) -> None:
    """`--sidecar-env NAME=VALUE` (repeatable): a setting for the sidecar the script starts."""
    add_setting_option(
        parser,
        "--sidecar-env",
        "setting for the sidecar this script starts (repeatable), e.g. STT_NUM_WORKERS=2",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("audio")
    parser.add_argument("--timing", help="utterance timing JSON (default: AUDIO with .json)")
    parser.add_argument("--streams", default="1,4,8", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--url", help="use a running sidecar instead of starting one")
    parser.add_argument("--api-key")
    parser.add_argument(
        "--endpoint-ms",
        type=int,
        default=450,
        help="endpoint silence assumed by the baseline (STT_ENDPOINT_SILENCE_MS)",
    )
    parser.add_argument(
        "--modes",
        default=["sync"],
        type=lambda s: s.split(","),
        help="sync (all streams start together), turns (seeded random offsets), or both",
    )
    parser.add_argument("--seed", type=int, default=1, help="turns: offsets' seed")
    parser.add_argument(
        "--talk-share",
        type=float,
        default=0.5,
        help="turns: share of each stream's time that is the file (the rest is silence)",
    )
    add_setting_option(
        parser,
        "--baseline",
        "also run every row on a second sidecar with these settings (repeatable), "
        "e.g. PYTHONPATH=/path/to/another/checkout",
    )
    parser.add_argument(
        "--protocol",
        choices=["stream", "realtime"],
        default="stream",
        help="realtime: also run each row over /v1/realtime, beside /v1/stream",
    )
    parser.add_argument("--show-decode-times", action="store_true")
    add_sidecar_env_option(parser)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
