"""Joining and verifying a model split across PyPI packages (stt_sidecar.packaged_models)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stt_sidecar.packaged_models import (
    SIDE_FILES,
    PackagedModel,
    PackagedModelError,
    assemble,
    packaged_model_dir,
)

PART1 = b"first half of a CTranslate2 model " * 1000
PART2 = b"second half" * 777


def make_parts(root: Path, part1: bytes = PART1, part2: bytes = PART2) -> list[Path]:
    dirs = [root / "pkg_1" / "data", root / "pkg_2" / "data"]
    for d in dirs:
        d.mkdir(parents=True)
    (dirs[0] / "model.bin.part1").write_bytes(part1)
    (dirs[1] / "model.bin.part2").write_bytes(part2)
    for name in SIDE_FILES:
        (dirs[1] / name).write_text(f'{{"file": "{name}"}}')
    return dirs


def model_for(joined: bytes) -> PackagedModel:
    return PackagedModel(
        name="tiny-test",
        packages=("pkg_1", "pkg_2"),
        size=len(joined),
        sha256=hashlib.sha256(joined).hexdigest(),
    )


def test_parts_are_joined_in_order_with_the_side_files(tmp_path: Path) -> None:
    target = assemble(model_for(PART1 + PART2), make_parts(tmp_path), tmp_path / "cache")
    assert (target / "model.bin").read_bytes() == PART1 + PART2
    assert sorted(p.name for p in target.iterdir()) == sorted(["model.bin", *SIDE_FILES])
    assert target.name == f"tiny-test-{hashlib.sha256(PART1 + PART2).hexdigest()[:12]}"


def test_a_second_start_reuses_the_assembled_directory(tmp_path: Path) -> None:
    parts = make_parts(tmp_path)
    model = model_for(PART1 + PART2)
    first = assemble(model, parts, tmp_path / "cache")
    stamp = (first / "model.bin").stat().st_mtime_ns
    (parts[0] / "model.bin.part1").unlink()  # the packages are no longer read
    assert assemble(model, parts, tmp_path / "cache") == first
    assert (first / "model.bin").stat().st_mtime_ns == stamp


def test_a_tampered_part_is_refused_and_leaves_nothing_behind(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    tampered = PART1[:-1] + b"!"
    with pytest.raises(PackagedModelError, match="SHA-256"):
        assemble(model_for(PART1 + PART2), make_parts(tmp_path, part1=tampered), cache)
    assert list(cache.iterdir()) == []


def test_a_truncated_part_is_refused_by_size(tmp_path: Path) -> None:
    with pytest.raises(PackagedModelError, match="bytes, expected"):
        assemble(model_for(PART1 + PART2), make_parts(tmp_path, part2=PART2[:-10]), tmp_path)


def test_missing_side_files_are_named(tmp_path: Path) -> None:
    parts = make_parts(tmp_path)
    (parts[1] / "tokenizer.json").unlink()
    with pytest.raises(PackagedModelError, match=r"lacks tokenizer\.json"):
        assemble(model_for(PART1 + PART2), parts, tmp_path / "cache")


def test_unknown_or_uninstalled_names_fall_through(tmp_path: Path) -> None:
    assert packaged_model_dir("large-v3", tmp_path) is None  # not a packaged model
    assert packaged_model_dir("tiny.en", tmp_path) is None  # bundled elsewhere
