"""The version of erudite-edge (one place: pyproject.toml's version must match, tests/runtime/test_api.py checks)."""

__version__ = "0.1.0"
