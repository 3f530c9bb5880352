"""WebRTC publisher: fake Nest peer (aiortc) -> publisher -> a real RTSP receiver (ffmpeg).

All ICE stays on loopback: host candidates are restricted to 127.0.0.1 and no STUN server is
configured, for the fake peer and the publisher alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import itertools
import os
import subprocess
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aioice.ice
import aiortc.rtcrtpreceiver
import av
import pytest

from nestmtx_sidecar.errors import PublisherError
from nestmtx_sidecar.nest.relay import peer as relay_peer
from nestmtx_sidecar.nest.relay.passthrough import DECODER_ERROR, DECODER_QUEUE
from nestmtx_sidecar.nest.relay.peer import repair_answer
from nestmtx_sidecar.nest.relay.publisher import WebRtcPublisher
from tests.fakes.nest_webrtc import Clip, FakeNestWebRtc, NestApiError, make_clip
from tests.services import free_port, require_binary, wait_until

CLIP_SECONDS = 2
FPS = 25


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice gathers from every interface but loopback; tests must use loopback only."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses",
                        lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Constrained Baseline H.264 + Opus MPEG-TS clip, one IDR a second."""
    require_binary("ffmpeg", "apt-get install ffmpeg")
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.ts", fps=FPS,
                     seconds=CLIP_SECONDS)


@pytest.fixture(scope="module")
def clip(clip_path: Path) -> Clip:
    return Clip.load(clip_path)


@dataclass
class Receiver:
    url: str
    output: Path
    proc: asyncio.subprocess.Process


def _listening(port: int) -> bool:
    wanted = f":{port:04X} "
    with open("/proc/net/tcp") as table:
        return any(wanted in line and line.split()[3] == "0A" for line in table)


@contextlib.asynccontextmanager
async def rtsp_receiver(tmp_path: Path, name: str = "cam") -> AsyncIterator[Receiver]:
    """`ffmpeg -rtsp_flags listen`: accepts one RTSP publication and copies it to MPEG-TS."""
    ffmpeg = require_binary("ffmpeg", "apt-get install ffmpeg")
    port = free_port()
    output = tmp_path / f"{name}-{port}.ts"
    url = f"rtsp://127.0.0.1:{port}/{name}"
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-rtsp_flags", "listen",
        "-i", url, "-c", "copy", "-f", "mpegts", str(output),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await wait_until(lambda: _listening(port))
        yield Receiver(url, output, proc)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def finished(receiver: Receiver) -> None:
    async with asyncio.timeout(10):
        _, stderr = await receiver.proc.communicate()
    assert receiver.proc.returncode == 0, stderr.decode(errors="replace")


def access_unit_key(data: bytes) -> str:
    """Hash of an access unit's NAL units, start codes and access unit delimiters aside."""
    digest = hashlib.sha256()
    for nal in _nal_units(data):
        if nal[0] & 0x1F != 9:
            digest.update(len(nal).to_bytes(4, "big") + nal)
    return digest.hexdigest()


def _nal_units(data: bytes) -> list[bytes]:
    units = [unit.lstrip(b"\x00") for unit in data.split(b"\x00\x00\x01")]
    return [unit.rstrip(b"\x00") for unit in units if unit]


def received(path: Path) -> dict[str, list[bytes]]:
    packets: dict[str, list[bytes]] = {"video": [], "audio": []}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size:
                packets[packet.stream.type].append(bytes(packet))
    return packets


def ffprobe_counts(path: Path) -> dict[str, int]:
    ffprobe = require_binary("ffprobe", "apt-get install ffmpeg")
    result = subprocess.run([ffprobe, "-v", "error", "-count_packets", "-show_entries",
                             "stream=codec_type,nb_read_packets", "-of", "csv=p=0", str(path)],
                            check=True, capture_output=True, text=True)
    counts = {}
    for line in result.stdout.split():
        kind, count = line.split(",")
        counts[kind] = int(count)
    return counts


def test_repair_answer_fixes_google_quirks() -> None:
    answer = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n"
              "a=candidate: 1 udp 2113939711 127.0.0.1 19305 typ host generation 0\r\n"
              "a=candidate: 1 udp 2113939710 127.0.0.1 19306 typ host generation 0\r\n"
              "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n")
    repaired = repair_answer(answer).splitlines()
    assert "a=sendrecv" not in repaired and "a=sendonly" in repaired
    candidates = [line for line in repaired if line.startswith("a=candidate:")]
    assert candidates == [
        "a=candidate:1 1 udp 2113939711 127.0.0.1 19305 typ host generation 0",
        "a=candidate:2 1 udp 2113939710 127.0.0.1 19306 typ host generation 0",
    ]


async def test_fake_nest_rejects_offer_in_wrong_order(clip: Clip) -> None:
    fake = FakeNestWebRtc(clip)
    offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    with pytest.raises(NestApiError) as caught:
        await fake.generate(offer)
    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")


def test_aiortc_internals_of_the_direct_path_are_there() -> None:
    """The direct path (webrtc_passthrough) replaces aiortc's private decoder queue: if aiortc
    (pinned in pyproject.toml) changes these lines, the publisher falls back to the slower
    stock path, and this says so."""
    handler = inspect.getsource(aiortc.rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet)
    assert "self.__decoder_queue.put((codec, encoded_frame))" in handler
    assert "if self.__decoder_error.is_set():" in handler
    worker = inspect.getsource(aiortc.rtcrtpreceiver.decoder_worker)
    assert "task = input_q.get()" in worker and "if task is None:" in worker
    receive = inspect.getsource(aiortc.rtcrtpreceiver.RTCRtpReceiver.receive)
    assert "self.__decoder_queue," in receive
    assert DECODER_QUEUE == "_RTCRtpReceiver__decoder_queue"
    assert DECODER_ERROR == "_RTCRtpReceiver__decoder_error"


def _decoder_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.endswith("-decoder")}


@pytest.mark.parametrize("delivery", ["direct", "stock"])
async def test_every_access_unit_arrives_bit_identical(
        clip: Clip, tmp_path: Path, delivery: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if delivery == "stock":  # what runs should aiortc's internals change
        monkeypatch.setattr(relay_peer, "deliver_directly", lambda *args: False)
    fake = FakeNestWebRtc(clip, loops=2)
    async with rtsp_receiver(tmp_path) as receiver:
        publisher = WebRtcPublisher(receiver.url)
        try:
            answer = await publisher.start(fake.generate)
            # The direct path hands frames over on the loop: aiortc's decoder threads (one
            # per track, alive for the session on the stock path) are gone.
            assert _decoder_threads() == (
                set() if delivery == "direct" else {"audio-decoder", "video-decoder"})
            session = fake.sessions[answer.media_session_id]
            async with asyncio.timeout(CLIP_SECONDS * 2 + 10):
                await session.played()
        finally:
            await publisher.stop()
            await fake.close()
        await finished(receiver)

    offer = fake.offers[0]
    assert [line.split()[0] for line in offer.splitlines() if line.startswith("m=")] == [
        "m=audio", "m=video", "m=application"]
    rtpmaps = {line.split()[1].split("/")[0] for line in offer.splitlines()
               if line.startswith("a=rtpmap:")}
    assert rtpmaps == {"opus", "H264", "rtx"}  # H.264 only: nothing to transcode
    assert offer.count("a=recvonly") == 2
    assert "typ host" in offer and "typ srflx" not in offer  # inline, and no STUN

    source_video = [access_unit_key(unit) for unit in clip.payloads("video")]
    source_audio = [hashlib.sha256(frame).hexdigest() for frame in clip.payloads("audio")]
    got = received(receiver.output)
    got_video = [access_unit_key(unit) for unit in got["video"]]
    got_audio = [hashlib.sha256(frame).hexdigest() for frame in got["audio"]]
    counts = ffprobe_counts(receiver.output)
    assert counts["video"] == len(got["video"]) and counts["audio"] == len(got["audio"])
    # The first loop arrives whole and unaltered, then the second loop goes on from its start
    # (its last frame stays in aiortc's jitter buffer: no later packet completes it).
    assert got_video[:len(source_video)] == source_video
    assert got_video[len(source_video):] == source_video[:len(got_video) - len(source_video)]
    assert len(got_video) >= 2 * len(source_video) - 1
    assert got_audio[:len(source_audio)] == source_audio
    assert len(got_audio) >= 2 * len(source_audio) - 5
    assert publisher.stats.video_frames == len(got_video)
    assert fake.sessions[answer.media_session_id].plis == 0  # started on a keyframe


async def test_regenerate_keeps_frames_flowing(clip: Clip, tmp_path: Path) -> None:
    fake = FakeNestWebRtc(clip, battery=True)
    async with rtsp_receiver(tmp_path) as receiver:
        publisher = WebRtcPublisher(receiver.url)
        try:
            first = await publisher.start(fake.generate)
            with pytest.raises(NestApiError) as caught:
                await fake.extend(first.media_session_id)
            assert caught.value.status == "FAILED_PRECONDITION"
            frames_before = publisher.stats.video_frames
            second = await publisher.regenerate(fake.generate)
            await fake.stop(first.media_session_id)
            assert second.media_session_id != first.media_session_id
            assert publisher.media_session_id == second.media_session_id
            target = publisher.stats.video_frames + FPS
            await wait_until(lambda: publisher.stats.video_frames >= target, seconds=10)
            assert publisher.stats.sessions == 2
            assert publisher.stats.video_frames > frames_before
        finally:
            await publisher.stop()
            await fake.close()
        await finished(receiver)

    with av.open(str(receiver.output)) as container:
        stream = container.streams.video[0]
        times = [float(p.pts * p.time_base) for p in container.demux(stream) if p.size]
    assert len(times) == publisher.stats.video_frames
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # One publication across both sessions: time only moves on, by about a frame each time,
    # and there is no hole (the old session fed MediaMTX until the new one's keyframe).
    assert min(gaps) > 0.5 / FPS
    assert max(gaps) < 0.25


async def test_remote_hang_up_is_reported(clip: Clip, tmp_path: Path) -> None:
    fake = FakeNestWebRtc(clip)
    async with rtsp_receiver(tmp_path) as receiver:
        publisher = WebRtcPublisher(receiver.url, silence_timeout=2)
        try:
            answer = await publisher.start(fake.generate)
            await fake.stop(answer.media_session_id)
            async with asyncio.timeout(10):
                failure = await publisher.wait_failure()
            assert failure.reason in ("connection-failed", "silence")
        finally:
            await publisher.stop()
            await fake.close()


async def test_silence_is_reported(clip: Clip, tmp_path: Path) -> None:
    fake = FakeNestWebRtc(clip, loops=1)
    async with rtsp_receiver(tmp_path) as receiver:
        publisher = WebRtcPublisher(receiver.url, silence_timeout=1)
        try:
            answer = await publisher.start(fake.generate)
            await fake.sessions[answer.media_session_id].played()
            started = asyncio.get_running_loop().time()
            async with asyncio.timeout(10):
                failure = await publisher.wait_failure()
            assert failure.reason == "silence"
            assert asyncio.get_running_loop().time() - started >= 0.5
        finally:
            await publisher.stop()
            await fake.close()


async def test_unreachable_target_fails_start(clip: Clip) -> None:
    fake = FakeNestWebRtc(clip)
    publisher = WebRtcPublisher(f"rtsp://127.0.0.1:{free_port()}/cam", start_timeout=10)
    try:
        with pytest.raises(PublisherError, match="cannot publish"):
            await publisher.start(fake.generate)
    finally:
        await publisher.stop()
        await fake.close()


def _resources() -> tuple[int, int, int]:
    """Tasks, threads and file descriptors (sockets included) of this process.

    asyncio's default executor threads are left out: a bounded pool that name lookups may
    grow under load, not something a session owns.
    """
    threads = [t for t in threading.enumerate() if not t.name.startswith("asyncio_")]
    return len(asyncio.all_tasks()), len(threads), len(os.listdir("/proc/self/fd"))


async def test_start_stop_cycles_leak_nothing(clip: Clip, tmp_path: Path) -> None:
    async def cycle() -> None:
        fake = FakeNestWebRtc(clip)
        async with rtsp_receiver(tmp_path) as receiver:
            publisher = WebRtcPublisher(receiver.url)
            try:
                answer = await publisher.start(fake.generate)
                running.append(_resources())
                await fake.stop(answer.media_session_id)
            finally:
                await publisher.stop()
                await fake.close()
            await finished(receiver)

    running: list[tuple[int, int, int]] = []
    await cycle()  # warm-up: lazily created executors and caches
    before = _resources()
    for _ in range(20):
        await cycle()
    # None of a session's tasks, threads and sockets is left after stop: nothing grew over 20
    # cycles (a thread of the warm-up may still be ending when the baseline is taken, so "not
    # more", not "equal")...
    def settled() -> bool:
        return all(now <= then for now, then in zip(_resources(), before, strict=True))

    with contextlib.suppress(TimeoutError):
        await wait_until(settled, seconds=5)
    idle = _resources()
    assert settled(), (idle, before)
    # ...and the measure does see them: every live session had more of each than idle (not
    # than the baseline, which may still count that ending warm-up thread).
    assert all(r[0] > idle[0] and r[1] > idle[1] and r[2] > idle[2] for r in running), (
        running, idle)
