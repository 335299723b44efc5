"""Servers for tests and demos (a fake model provider)."""

__all__: list[str] = []
