"""Synthetic tabular data: a WGAN-GP trained with torch, sampled with numpy alone (see README)."""
