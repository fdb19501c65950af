"""Where results go: the output URI grammar (open.py: -o, --save, --display), result records (JSON lines,
CSV, the crash-safe append log), annotated video/images/display, streams out, attention maps.
May import: erudite_edge.sources (Item), erudite_edge.core, erudite_edge.errors."""
