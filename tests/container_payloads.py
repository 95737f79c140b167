"""Uploads that make a permissive FFmpeg open other files or sockets (issue #10), built at run
time: playlists, concat lists, SDP, manifests, image sequences, and real containers that point
outside themselves (MP4 data references, a WAV or Matroska header in front of a playlist).

Every payload names `CANARY` (a file the server must never read) or a local port; the tests put
real speech at that path, so a server that follows the reference answers with its words.
"""

from __future__ import annotations

import struct
from pathlib import Path

import av

CANARY = "canary.wav"  # relative: FFmpeg resolves it against the server's working directory
CANARY_PORT = 47_000  # SDP payloads ask FFmpeg to bind here (and the next port, for RTCP)


def _sdp(media_lines: int) -> bytes:
    head = "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
    media = "".join(
        f"m=audio {CANARY_PORT + 2 * i} RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"
        for i in range(media_lines)
    )
    return (head + media).encode()


def text_payloads(canary_abs: Path) -> dict[str, bytes]:
    """Text formats FFmpeg would probe and follow; none starts like an allowed container."""
    url = canary_abs.as_uri()
    return {
        "concat": f"ffconcat version 1.0\nfile {CANARY}\n".encode(),
        "concat_chain": f"ffconcat version 1.0\nfile {CANARY}\nfile {CANARY}\n".encode(),
        "concat_plain": f"file '{CANARY}'\n".encode(),
        "concat_subfile": (
            f"ffconcat version 1.0\nfile subfile,,start,0,end,0,,:{CANARY}\n".encode()
        ),
        "hls": (
            "#EXTM3U\n#EXT-X-TARGETDURATION:20\n#EXTINF:20,\n"
            f"{CANARY}\n#EXTINF:20,\n{url}\n#EXT-X-ENDLIST\n"
        ).encode(),
        "hls_http": (
            "#EXTM3U\n#EXT-X-TARGETDURATION:20\n#EXTINF:20,\n"
            f"http://127.0.0.1:{CANARY_PORT}/a.ts\n#EXT-X-ENDLIST\n"
        ).encode(),
        "hls_data_uri": (
            b"#EXTM3U\n#EXT-X-TARGETDURATION:20\n#EXTINF:20,\n"
            b"data:audio/wav;base64,UklGRiQAAABXQVZF\n#EXT-X-ENDLIST\n"
        ),
        "m3u": f"{CANARY}\n{url}\n".encode(),
        "dash": (
            '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            'mediaPresentationDuration="PT11S" minBufferTime="PT1S"><Period><AdaptationSet>'
            f'<Representation id="a" bandwidth="1"><BaseURL>{CANARY}</BaseURL>'
            "</Representation></AdaptationSet></Period></MPD>"
        ).encode(),
        "sdp": _sdp(1),
        "sdp_250_streams": _sdp(250),
        "rtsp_url": f"rtsp://127.0.0.1:{CANARY_PORT}/x\n".encode(),
        "file_url": f"{url}\n".encode(),
        "image2_png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
        "image2_jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64,
        "tee_spec": f"[f=wav]{CANARY}|[f=wav]/tmp/x.wav\n".encode(),
    }


def _wav_header(body_size: int) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + body_size)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", body_size)
    )


def disguised_payloads() -> dict[str, bytes]:
    """An allowed container's magic bytes in front of a playlist: opened with that container's
    demuxer only, so the playlist is just (bad) samples or junk, never followed."""
    concat = f"ffconcat version 1.0\nfile {CANARY}\n".encode()
    sdp = _sdp(1)
    return {
        "wav_then_concat": b"RIFF\x00\x00\x00\x00WAVE" + concat,
        "wav_header_concat_body": _wav_header(len(concat)) + concat,
        "matroska_magic_then_hls": b"\x1a\x45\xdf\xa3" + text_payloads(Path("/x"))["hls"],
        "ogg_magic_then_sdp": b"OggS" + sdp,
        "mp4_ftyp_then_concat": b"\x00\x00\x00\x0cftypisom" + concat,
        "id3_then_concat": b"ID3\x04\x00\x00\x00\x00\x00\x00" + concat,
    }


# -- an MP4 whose audio lives in another file (a QuickTime alias data reference) -------------

_CONTAINER_ATOMS = {b"moov", b"trak", b"mdia", b"minf", b"dinf"}


def _alias_dref_entry(path: str) -> bytes:
    """A Mac alias record as FFmpeg's mov demuxer parses it (mov_read_dref): fixed fields,
    then a type-2 record holding the absolute path. nlvl 1/1 makes FFmpeg look for the file
    beside the input, i.e. in the working directory for an in-memory upload."""
    volume = b"vol"
    name = path.rsplit("/", 1)[-1].encode()
    fixed = (
        b"\x00" * 10
        + bytes([len(volume)])
        + volume.ljust(27, b"\x00")
        + b"\x00" * 12
        + bytes([len(name)])
        + name.ljust(63, b"\x00")
        + b"\x00" * 16
        + struct.pack(">HH", 1, 1)
        + b"\x00" * 16
    )
    encoded = path.encode()
    if len(encoded) % 2:
        encoded += b"\x00"
    records = struct.pack(">hH", 2, len(encoded)) + encoded + struct.pack(">hH", -1, 0)
    body = fixed + records
    return struct.pack(">I", 12 + len(body)) + b"alis" + b"\x00\x00\x00\x00" + body


def _rewrite(data: bytes, dref_entry: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + size]
        if kind in _CONTAINER_ATOMS:
            body = _rewrite(body, dref_entry)
        elif kind == b"dref":
            body = b"\x00\x00\x00\x00" + struct.pack(">I", 1) + dref_entry
        out += struct.pack(">I", 8 + len(body)) + kind + body
        pos += size
    return bytes(out)


def mp4_with_external_audio(source: Path, dest: Path) -> bytes:
    """`source` encoded as AAC in an MP4 whose only data reference points at `CANARY`."""
    with av.open(str(source)) as inp, av.open(str(dest), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000, layout="mono")
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=16000)
        for frame in inp.decode(audio=0):
            frame.pts = None
            for resampled in resampler.resample(frame):
                out.mux(stream.encode(resampled))
        out.mux(stream.encode(None))
    data = dest.read_bytes()
    assert data.index(b"mdat") < data.index(b"moov"), "chunk offsets would move"
    return _rewrite(data, _alias_dref_entry(f"vol:{CANARY}"))
