"""The one audio format inside the sidecar: 16 kHz mono.

Whisper and Silero VAD both take 16 kHz; uploads are decoded to it (`audio_decode.py`) and
streams resampled to it (`streaming/audio_input.py`), so every sample index and duration in
the sidecar counts at this rate.
"""

SAMPLE_RATE = 16000
