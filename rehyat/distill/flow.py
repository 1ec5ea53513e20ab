"""Flow matching as Wan is trained with it, in diffusers' ``FlowMatchEulerDiscreteScheduler`` conventions.

* Training schedule: the scheduler built with ``num_train_timesteps`` (1000) and ``shift`` (Wan2.1 480p: 3.0) holds
  ``timesteps[i] = sigmas[i] * 1000`` with the shifted ``sigmas[i] = shift*s / (1 + (shift-1)*s)``, ``s`` linear
  from 1 to 1/1000.  A training timestep is drawn as an index ``i = floor(u * 1000)`` with ``u`` from diffusers'
  ``compute_density_for_timestep_sampling`` (``uniform``, ``logit_normal`` or ``mode``, the SD3 / diffusers
  training-script densities) and both ``timesteps[i]`` and ``sigmas[i]`` are read from the scheduler.
* Noising: ``x_t = (1 - sigma) * x_0 + sigma * noise``; the transformer gets ``timestep = timesteps[i]``.
* Target: the velocity ``noise - x_0`` (what ``FlowMatchEulerDiscreteScheduler.step`` integrates:
  ``x_{t'} = x_t + (sigma' - sigma) * v``); loss = MSE in fp32.
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling

Tensor = torch.Tensor
WEIGHTINGS = ("uniform", "logit_normal", "mode")


class FlowMatching:
    def __init__(self, shift: float = 3.0, num_train_timesteps: int = 1000, weighting: str = "uniform",
                 logit_mean: float = 0.0, logit_std: float = 1.0, mode_scale: float = 1.29):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"timestep weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
        self.shift, self.num_train_timesteps = shift, num_train_timesteps
        self.timesteps = sched.timesteps.clone().float()
        self.sigmas = sched.sigmas[: len(self.timesteps)].clone().float()
        self.weighting, self.logit_mean, self.logit_std, self.mode_scale = weighting, logit_mean, logit_std, mode_scale

    def sample_indices(self, n: int, generator: torch.Generator) -> Tensor:
        """``[n]`` indices into the 1000-step training schedule (``u`` in [0, 1] from diffusers' density)."""
        u = compute_density_for_timestep_sampling(self.weighting, n, logit_mean=self.logit_mean,
                                                  logit_std=self.logit_std, mode_scale=self.mode_scale,
                                                  generator=generator)
        return (u * self.num_train_timesteps).long().clamp_(0, self.num_train_timesteps - 1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(timesteps [n], sigmas [n])`` from the training schedule."""
        idx = self.sample_indices(n, generator)
        return self.timesteps[idx], self.sigmas[idx]

    @staticmethod
    def noisy(x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        s = sigma.to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return (1.0 - s) * x0 + s * noise

    @staticmethod
    def target(x0: Tensor, noise: Tensor) -> Tensor:
        return noise - x0

    def inference_schedule(self, num_steps: int) -> tuple[Tensor, Tensor]:
        """``(timesteps [n], sigmas [n+1])`` of an n-step Euler sampler with the same shift (last sigma 0)."""
        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=self.num_train_timesteps, shift=self.shift)
        sched.set_timesteps(num_steps)
        return sched.timesteps.clone().float(), sched.sigmas.clone().float()


def flow_matching_loss(pred: Tensor, target: Tensor) -> Tensor:
    return torch.nn.functional.mse_loss(pred.float(), target.float())
