"""Batch benchmark: the sidecar over HTTP next to plain in-process faster-whisper.

    python bench/batch.py tests/data                 # starts its own sidecar
    python bench/batch.py tests/data --url http://127.0.0.1:8765 --api-key KEY
    python bench/batch.py tests/data --compare-beam 5

DIR holds audio files and `transcripts.jsonl` ({"audio": file, "text": reference} a line).
Both sides use the same model directory and the same decode options
(`stt_sidecar.whisper_options`). Requests go one at a time and are interleaved (file by file,
side by side, order rotated each round) so that load from elsewhere on the machine hits both
sides alike. Printed per file and overall: word error rate, real-time factor (wall time / audio
duration), latency p50/p95 (HTTP round trip for the sidecar; decode_audio + transcribe for
in-process) and the peak RSS of the process doing the work (the sidecar's, or a child process
running faster-whisper).
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
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol

from tests.support.sidecar import SidecarProcess
from tests.support.speech import wer  # the tests' normalisation, so figures match


@dataclass
class FileRun:
    name: str
    reference: str
    duration: float = 0.0
    hypothesis: str = ""
    latencies: list[float] = field(default_factory=list)


class Side(Protocol):
    label: str

    def transcribe(self, path: Path) -> tuple[str, float]:
        """Text and audio duration for one file."""
        ...

    def peak_rss_mb(self) -> float | None: ...

    def close(self) -> None: ...


def read_manifest(directory: Path) -> list[tuple[Path, str]]:
    lines = (directory / "transcripts.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
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
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- the sidecar over HTTP -----------------------------------------------------------------


class SidecarSide:
    """`POST /transcribe` with the file as a raw body, a new connection each time."""

    label = "sidecar (HTTP)"

    def __init__(self, url: str, api_key: str | None, pid: int | None) -> None:
        self._url = url.rstrip("/") + "/transcribe"
        self._headers = {"Content-Type": "application/octet-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._pid = pid

    def transcribe(self, path: Path) -> tuple[str, float]:
        request = urllib.request.Request(self._url, data=path.read_bytes(), headers=self._headers)
        with urllib.request.urlopen(request, timeout=600) as response:
            body = json.loads(response.read())
        return body["text"], body["duration"]

    def peak_rss_mb(self) -> float | None:
        return peak_rss_mb(self._pid) if self._pid else None

    def close(self) -> None:
        pass


# -- plain faster-whisper in a child process -----------------------------------------------


def _in_process_worker(model_name: str, device: str, beam_size: int, conn: Connection) -> None:
    """Child process: load the model like the sidecar does, then transcribe paths sent over
    `conn` until None arrives, answering (text, duration) and finally the peak RSS."""
    from faster_whisper import decode_audio

    from stt_sidecar.app import read_warmup_audio
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
    list(model.transcribe(read_warmup_audio(), **options)[0])  # the sidecar warms up too
    conn.send("ready")
    while (path := conn.recv()) is not None:
        segments, info = model.transcribe(decode_audio(path), **options)
        conn.send(("".join(s.text for s in segments).strip(), info.duration))
    conn.send(peak_rss_mb(os.getpid()))


class InProcessSide:
    def __init__(self, model: str, device: str, beam_size: int) -> None:
        self.label = "faster-whisper in-process" + (f", beam {beam_size}" if beam_size > 1 else "")
        ctx = multiprocessing.get_context("spawn")  # a clean process: its peak RSS is its own
        self._conn, child_conn = ctx.Pipe()
        self._child = ctx.Process(
            target=_in_process_worker, args=(model, device, beam_size, child_conn), daemon=True
        )
        self._child.start()
        assert self._conn.recv() == "ready"
        self._peak: float | None = None

    def transcribe(self, path: Path) -> tuple[str, float]:
        self._conn.send(str(path))
        return self._conn.recv()

    def peak_rss_mb(self) -> float | None:
        return self._peak

    def close(self) -> None:
        self._conn.send(None)
        self._peak = self._conn.recv()
        self._child.join(10)


# -- run and report ------------------------------------------------------------------------


def run(sides: list[Side], files: list[tuple[Path, str]], repeat: int) -> dict[str, list[FileRun]]:
    results = {s.label: [FileRun(p.name, ref) for p, ref in files] for s in sides}
    for round_ in range(repeat):
        for index, (path, _reference) in enumerate(files):
            shift = (round_ + index) % len(sides)  # nobody always goes first
            for side in sides[shift:] + sides[:shift]:
                started = time.perf_counter()
                text, duration = side.transcribe(path)
                file_run = results[side.label][index]
                file_run.latencies.append(time.perf_counter() - started)
                file_run.hypothesis, file_run.duration = text, duration
    return results


def summary(runs: list[FileRun]) -> dict[str, float]:
    latencies = [x for f in runs for x in f.latencies]
    audio = sum(f.duration * len(f.latencies) for f in runs)
    return {
        "wer": wer([f.reference for f in runs], [f.hypothesis for f in runs]),
        "rtf": sum(latencies) / audio,
        "p50": percentile(latencies, 0.5),
        "p95": percentile(latencies, 0.95),
    }


def _cell(error: float, rtf: float, p50: float, p95: float) -> str:
    return f"{error:.1%} / {rtf:.3f} / {p50:.2f} / {p95:.2f}"


def print_report(results: dict[str, list[FileRun]], rss: dict[str, float | None]) -> None:
    labels = list(results)
    first = results[labels[0]]
    print(
        "| file | audio s | " + " | ".join(f"{x}: WER / RTF / p50 s / p95 s" for x in labels) + " |"
    )
    print("|" + "---|" * (2 + len(labels)))
    for i, file_run in enumerate(first):
        cells = []
        for label in labels:
            f = results[label][i]
            cells.append(
                _cell(
                    wer(f.reference, f.hypothesis),
                    statistics.fmean(f.latencies) / f.duration,
                    percentile(f.latencies, 0.5),
                    percentile(f.latencies, 0.95),
                )
            )
        print(f"| {file_run.name} | {file_run.duration:.1f} | " + " | ".join(cells) + " |")
    totals = []
    for label in labels:
        s = summary(results[label])
        totals.append(f"**{_cell(s['wer'], s['rtf'], s['p50'], s['p95'])}**")
    total_audio = sum(f.duration for f in first)
    print(f"| **all** | {total_audio:.1f} | " + " | ".join(totals) + " |")
    print(
        "| peak RSS | | "
        + " | ".join(f"{rss[label]:.0f} MB" if rss[label] else "n/a (remote)" for label in labels)
        + " |"
    )


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
    sidecar: SidecarProcess | None = None
    sides: list[Side] = []
    try:
        url = args.url
        if url is None:
            env = {"STT_MODEL": args.model, "STT_DEVICE": args.device}
            if args.api_key:
                env["STT_API_KEY"] = args.api_key
            sidecar = SidecarProcess(**env).start()  # its readiness probe sends the key
            url = sidecar.url
        pid = sidecar.proc.pid if sidecar is not None and sidecar.proc else None
        sides.append(SidecarSide(url, args.api_key, pid))
        sides.append(InProcessSide(args.model, args.device, beam_size=1))
        if args.compare_beam > 1:
            sides.append(InProcessSide(args.model, args.device, beam_size=args.compare_beam))
        results = run(sides, files, args.repeat)
        rss: dict[str, float | None] = {}
        for side in sides:
            rss[side.label] = side.peak_rss_mb()  # the sidecar's, read while it still runs
            side.close()
            rss[side.label] = rss[side.label] or side.peak_rss_mb()
    finally:
        if sidecar is not None:
            sidecar.stop()
    print(
        f"model {args.model} on {args.device}, {len(files)} files x {args.repeat} rounds, "
        f"one request at a time, interleaved, {os.cpu_count()} CPUs\n"
    )
    print_report(results, rss)
    if args.json:
        print(json.dumps({label: summary(runs) for label, runs in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
