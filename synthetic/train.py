"""WGAN-GP training on CPU with torch (the only module that imports it).

Recipe (shared/FACTS.md, "GAN synthetic tabular data"): MLP generator and critic with LeakyReLU,
5 critic steps per generator step, gradient penalty λ=10, Adam lr 1e-4 β=(0.5, 0.9), batch 512,
on the codec's normal scores. Reproducible on CPU: one seed drives torch and numpy, torch runs
deterministic algorithms on a fixed number of threads, and the run stops after ``steps`` generator
steps. ``max_seconds`` may stop it earlier; the steps done are recorded, so ``--steps`` repeats it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from synthetic.c2st import c2st_auc
from synthetic.codec import ColumnCodec
from synthetic.datasets import Table
from synthetic.sampler import Sampler

__all__ = ["TrainConfig", "TrainResult", "train"]


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 4_000             # generator steps (the shipped demo: 4000, seed 0)
    max_seconds: float | None = None
    seed: int = 0
    threads: int = 1               # 2 threads on a busy 2-core machine ran 6x slower (OpenMP spinning)
    noise_dim: int = 64
    hidden: int = 256
    layers: int = 2                # hidden layers in generator and critic
    batch: int = 512
    critic_steps: int = 5
    gp_lambda: float = 10.0
    lr: float = 1e-4
    ema: float = 0.999             # exported generator = exponential moving average of its weights
    eval_every: int = 500          # generator steps between progress C2STs (0: never)
    eval_rows: int = 4000

    def __post_init__(self) -> None:
        for field in ("steps", "threads", "noise_dim", "hidden", "layers", "batch", "critic_steps", "eval_rows"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field}: must be positive, got {getattr(self, field)}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds: must be positive, got {self.max_seconds}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema: must be in [0, 1), got {self.ema}")


@dataclass(frozen=True)
class TrainResult:
    sampler: Sampler
    steps_done: int
    seconds: float
    history: tuple[dict, ...]       # progress evaluations: step, losses, c2st
    torch_generator: Any = None     # the exported (EMA) generator as a torch module, for checks

    def __repr__(self) -> str:
        return f"<TrainResult steps={self.steps_done} seconds={self.seconds:.1f} {self.sampler!r}>"


def _mlp(torch, dims: list[int]):
    nn = torch.nn
    mods: list = []
    for k in range(len(dims) - 1):
        mods.append(nn.Linear(dims[k], dims[k + 1]))
        if k < len(dims) - 2:
            mods.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*mods)


def generator_layers(gen) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(weight, bias)`` numpy pairs of a generator's Linear layers, in order."""
    import torch

    return [(m.weight.detach().cpu().numpy().copy(), m.bias.detach().cpu().numpy().copy())
            for m in gen if isinstance(m, torch.nn.Linear)]


def complete_rows(z: np.ndarray) -> np.ndarray:
    """Training rows: complete cases when at least half are complete, else nulls filled at random."""
    ok = ~np.isnan(z).any(axis=1)
    if ok.mean() >= 0.5:
        return z[ok]
    rng = np.random.default_rng(0)
    z = z.copy()
    z[np.isnan(z)] = rng.standard_normal(int(np.isnan(z).sum()))
    return z


def train(table: Table, cfg: TrainConfig, *, progress: bool = True,
          on_eval: Callable[[dict], None] | None = None,
          on_snapshot: Callable[[int, Sampler], None] | None = None) -> TrainResult:
    import torch
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)

    codec = ColumnCodec.fit(table.train, derived=table.derived)
    data = torch.from_numpy(complete_rows(codec.to_normal(table.train, rng)))
    width = codec.width
    gen = _mlp(torch, [cfg.noise_dim] + [cfg.hidden] * cfg.layers + [width])
    critic = _mlp(torch, [width] + [cfg.hidden] * cfg.layers + [1])
    ema = _mlp(torch, [cfg.noise_dim] + [cfg.hidden] * cfg.layers + [width])
    ema.load_state_dict(gen.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    opt_c = torch.optim.Adam(critic.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    g = torch.Generator().manual_seed(cfg.seed)

    eval_real = np.column_stack([table.holdout[n] for n in codec.names])[: cfg.eval_rows]
    info = {"dataset": table.name, "source": table.source, "config": asdict(cfg),
            "train_rows": int(len(data)), "torch": torch.__version__}

    def snapshot(steps: int, seconds: float) -> Sampler:
        return Sampler.from_layers(codec, generator_layers(ema), cfg.noise_dim,
                                   {**info, "steps_done": steps, "train_seconds": round(seconds, 1)})

    history: list[dict] = []
    t0 = time.monotonic()
    step = 0
    loss_c = loss_g = torch.zeros(())
    bar = tqdm(total=cfg.steps, unit="step", desc=f"train {table.name}", disable=not progress)
    try:
        while step < cfg.steps:
            if cfg.max_seconds is not None and time.monotonic() - t0 >= cfg.max_seconds:
                break
            for _ in range(cfg.critic_steps):
                real = data[torch.randint(len(data), (cfg.batch,), generator=g)]
                with torch.no_grad():
                    fake = gen(torch.randn(cfg.batch, cfg.noise_dim, generator=g))
                eps = torch.rand(cfg.batch, 1, generator=g)
                mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
                grad, = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
                gp = ((grad.norm(2, dim=1) - 1) ** 2).mean()
                loss_c = critic(fake).mean() - critic(real).mean() + cfg.gp_lambda * gp
                opt_c.zero_grad(set_to_none=True)
                loss_c.backward()
                opt_c.step()
            loss_g = -critic(gen(torch.randn(cfg.batch, cfg.noise_dim, generator=g))).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            with torch.no_grad():
                decay = min(cfg.ema, (1 + step) / (10 + step))
                for pe, pg in zip(ema.parameters(), gen.parameters()):
                    pe.mul_(decay).add_(pg, alpha=1 - decay)
            step += 1
            bar.update(1)
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                elapsed = time.monotonic() - t0
                snap = snapshot(step, elapsed)
                if on_snapshot is not None:
                    on_snapshot(step, snap)
                synth = snap.sample(len(eval_real), seed=cfg.seed + step)
                row = {"step": step, "seconds": round(elapsed, 1), "loss_critic": round(float(loss_c.detach()), 4),
                       "loss_gen": round(float(loss_g.detach()), 4),
                       "c2st": round(c2st_auc(eval_real, synth, seed=cfg.seed, max_iter=100), 4)}
                history.append(row)
                bar.set_postfix(c=row["loss_critic"], g=row["loss_gen"], c2st=row["c2st"])
                if on_eval is not None:
                    on_eval(row)
                t0 += time.monotonic() - t0 - elapsed  # evaluation time is not training time
    finally:
        bar.close()
    seconds = time.monotonic() - t0
    return TrainResult(snapshot(step, seconds), step, seconds, tuple(history), ema)
