"""The transcription worker: `python agent/main.py dev|start|connect --room X`.

Every remote participant's microphone is streamed through `custom_stt.STT` to the sidecar and
each transcript is published into the room (see `agent.publisher`). The module-level `server`
is what `lk agent dev` and `python -m livekit.agents start agent/main.py` discover; it is built
on first use, so importing this module (as every job process does, to find `entrypoint`) reads
no `.env`, changes no environment variable and creates no directory.

Before registering with LiveKit the worker waits (bounded by `SIDECAR_READY_TIMEOUT_S`) for the
sidecar's `/ready`, and afterwards reports its load from the sidecar's (see `agent.capacity`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import warnings
from collections.abc import Awaitable, Callable
from typing import cast

from livekit.agents import (
    AgentServer,
    AutoSubscribe,
    JobContext,
    JobExecutorType,
    cli,
)
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given
from livekit.plugins import custom_stt

from agent.agent_state import AgentStateAnnouncer
from agent.capacity import LoadReporter, ensure_streams_dir, process_stream_counter
from agent.livekit_ready import wait_for_livekit
from agent.publisher import TranscriptPublisher
from agent.settings import WorkerSettings, load_env_file
from agent.sidecar_ready import SidecarNotReadyError, wait_until_ready
from agent.transcriber import RoomTranscriber

logger = logging.getLogger("agent")


class TranscriptionServer(AgentServer):
    """An `AgentServer` that waits for the STT sidecar before it starts taking jobs.

    Overriding `run` (rather than waiting in `__main__`) makes the wait happen however the
    server is started: this file's CLI, `lk agent dev`, or `python -m livekit.agents start`.
    """

    def __init__(
        self, settings: WorkerSettings, *, load_fnc: LoadReporter, **kwargs: object
    ) -> None:
        super().__init__(load_fnc=load_fnc, **kwargs)  # type: ignore[arg-type]
        self.settings = settings
        self.load_reporter = load_fnc
        # `AgentServer.aclose()` reads this attribute, which only `run()` creates: without it,
        # closing a server whose run() stopped in the sidecar wait raises AttributeError.
        self._close_future = None
        self.sidecar_failed = False

    async def run(self, *, devmode: bool = False, unregistered: bool = False) -> None:
        """Wait for the sidecar's `/ready`, then run the worker as `AgentServer.run` does.

        If the sidecar is not ready within `SIDECAR_READY_TIMEOUT_S`, the reason is logged as one
        error line (not a traceback), `sidecar_failed` is set and this returns without
        registering, which ends the CLI; `python agent/main.py` then exits with status 1.
        """
        s = self.settings
        # job processes inherit the directory through the environment, so set it up first
        self.load_reporter.streams_dir = ensure_streams_dir()
        logger.info(
            "transcription worker: STT sidecar %s, topic %r, interims %s, agent name %r",
            s.stt_url,
            s.transcript_topic,
            "on" if s.publish_interims else "off",
            s.agent_name or "(automatic dispatch)",
        )
        try:
            await wait_until_ready(s.stt_url, s.stt_api_key, timeout=s.sidecar_ready_timeout_s)
        except SidecarNotReadyError as exc:
            logger.error("not starting the worker: %s", exc)
            self.sidecar_failed = True
            return
        if not unregistered:
            # the framework's own retries say only "failed to connect" every 10 s; say what to do
            await wait_for_livekit(s.livekit_url or "ws://localhost:7880")
        await super().run(devmode=devmode, unregistered=unregistered)

    def _get_effective_load(self) -> float:
        """The load LiveKit's offers are judged by: reported load plus rooms accepted but not
        yet running, each counted as one stream of this worker's budget.

        livekit-agents 1.8 counts such a room as `load_threshold / num_idle_processes` (0.9 in
        `dev`, where no process is kept warm): a second room offered while the first job's
        process starts (about 3 s) was refused, and LiveKit never offers a refused room again
        (seen live). A room costs a stream per speaker, which `load_fnc` counts once it runs.
        """
        pending = self._reserved_slots  # framework state: accepted, not yet launched
        return self._worker_load + pending / self.load_reporter.stream_budget()

    async def drain(self, timeout: NotGivenOr[int | None] = NOT_GIVEN) -> None:
        """On SIGTERM/SIGINT in `start` mode: stop at once rather than wait for rooms to end.

        The framework's drain waits up to `drain_timeout` (an hour) for every job to finish,
        which suits a conversation but not a transcriber that runs as long as its room. So
        draining here only stops new rooms; `aclose()`, which the CLI calls next, shuts each
        job down, and a job's shutdown publishes the final of the utterance in progress
        (`RoomTranscriber.aclose`) before it leaves the room. A server stopped while it was
        still waiting for the sidecar has nothing to drain (and no process pool yet).
        """
        if not hasattr(self, "_proc_pool"):
            return
        # jobs never end by themselves: the timeout only marks the worker draining. It must be
        # truthy (the framework treats 0 as "no timeout"); it is typed int but used as seconds.
        short = cast(int, 0.01)
        with contextlib.suppress(asyncio.TimeoutError):
            await super().drain(timeout=timeout if is_given(timeout) else short)


def build_server(worker_settings: WorkerSettings) -> TranscriptionServer:
    """The worker for `worker_settings`, with `entrypoint` registered; no side effects.

    The entrypoint stays a module-level function (job processes import it by name) and reads
    `process_settings()`, which every process builds from the same environment.
    """
    executor = {"process": JobExecutorType.PROCESS, "thread": JobExecutorType.THREAD}
    extra: dict[str, object] = {}
    if worker_settings.idle_processes is not None:
        extra["num_idle_processes"] = worker_settings.idle_processes
    if worker_settings.http_port is not None:
        extra["port"] = worker_settings.http_port
    new_server = TranscriptionServer(
        worker_settings,
        job_executor_type=executor[worker_settings.job_executor],
        host=worker_settings.http_host,
        **extra,
        load_fnc=LoadReporter(worker_settings, None),  # its streams_dir is set by run()
        # the load is the sidecar's, so "full" means the same in dev and in production
        load_threshold=worker_settings.load_threshold,
    )
    new_server.rtc_session(
        entrypoint, agent_name=worker_settings.agent_name, on_session_end=session_end
    )
    return new_server


_running: dict[str, Callable[[str], Awaitable[None]]] = {}
"""Each running job's closer, by job id (jobs may be threads of one process)."""


async def session_end(ctx: JobContext) -> None:
    """Close the room's transcribers while the room is still connected.

    livekit-agents 1.8 ends a job (room closed, SIGTERM, worker stop) in this order:
    `on_session_end`, then `room.disconnect()`, then the shutdown callbacks. Found live: closing
    in a shutdown callback lost the final of the utterance in progress ("room closed: channel
    closed"); here it is published before the worker leaves.
    """
    closer = _running.pop(ctx.job.id, None)
    if closer is not None:
        await closer("session end")


async def entrypoint(ctx: JobContext) -> None:
    """One job = one room: transcribe every participant's microphone until the room ends."""
    settings = process_settings()
    ctx.log_context_fields = {"room": ctx.room.name}
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    # lk.agent.state: the agents playground shows no transcript until it reads "listening"
    agent_state = AgentStateAnnouncer(ctx.room.local_participant, ctx.room)
    await agent_state.start()

    stt = custom_stt.STT(
        base_url=settings.stt_url, api_key=settings.stt_api_key, language=settings.language
    )
    publisher = TranscriptPublisher(
        ctx.room.local_participant,
        topic=settings.transcript_topic,
        interims=settings.publish_interims,
        legacy=settings.publish_legacy_transcription,
    )
    room_transcriber = RoomTranscriber(
        ctx.room, stt=stt, publisher=publisher, counter=process_stream_counter()
    )

    closed = False

    async def _shutdown(reason: str) -> None:
        nonlocal closed
        _running.pop(ctx.job.id, None)
        if closed:
            return
        closed = True
        logger.info("room %s ends (%s): closing its transcribers", ctx.room.name, reason)
        await room_transcriber.aclose()
        await stt.aclose()
        await agent_state.aclose()

    _running[ctx.job.id] = _shutdown
    # a fallback only: shutdown callbacks run after the room is disconnected, too late to
    # publish (`session_end` below is the one that delivers the in-flight finals)
    ctx.add_shutdown_callback(_shutdown)
    room_transcriber.start()
    logger.info(
        "transcribing room %s (%d remote participants)",
        ctx.room.name,
        len(ctx.room.remote_participants),
    )


@functools.cache
def process_settings() -> WorkerSettings:
    """This process's settings: the cwd's `.env` (never over real variables), then the
    environment. Read once, when the worker starts or a job process runs its first job.

    Raises:
        SettingsError: a variable is set to a value the worker cannot use.
    """
    load_env_file()
    settings = WorkerSettings.from_env()
    if settings.livekit_api_secret == "secret":
        # `livekit-server --dev`'s 6-byte secret: PyJWT would warn about it on every token
        warnings.filterwarnings("ignore", message="The HMAC key is")
    return settings


server: TranscriptionServer
"""The global that `lk agent dev` / `python -m livekit.agents start agent/main.py` discover
(through `dir()` and `getattr`); `__getattr__` builds it from `process_settings()` on first use."""


def __getattr__(name: str) -> object:
    if name == "server":
        built = globals()["server"] = build_server(process_settings())
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "server"})


def main() -> None:
    """`python agent/main.py dev|start|connect ...`: exits 1 if the sidecar never got ready."""
    worker = build_server(process_settings())
    try:
        cli.run_app(worker)  # exits through SystemExit, hence the finally
    finally:
        if worker.sidecar_failed:
            sys.exit(1)


if __name__ == "__main__":
    main()
