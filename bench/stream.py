"""Streaming benchmark: N concurrent real-time WebSocket streams against the sidecar.

    python bench/stream.py tests/data/conversation.wav --streams 1,4,8

AUDIO comes with a timing JSON (default: AUDIO with .json; the format of
shared/speech/conversation.json: utterances with start/end, speech_start/speech_end, text).
Each of the N clients replays the file at real-time pace in 20 ms frames, all at once (the
worst case: every stream's utterances end together). Printed per N, beside a baseline measured
in the same run ("endpoint + batch": wait STT_ENDPOINT_SILENCE_MS of silence, then send the
utterance to the batch endpoint, one at a time):

- final latency from the true end of speech (p50 / p95 / max) -- the time the last final of an
  utterance arrived, minus its `speech_end`
- first-interim latency from the true start of speech (p50 / p95)
- WER against the references, and against batch transcripts of the same utterances
- utterances lost (no final), interims sent and dropped
- sidecar CPU seconds per second of audio, and its peak RSS

`--protocol realtime` runs every N twice in the same run, over `/v1/stream` and then over
`/v1/realtime` (OpenAI's Realtime transcription: 24 kHz PCM in base64 appends, events mapped
back to finals; "interims" counts deltas), so the two protocols' rows sit side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
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


async def batch_transcripts(
    http: aiohttp.ClientSession, base: str, audio: np.ndarray, rate: int, utterances, headers
) -> tuple[list[str], list[float]]:
    """Each utterance's clip through POST /v1/audio/transcriptions: text and round-trip time."""
    texts, times = [], []
    for u in utterances:
        clip = audio[int(u["start"] * rate) : int(u["end"] * rate)]
        wav = io.BytesIO()
        soundfile.write(wav, clip, rate, format="WAV", subtype="PCM_16")
        form = aiohttp.FormData()
        form.add_field("file", wav.getvalue(), filename="clip.wav", content_type="audio/wav")
        form.add_field("model", "whisper-1")
        form.add_field("response_format", "json")
        started = time.monotonic()
        async with http.post(base + "/v1/audio/transcriptions", data=form, headers=headers) as r:
            body = await r.json()
        times.append(time.monotonic() - started)
        texts.append(body["text"])
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


async def run(args: argparse.Namespace) -> None:
    audio_path = Path(args.audio)
    timing_path = Path(args.timing or audio_path.with_suffix(".json"))
    timing = json.loads(timing_path.read_text())  # noqa: ASYNC240 (before any traffic)
    utterances = timing["utterances"]
    refs = [u["text"] for u in utterances]
    audio, rate = load_pcm16(audio_path)
    duration = len(audio) / rate

    sidecar = None
    if args.url:
        base = args.url.rstrip("/")
        pid = None
    else:
        env = {"STT_MAX_STREAMS": str(max(args.streams) * 2), **dict(args.sidecar_env)}
        sidecar = SidecarProcess(**env).start()
        base, pid = sidecar.url, sidecar.proc.pid
    ws_url = base.replace("http", "ws", 1) + "/v1/stream"
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    try:
        async with aiohttp.ClientSession() as http:
            batch_hyps, batch_times = await batch_transcripts(
                http, base, audio, rate, utterances, headers
            )
            async with http.get(base + "/ready", headers=headers) as r:
                ready = await r.json()
            endpoint_s = args.endpoint_ms / 1000
            baseline = [endpoint_s + t for t in batch_times]
            print(
                f"audio {audio_path.name}: {duration:.1f} s, {len(utterances)} utterances; "
                f"model {ready['model']} {ready['device']}/{ready['compute_type']}"
            )
            print(
                f"baseline endpoint+batch: latency p50 {pct(baseline, 50):.2f} s "
                f"p95 {pct(baseline, 95):.2f} s; batch WER {wer(refs, batch_hyps):.3f}"
            )
            header = (
                f"{'proto':>8} {'streams':>7} {'final p50':>9} {'p95':>6} {'max':>6} "
                f"{'1st-int p50':>11} {'p95':>6} {'WER':>6} {'vs batch':>8} {'lost':>5} "
                f"{'extra':>5} {'interims':>8} {'dropped':>7} {'cpu/audio':>9} {'RSS MiB':>8}"
            )
            print(header)
            protocols = ["stream", "realtime"] if args.protocol == "realtime" else ["stream"]
            for n, proto in ((n, p) for n in args.streams for p in protocols):
                dropped_before = await metric_value(
                    http, base, "stt_interims_dropped_total", headers
                )
                sampler = ResourceSampler(pid)
                cpu_before = sampler.cpu_seconds()
                with sampler:
                    if proto == "stream":
                        runs = (
                            replay(
                                ws_url,
                                audio,
                                rate,
                                speed=1.0,
                                api_key=args.api_key,
                                session=http,
                                timeout=300,
                            )
                            for _ in range(n)
                        )
                        results = await asyncio.gather(*runs)
                    else:
                        realtime_runs = (
                            replay_realtime(
                                base,
                                audio[:, 0],
                                speed=1.0,
                                api_key=args.api_key,
                                session=http,
                                timeout=300,
                            )
                            for _ in range(n)
                        )
                        results = [
                            as_stream_result(e) for e in await asyncio.gather(*realtime_runs)
                        ]
                cpu = sampler.cpu_seconds() - cpu_before
                if args.show_decode_times:
                    async with http.get(base + "/metrics", headers=headers) as r:
                        lines = (await r.text()).splitlines()
                    print(
                        "\n".join(
                            x
                            for x in lines
                            if x.startswith("stt_decode_seconds_")
                            and ("_sum" in x or "_count" in x)
                        )
                    )
                dropped = (
                    await metric_value(http, base, "stt_interims_dropped_total", headers)
                    - dropped_before
                )
                stats = [analyse(r, utterances) for r in results]
                lat = [x for s in stats for x in s["latencies"]]
                first = [x for s in stats for x in s["first_interims"]]
                all_refs = refs * n
                hyps = [h for s in stats for h in s["hyps"]]
                print(
                    f"{proto:>8} {n:>7} {pct(lat, 50):>8.2f}s {pct(lat, 95):>5.2f}s "
                    f"{max(lat):>5.2f}s "
                    f"{pct(first, 50):>10.2f}s {pct(first, 95):>5.2f}s "
                    f"{wer(all_refs, hyps):>6.3f} {wer(batch_hyps * n, hyps):>8.3f} "
                    f"{sum(s['lost'] for s in stats):>5} "
                    f"{sum(s['extra_finals'] for s in stats):>5} "
                    f"{sum(s['interims'] for s in stats):>8} {dropped:>7.0f} "
                    f"{cpu / (duration * n):>9.3f} {sampler.peak_rss:>8.0f}"
                )
    finally:
        if sidecar:
            sidecar.stop()


def add_sidecar_env_option(parser: argparse.ArgumentParser) -> None:
    """`--sidecar-env NAME=VALUE` (repeatable): a setting for the sidecar the script starts."""
    parser.add_argument(
        "--sidecar-env",
        action="append",
        default=[],
        type=lambda kv: tuple(kv.split("=", 1)),
        metavar="NAME=VALUE",
        help="setting for the sidecar this script starts (repeatable), e.g. STT_NUM_WORKERS=2",
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
    parser.add_argument("--show-decode-times", action="store_true")
    parser.add_argument(
        "--protocol",
        choices=["stream", "realtime"],
        default="stream",
        help="realtime: also run each N over /v1/realtime, beside /v1/stream",
    )
    add_sidecar_env_option(parser)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
