"""A real RTSP server on 127.0.0.1 for the slow tests: GStreamer's gst-rtsp-server from Debian.

Run with the system Python (``/usr/bin/python3``: Debian's python3-gi does not import in other
interpreters)::

    /usr/bin/python3 rtsp_server.py PORT MOUNT 'frames/%04d.jpg' [FPS]

It serves the numbered JPEG frames, looped forever at FPS (default 25) as H.264, at
``rtsp://127.0.0.1:PORT/MOUNT``, prints ``ready`` once it listens, and exits on SIGTERM, dropping
its clients as a camera that loses power would. Needs gir1.2-gst-rtsp-server-1.0, python3-gi,
gstreamer1.0-plugins-good (jpegdec, rtph264pay) and gstreamer1.0-plugins-ugly (x264enc).
"""
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main(port: str, mount: str, pattern: str, fps: str = "25") -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    # One pipeline shared by every client (like a camera), encoded for low latency: no B-frames, a key
    # frame every second so that a client that reconnects decodes again within one second.
    factory.set_launch(
        f'( multifilesrc location="{pattern}" loop=true caps="image/jpeg,framerate={fps}/1" ! jpegdec ! '
        f"videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! "
        "rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory(f"/{mount}", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main(*sys.argv[1:])
