"""The `erudite-edge` command line: app.py, one module per command under commands/, demo.py (the demo end to
end, driving the commands), interruptible.py (SIGTERM as Ctrl-C for commands that write). A command parses its
flags, builds the options dataclasses the API takes, and calls the API; the only part of the runtime
allowed to import train/, export/ and benchmarks/ (lazily, inside the commands that need torch)."""
