"""Where images come from: the source URI grammar (open.py) and one module per kind of source.

base (Item, Source), files (images, folders, globs), capture (video files, V4L2, CSI, RTSP), live (newest
frame, reconnect back-off), testsrc, crops (regions of each item), gst_pipelines, v4l2_modes and the
camera / RTSP diagnosis. May import: erudite_edge.core, erudite_edge.errors."""
