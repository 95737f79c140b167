"""Self-hosted speech-to-text for LiveKit Agents, served by the faster-whisper sidecar.

Usage: ``AgentSession(stt=custom_stt.STT())`` with the sidecar running (``python -m stt_sidecar``).
"""

from livekit.agents import Plugin

from .log import logger
from .models import STTLanguageOption, STTLanguages, STTModels, STTTasks
from .stt import DEFAULT_CONN_OPTIONS, STT, SpeechStream, STTOptions
from .version import __version__

__all__ = [
    "DEFAULT_CONN_OPTIONS",
    "STT",
    "STTLanguageOption",
    "STTLanguages",
    "STTModels",
    "STTOptions",
    "STTTasks",
    "SpeechStream",
    "__version__",
]


class CustomSTTPlugin(Plugin):
    def __init__(self) -> None:
        super().__init__(__name__, __version__, __package__, logger)


Plugin.register_plugin(CustomSTTPlugin())

# Cleanup docs of unexported modules
_module = dir()
NOT_IN_ALL = [m for m in _module if m not in __all__]

__pdoc__ = {}

for n in NOT_IN_ALL:
    __pdoc__[n] = False
