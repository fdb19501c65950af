"""The `erudite-edge` command line: app.py, one module per command under commands/. A command parses its
flags, builds the options dataclasses the API takes, and calls the API; the only part of the runtime
allowed to import train/, export/ and benchmarks/ (lazily, inside the commands that need torch)."""
