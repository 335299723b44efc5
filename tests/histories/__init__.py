"""Recorded histories of the workflows, replayed by tests/test_replay.py."""
