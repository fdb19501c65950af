"""Feed solid-colour BGR frames into a GStreamer pipeline's appsrc, the way OpenCV's GStreamer VideoWriter
does (caps video/x-raw,format=BGR,width,height,framerate; time-stamped buffers; EOS at the end). The tests
run erudite-edge's output pipelines (erudite_edge.sources.gst_pipelines.stream_out) with it, because the venv's
OpenCV (PyPI) has no GStreamer. Run with a Python that has PyGObject's Gst:

    /usr/bin/python3 tests/gst_feed.py 'appsrc ! ...' WIDTH HEIGHT FPS FRAMES [--color 0000ff]

Exit 0 after EOS went through; 1 with `error: ...` on stderr when the pipeline does not parse or fails;
3 when every buffer was pushed but EOS did not come back within 10 s.
"""

import argparse
import sys
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("pipeline")
    ap.add_argument("width", type=int)
    ap.add_argument("height", type=int)
    ap.add_argument("fps", type=int)
    ap.add_argument("frames", type=int)
    ap.add_argument("--color", default="0000ff", help="B G R as hex (default red)")
    args = ap.parse_args()
    Gst.init(None)
    try:
        pipeline = Gst.parse_launch(args.pipeline)
    except Exception as e:  # GLib.Error: the element is missing or the syntax is wrong
        print(f"error: {e}", file=sys.stderr)
        return 1
    src = pipeline.get_by_name("appsrc0")  # OpenCV finds its appsrc by this default name
    if src is None:
        print("error: no appsrc0 in the pipeline", file=sys.stderr)
        return 1
    src.set_property("caps", Gst.Caps.from_string(
        f"video/x-raw,format=BGR,width={args.width},height={args.height},framerate={args.fps}/1"))
    src.set_property("format", Gst.Format.TIME)
    frame = bytes.fromhex(args.color) * (args.width * args.height)
    bus = pipeline.get_bus()
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        msg = bus.timed_pop_filtered(Gst.SECOND, Gst.MessageType.ERROR)
        print(f"error: {msg.parse_error()[0].message if msg else 'the pipeline does not start'}", file=sys.stderr)
        return 1
    step = Gst.SECOND // args.fps
    for i in range(args.frames):
        buf = Gst.Buffer.new_wrapped(frame)
        buf.pts, buf.duration = i * step, step
        src.emit("push-buffer", buf)
        msg = bus.pop_filtered(Gst.MessageType.ERROR)
        if msg:
            print(f"error: {msg.parse_error()[0].message}", file=sys.stderr)
            return 1
        time.sleep(1 / args.fps)
    src.emit("end-of-stream")
    msg = bus.timed_pop_filtered(10 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if msg is not None and msg.type == Gst.MessageType.ERROR:
        print(f"error: {msg.parse_error()[0].message}", file=sys.stderr)
        return 1
    if msg is None:
        # Every buffer went in, but EOS never came back out. Seen here with rtspclientsink (GStreamer 1.22)
        # in about 1 run in 3: the server had received every frame; the sink held the EOS. Exit 3, so that a
        # caller can tell this from a pipeline that failed and judge by what arrived.
        print("warning: no EOS within 10 s (every buffer was pushed)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
