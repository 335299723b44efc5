"""The scripts behind `make bench` and `make chaos`.

Run each from the project root: `python -m bench.<name>`."""
