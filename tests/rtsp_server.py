"""A real RTSP server on 127.0.0.1 for the tests: GStreamer's gst-rtsp-server (through PyGObject)
serving a live MJPEG test pattern. Run with a Python that has `gi` and GstRtspServer (Debian:
`apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good`):

    /usr/bin/python3 tests/rtsp_server.py PORT [--path /live] [--auth USER:PASSWORD] [--color ff0000]

Prints `ready` once it listens; serves until killed.
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
