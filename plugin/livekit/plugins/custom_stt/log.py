import logging

logger = logging.getLogger("livekit.plugins.custom_stt")
