"""Streaming finals under a batch flood, and batch memory (issue #10).

    python bench/flood.py tests/data/conversation.wav --streams 1 --rounds 2

One sidecar at the defaults. Each round runs, back to back on the same server:

- **rest**: N real-time streams of AUDIO (20 ms frames, as bench/stream.py), nothing else;
- **flood**: `STT_MAX_PENDING` (8) uploads of a ~590 s speech recording (the clips of
  tests/data joined with pauses, made at run time) sent at once; the same N streams start 4 s
  later. The round ends when every upload has answered.

Printed: final latency (arrival of an utterance's last final minus its true end of speech)
p50 / p95 / max for each phase side by side, the uploads' answer times and WER, and the
sidecar's peak RSS during the flood (`STT_MAX_PENDING` concurrent maximum-length uploads).
`--sidecar-env PYTHONPATH=/path/to/an/older/checkout` runs another version of the server
with the same client, for before/after figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp
import psutil

from bench.stream import ResourceSampler, add_sidecar_env_option, analyse, pct
from stt_sidecar.replay import load_pcm16, replay
from tests.support.long_audio import long_speech, wav_bytes
from tests.support.sidecar import SidecarProcess
from tests.support.speech import wer

ROOT = Path(__file__).resolve().parent.parent

STREAM_DELAY_S = 4.0  # as in the issue: the streams start once the uploads are decoding


async def streams(
    ws_url: str, audio, rate: int, n: int, utterances
) -> tuple[list[float], int, str]:
    """Latencies, utterances lost, and how the streams ended (close codes, error codes)."""
    results = await asyncio.gather(
        *(replay(ws_url, audio, rate, speed=1.0, timeout=600) for _ in range(n))
    )
    stats = [analyse(r, utterances) for r in results]
    ends = sorted(
        {f"{r.close_code}" + "".join(f" {m['code']}" for m in r.of_type("error")) for r in results}
    )
    return [x for s in stats for x in s["latencies"]], sum(s["lost"] for s in stats), ",".join(ends)


async def upload(http: aiohttp.ClientSession, base: str, wav: bytes) -> tuple[float, str, int]:
    form = aiohttp.FormData()
    form.add_field("file", wav, filename="long.wav", content_type="audio/wav")
    form.add_field("model", "whisper-1")
    started = time.monotonic()
    async with http.post(
        base + "/v1/audio/transcriptions", data=form, timeout=aiohttp.ClientTimeout(total=1800)
    ) as r:
        body = await r.json()
    return time.monotonic() - started, body.get("text", ""), r.status


def row(label: str, lat: list[float], lost: int, ends: str = "") -> str:
    return (
        f"{label:<22} {pct(lat, 50):>8.2f}s {pct(lat, 95):>7.2f}s {max(lat, default=0):>7.2f}s "
        f"{len(lat):>7} {lost:>5}  {ends}"
    )


async def run(args: argparse.Namespace) -> None:
    audio_path = Path(args.audio)
    utterances = json.loads(audio_path.with_suffix(".json").read_text())["utterances"]
    audio, rate = load_pcm16(audio_path)
    long_pcm, long_ref = long_speech(args.upload_seconds)
    wav = wav_bytes(long_pcm)
    print(
        f"uploads: {args.uploads} x {len(long_pcm) / 16000:.0f} s WAV ({len(wav) / 2**20:.1f} MiB)"
        f"; streams: {args.streams} x {audio_path.name}; load average {psutil.getloadavg()}"
    )
    env = {"STT_MAX_PENDING": str(args.uploads), **dict(args.sidecar_env)}
    sidecar = SidecarProcess(**env).start(timeout=120)
    ws_url = sidecar.ws_url
    proc = psutil.Process(sidecar.proc.pid)
    rest_all: list[float] = []
    flood_all: list[float] = []
    rows: list[str] = []
    try:
        async with aiohttp.ClientSession() as http:
            await streams(ws_url, audio, rate, 2, utterances)  # warm-up (both workers)
            idle_rss = proc.memory_info().rss / 2**20
            for round_ in range(1, args.rounds + 1):
                lat, lost, ends = await streams(ws_url, audio, rate, args.streams, utterances)
                rest_all += lat
                rows.append(row(f"round {round_}: at rest", lat, lost, ends))
                sampler = ResourceSampler(sidecar.proc.pid)
                with sampler:
                    jobs = [
                        asyncio.create_task(upload(http, sidecar.url, wav))
                        for _ in range(args.uploads)
                    ]
                    await asyncio.sleep(STREAM_DELAY_S)
                    lat, lost, ends = await streams(ws_url, audio, rate, args.streams, utterances)
                    flood_all += lat
                    rows.append(row(f"round {round_}: flood", lat, lost, ends))
                    answers = await asyncio.gather(*jobs)
                times = [t for t, _, _ in answers]
                statuses = sorted({s for _, _, s in answers})
                rows.append(
                    f"{'':<22} uploads: status {statuses}, answered in "
                    f"{min(times):.0f}-{max(times):.0f} s, WER "
                    f"{wer([long_ref] * len(answers), [t for _, t, _ in answers]):.3f}; "
                    f"peak RSS {sampler.peak_rss:.0f} MiB (idle {idle_rss:.0f}), after "
                    f"{proc.memory_info().rss / 2**20:.0f} MiB"
                )
                print(rows[-3], rows[-2], rows[-1], sep="\n", flush=True)
    finally:
        sidecar.stop()
    header = (
        f"{'phase':<22} {'final p50':>9} {'p95':>8} {'max':>8} {'finals':>7} {'lost':>5}"
        "  stream end (close code, errors)"
    )
    print("\n" + header)
    print("\n".join(rows))
    print(row("all rounds: at rest", rest_all, 0))
    print(row("all rounds: flood", flood_all, 0))
    print(
        f"flood minus rest: p50 {pct(flood_all, 50) - pct(rest_all, 50):+.2f} s, "
        f"p95 {pct(flood_all, 95) - pct(rest_all, 95):+.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("audio", nargs="?", default=str(ROOT / "tests/data/conversation.wav"))
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--uploads", type=int, default=8, help="STT_MAX_PENDING (default 8)")
    parser.add_argument("--upload-seconds", type=float, default=590.0)
    parser.add_argument("--rounds", type=int, default=1)
    add_sidecar_env_option(parser)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
