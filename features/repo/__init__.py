"""The demo Feast feature repo: synthetic data, definitions, and the working dir it lives in."""
