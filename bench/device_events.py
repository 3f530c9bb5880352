"""Device event latency: a message published in the fake Pub/Sub -> a Socket.IO subscriber.

    python bench/device_events.py [--events 200] [--image]

The real sidecar (uvicorn on loopback, SQLite), the fake Google and fake Pub/Sub of the tests
and a python-socketio subscriber, all in this process on one event loop (so the figures
include the fakes' own work). One event at a time: each is published when the previous one
has arrived, so the figure is latency, not queueing. A pull held open by the fake answers as
soon as a message is published: no poll interval can hide in the figures. `--image` gives
the camera CameraEventImage, so each event waits for GenerateImage and the JPEG download;
Google's sandbox quotas, kept by the limiter (5 calls of a command a minute per device, 10
commands a minute per credential), allow 5 pictures a minute per camera, so use `--image
--events 5`: past it, events go out at once with `image: null`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def measure(events: int, image: bool) -> tuple[list[float], int]:
    from tests.fakes.google import jpeg
    from tests.test_device_events import connect, motion, porch, sidecar
    from tests.test_event_media import fakes
    from tests.test_events_e2e import PySubscriber

    latencies, pictured = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        traits = ("CameraEventImage",) if image else ()
        async with fakes(*traits) as (google, pubsub), \
                sidecar(Path(tmp), google, pubsub) as e:
            await connect(e)
            await porch(e)
            subscriber = PySubscriber()
            await subscriber.client.connect(e.running.url, auth={"token": await e.running.login()},
                                            transports=["websocket"])
            await subscriber.client.call("subscribe", "camera:motion")  # only this topic
            picture = jpeg()
            for n in range(events):
                event_id = f"bench-{n}"
                google.camera_event("cam-1", event_id, picture)
                start = time.perf_counter()
                pubsub.publish(motion(event_id))
                while True:
                    topic, payload = await asyncio.wait_for(subscriber.received.get(), 20)
                    if topic == "camera:motion" and payload["details"]["eventId"] == event_id:
                        pictured += payload["details"]["image"] is not None
                        break
                latencies.append((time.perf_counter() - start) * 1000)
            await subscriber.client.disconnect()
    return latencies, pictured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--image", action="store_true", help="with the event picture")
    args = parser.parse_args()
    latencies, pictured = asyncio.run(measure(args.events, args.image))
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)) - 1)]
    print(f"| events | with a picture | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|\n"
          f"| {len(latencies)} | {pictured} | "
          f"{statistics.median(latencies):.1f} | {p99:.1f} | {latencies[-1]:.1f} |")


if __name__ == "__main__":
    main()
