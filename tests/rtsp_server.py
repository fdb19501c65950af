"""A real RTSP server on 127.0.0.1 for the tests: GStreamer's gst-rtsp-server (through PyGObject)
serving a live MJPEG test pattern. Run with a Python that has `gi` and GstRtspServer (Debian:
`apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good`):

    /usr/bin/python3 tests/rtsp_server.py PORT [--path /live] [--auth USER:PASSWORD] [--color ff0000]
    /usr/bin/python3 tests/rtsp_server.py PORT --record [--path /live]

Prints `ready` once it listens; serves until killed. With --record it accepts a publisher (RTSP
ANNOUNCE/RECORD, as MediaMTX does) instead, decodes what it receives and prints one line per decoded
frame: `frame B G R`, the mean colour of the frame's lower half (below an annotation band).
"""

import argparse

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port")
    ap.add_argument("--path", default="/live")
    ap.add_argument("--auth", default="")
    ap.add_argument("--color", default="ff0000")
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(args.port)
    factory = GstRtspServer.RTSPMediaFactory()
    rgb = int(args.color, 16)
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=solid-color foreground-color={0xFF000000 | rgb} ! "
        f"video/x-raw,width=64,height=48,framerate={args.fps}/1,format=I420 ! jpegenc ! rtpjpegpay name=pay0 pt=26 )"
    )
    factory.set_shared(True)
    if args.record:
        factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
        factory.set_shared(False)
        factory.set_latency(0)
        factory.set_launch("( rtph264depay name=depay0 ! h264parse ! decodebin ! videoconvert ! video/x-raw,format=BGR ! "
                           "appsink name=frames emit-signals=true sync=false )")

        def on_sample(sink):
            sample = sink.emit("pull-sample")
            caps = sample.get_caps().get_structure(0)
            w, h = caps.get_value("width"), caps.get_value("height")
            buf = sample.get_buffer()
            ok, info = buf.map(Gst.MapFlags.READ)
            if ok:
                data, stride = info.data, (len(info.data) // h)
                rows = [data[y * stride:y * stride + w * 3] for y in range(h // 2, h)]
                sums = [0, 0, 0]
                for row in rows:
                    for c in range(3):
                        sums[c] += sum(row[c::3])
                n = max(1, len(rows) * w)
                print("frame", *(round(v / n) for v in sums), flush=True)
                buf.unmap(info)
            return Gst.FlowReturn.OK

        def on_configure(_factory, media):
            media.get_element().get_by_name("frames").connect("new-sample", on_sample)

        factory.connect("media-configure", on_configure)
    if args.auth:
        user, password = args.auth.split(":", 1)
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", user)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        role = Gst.Structure.new_empty(user)
        role.set_value("media.factory.access", True)
        role.set_value("media.factory.construct", True)
        permissions.add_role_from_structure(role)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{args.port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
