"""Batch benchmark: the sidecar over HTTP next to plain in-process faster-whisper.

    python bench/batch.py tests/data                 # starts its own sidecar
    python bench/batch.py tests/data --url http://127.0.0.1:8765 --api-key KEY

DIR holds audio files and `transcripts.jsonl` ({"audio": file, "text": reference} a line).
Every file is transcribed `--repeat` times by each side, one request at a time, with the same
model directory and the same decode options (`stt_sidecar.whisper_options`). Printed per file
and overall: word error rate, real-time factor (wall time / audio duration), latency p50/p95
(HTTP round trip for the sidecar, decode_audio + transcribe for in-process) and peak RSS of the
process doing the work (the sidecar's, or a fresh child process running faster-whisper).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.sidecar_process import SidecarProcess  # noqa: E402
from tests.speech import wer  # noqa: E402  (the tests' normalisation, so figures match)


@dataclass
class FileRun:
    name: str
    reference: str
    duration: float = 0.0
    hypothesis: str = ""
    latencies: list[float] = field(default_factory=list)


@dataclass
class SideResult:
    label: str
    files: list[FileRun]
    peak_rss_mb: float | None


def read_manifest(directory: Path) -> list[tuple[Path, str]]:
    rows = [
        json.loads(line)
        for line in (directory / "transcripts.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return [(directory / r["audio"], r["text"]) for r in rows]


def peak_rss_mb(pid: int) -> float | None:
    """The kernel's high-water mark of resident memory (Linux); None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# -- the sidecar over HTTP -----------------------------------------------------------------


def post_audio(url: str, audio: bytes, api_key: str | None) -> dict:
    """`POST /transcribe` with the file as a raw body (a new connection each time, as a simple
    client would do)."""
    headers = {"Content-Type": "application/octet-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url + "/transcribe", data=audio, headers=headers)
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def run_sidecar(
    files: list[tuple[Path, str]], url: str, api_key: str | None, repeat: int, pid: int | None
) -> SideResult:
    runs = []
    for path, reference in files:
        run = FileRun(path.name, reference)
        audio = path.read_bytes()
        for _ in range(repeat):
            started = time.perf_counter()
            body = post_audio(url, audio, api_key)
            run.latencies.append(time.perf_counter() - started)
        run.hypothesis, run.duration = body["text"], body["duration"]
        runs.append(run)
    return SideResult("sidecar (HTTP)", runs, peak_rss_mb(pid) if pid else None)


# -- plain faster-whisper in a child process -----------------------------------------------


def _in_process_worker(
    model_name: str,
    device: str,
    files: list[tuple[str, str]],
    repeat: int,
    beam_size: int,
    queue: multiprocessing.Queue,
) -> None:
    from faster_whisper import decode_audio

    from stt_sidecar.model import (
        default_compute_type,
        load_whisper_model,
        pick_device,
        resolve_model,
    )
    from stt_sidecar.whisper_options import DecodeRequest, decode_options

    device = pick_device(device)
    model = load_whisper_model(
        resolve_model(model_name),
        device=device,
        compute_type=default_compute_type(device),
        cpu_threads=0,
        num_workers=1,
    )
    options = decode_options(DecodeRequest(language="en", extra={"beam_size": beam_size}))
    warm = decode_audio(files[0][0])
    list(model.transcribe(warm, **options)[0])  # the sidecar warms up too
    out = []
    for path, _reference in files:
        latencies, text, duration = [], "", 0.0
        for _ in range(repeat):
            started = time.perf_counter()
            audio = decode_audio(path)
            segments, info = model.transcribe(audio, **options)
            text = "".join(s.text for s in segments).strip()
            latencies.append(time.perf_counter() - started)
            duration = info.duration
        out.append((text, duration, latencies))
    queue.put((out, peak_rss_mb(os.getpid())))


def run_in_process(
    files: list[tuple[Path, str]], model: str, device: str, repeat: int, beam_size: int
) -> SideResult:
    ctx = multiprocessing.get_context("spawn")  # a clean process: its peak RSS is its own
    queue: multiprocessing.Queue = ctx.Queue()
    child = ctx.Process(
        target=_in_process_worker,
        args=(model, device, [(str(p), t) for p, t in files], repeat, beam_size, queue),
    )
    child.start()
    out, rss = queue.get()
    child.join()
    runs = []
    for (path, reference), (text, duration, latencies) in zip(files, out, strict=True):
        runs.append(FileRun(path.name, reference, duration, text, latencies))
    label = "faster-whisper in-process" + (f" (beam {beam_size})" if beam_size != 1 else "")
    return SideResult(label, runs, rss)


# -- report --------------------------------------------------------------------------------


def summary(side: SideResult) -> dict:
    latencies = [x for f in side.files for x in f.latencies]
    audio = sum(f.duration * len(f.latencies) for f in side.files)
    return {
        "wer": wer([f.reference for f in side.files], [f.hypothesis for f in side.files]),
        "rtf": sum(latencies) / audio,
        "p50": percentile(latencies, 0.5),
        "p95": percentile(latencies, 0.95),
        "peak_rss_mb": side.peak_rss_mb,
    }


def print_report(sides: list[SideResult]) -> None:
    names = [f.name for f in sides[0].files]
    header = (
        "| file | audio s | "
        + " | ".join(f"{s.label}: WER / RTF / p50 s / p95 s" for s in sides)
        + " |"
    )
    print(header)
    print("|" + "---|" * (2 + len(sides)))
    for i, name in enumerate(names):
        cells = []
        for side in sides:
            f = side.files[i]
            p50, p95 = percentile(f.latencies, 0.5), percentile(f.latencies, 0.95)
            rtf = statistics.fmean(f.latencies) / f.duration
            cells.append(
                f"{wer(f.reference, f.hypothesis):.1%} / {rtf:.3f} / {p50:.3f} / {p95:.3f}"
            )
        print(f"| {name} | {sides[0].files[i].duration:.1f} | " + " | ".join(cells) + " |")
    cells = []
    for side in sides:
        s = summary(side)
        cells.append(f"**{s['wer']:.1%} / {s['rtf']:.3f} / {s['p50']:.3f} / {s['p95']:.3f}**")
    print(
        f"| **all** | {sum(f.duration for f in sides[0].files):.1f} | " + " | ".join(cells) + " |"
    )
    print()
    for side in sides:
        rss = side.peak_rss_mb
        print(f"peak RSS, {side.label}: " + (f"{rss:.0f} MB" if rss else "n/a (remote)"))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--url", help="use a running sidecar instead of starting one")
    parser.add_argument("--api-key", default=os.environ.get("STT_API_KEY") or None)
    parser.add_argument("--model", default="tiny.en", help="STT_MODEL for both sides")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="requests per file and side")
    parser.add_argument(
        "--compare-beam",
        type=int,
        default=0,
        metavar="N",
        help="also run in-process faster-whisper with beam_size=N",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON too")
    args = parser.parse_args()

    files = read_manifest(args.directory)
    sidecar = None
    url = args.url
    if url is None:
        env = {"STT_MODEL": args.model, "STT_DEVICE": args.device}
        if args.api_key:
            env["STT_API_KEY"] = args.api_key
        sidecar = SidecarProcess(**env).start(wait=args.api_key is None)
        if args.api_key:
            from tests.batch_support import wait_ready_with_key

            wait_ready_with_key(sidecar, args.api_key)
        url = sidecar.url
    try:
        sides = [
            run_sidecar(
                files,
                url.rstrip("/"),
                args.api_key,
                args.repeat,
                sidecar.proc.pid if sidecar and sidecar.proc else None,
            )
        ]
    finally:
        if sidecar is not None:
            sidecar.stop()
    sides.append(run_in_process(files, args.model, args.device, args.repeat, beam_size=1))
    if args.compare_beam:
        sides.append(
            run_in_process(files, args.model, args.device, args.repeat, beam_size=args.compare_beam)
        )
    print(
        f"model {args.model} on {args.device}, {len(files)} files x {args.repeat} runs, "
        f"one request at a time, {os.cpu_count()} CPUs\n"
    )
    print_report(sides)
    if args.json:
        print(json.dumps({s.label: summary(s) for s in sides}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
