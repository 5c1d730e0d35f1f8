"""Constants shared by the synthetic tests."""

from pathlib import Path

from synthetic.train import TrainConfig

DEMO = Path(__file__).resolve().parents[2] / "synthetic" / "demo"
TINY = TrainConfig(steps=40, seed=3, threads=1, hidden=32, noise_dim=16, batch=128, eval_every=20, eval_rows=500)
