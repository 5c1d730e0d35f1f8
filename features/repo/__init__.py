"""The demo Feast feature repo: synthetic data, definitions, and the working dir it lives in."""

from pathlib import Path

# Here, not in workspace.py: `python -m features get` needs the default without pandas.
DEFAULT_WORKDIR = Path(__file__).resolve().parent / "data"
