"""Prometheus metrics, one registry per app so several apps can live in one process (tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_DECODE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class SidecarMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "stt_http_requests",
            "Batch transcription requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.batch_audio_seconds = Counter(
            "stt_batch_audio_seconds", "Seconds of audio transcribed by batch requests", registry=r
        )
        self.active_streams = Gauge("stt_active_streams", "Open streaming sessions", registry=r)
        self.streams_opened = Counter(
            "stt_streams_opened",
            "Streams admitted, by protocol (stream: /v1/stream, realtime: /v1/realtime)",
            ["protocol"],
            registry=r,
        )
        self.open_streams = Gauge(
            "stt_open_streams", "Open streaming sessions by protocol", ["protocol"], registry=r
        )
        self.rejected_streams = Counter(
            "stt_rejected_streams",
            "Streams refused because STT_MAX_STREAMS was reached",
            registry=r,
        )
        self.stream_audio_seconds = Counter(
            "stt_stream_audio_seconds", "Seconds of audio received over WebSocket", registry=r
        )
        self.decode_seconds = Histogram(
            "stt_decode_seconds",
            "Model time per decode",
            ["kind"],
            buckets=_DECODE_BUCKETS,
            registry=r,
        )
        self.final_latency = Histogram(
            "stt_final_latency_seconds",
            "From the VAD's end of speech (in stream time) to the final being sent",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.interims_dropped = Counter(
            "stt_interims_dropped",
            "Interims superseded, skipped under load or not sent",
            registry=r,
        )
        self.endpoints = Counter(
            "stt_endpoints",
            "Utterances ended by silence, by the silence that ended them: short (a finished"
            " sentence), default (STT_ENDPOINT_SILENCE_MS) or long (a visibly unfinished one)",
            ["decision"],
            registry=r,
        )
        self.continuations = Counter(
            "stt_continuations",
            "Final decodes of an utterance that started right after the last one, by outcome:"
            " kept (decoded after the last one's audio) or alone (decoded again on its own: a"
            " loop, or no word of its own)",
            ["outcome"],
            registry=r,
        )
        self.skipped_speech = Counter(
            "stt_skipped_speech",
            "Final decodes (speculative ones included) that stopped a second or more before"
            " the end of speech, whose rest was decoded on its own",
            registry=r,
        )
        self.finals_sent = Counter("stt_finals_sent", "Final transcripts sent", registry=r)
        self.queue_depth = Gauge(
            "stt_decode_queue_depth", "Decodes waiting for the model", registry=r
        )
        self.errors = Counter("stt_errors", "Errors sent to clients by code", ["code"], registry=r)
