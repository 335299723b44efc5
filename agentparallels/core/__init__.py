"""The core: values, errors, message models, names and step specs."""

__all__: list[str] = []
