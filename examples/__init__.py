"""The demos behind `make demo` and `make demo-llm`.

Run each from the project root: `python -m examples.<name>`."""
