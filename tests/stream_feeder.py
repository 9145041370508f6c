"""Play a video file as a live stream, at its real frame rate (the streaming tests' camera; needs only PyAV).

    python tests/stream_feeder.py clip.mp4 --format matroska > pipe    # the file's packets, not re-encoded
    python tests/stream_feeder.py clip.mp4 --raw > pipe                # decoded rgb24 frames, bare
    python tests/stream_feeder.py clip.mp4 --format matroska --out grow.mkv --pause 0.5 --segments 3

Each packet (frame) is written when its time comes, measured from the first one (`--speed` scales the clock), and
flushed at once. `--out` appends to a file instead of stdout, in `--segments` parts with `--pause` seconds between
them: a file that grows while it is read. `--hold` keeps the stream open that many seconds after the last frame, as
a camera that stopped moving would, so the reader cannot see the stream end. A reader that goes away ends the feeder
quietly.
"""
from __future__ import annotations

import argparse
import sys
import time

import av


class _Live:
    """A write-only, unseekable sink flushed on every write, so the muxer writes a live stream (no seeking back to
    finish headers) and every packet is visible to the reader at once."""

    def __init__(self, sink):
        self.sink = sink

    def write(self, data) -> int:
        self.sink.write(data)
        self.sink.flush()
        return len(data)

    def seekable(self) -> bool:
        return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("video")
    parser.add_argument("--format", default="matroska")
    parser.add_argument("--raw", action="store_true", help="decoded rgb24 frames instead of the encoded packets")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--out", help="append to this file instead of writing to stdout")
    parser.add_argument("--segments", type=int, default=1)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between segments")
    parser.add_argument("--hold", type=float, default=0.0, help="seconds the stream stays open after the last frame")
    args = parser.parse_args()
    sink = open(args.out, "ab") if args.out else sys.stdout.buffer
    source = av.open(args.video)
    video = source.streams.video[0]
    fps = float(video.average_rate)
    count = video.frames
    start = time.perf_counter()
    paused = 0.0
    try:
        if args.raw:
            items = ((i, frame.to_ndarray(format="rgb24").tobytes()) for i, frame in enumerate(source.decode(video)))
            out = None
        else:
            out = av.open(_Live(sink), "w", format=args.format, options={"flush_packets": "1"})
            stream = out.add_stream_from_template(video)
            items = ((i, packet) for i, packet in enumerate(p for p in source.demux(video) if p.dts is not None))
        per_segment = -(-count // args.segments)
        for i, item in items:
            if i and i % per_segment == 0 and args.pause:
                time.sleep(args.pause)
                paused += args.pause
            delay = start + paused + i / fps / args.speed - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if out is None:
                sink.write(item)
                sink.flush()
            else:
                item.stream = stream
                out.mux(item)
        if out is not None:
            out.close()
        time.sleep(args.hold)
    except BrokenPipeError:  # the reader stopped (Ctrl-C): nothing more to do
        return 0
    finally:
        try:
            sink.close()
        except BrokenPipeError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
