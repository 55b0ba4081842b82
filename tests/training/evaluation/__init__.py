"""Tests of the downstream evaluation; a package so that mypy tells its conftest.py from tests/conftest.py."""
