"""One training step per variant family, over its networks and Adam optimisers.

- BiGAN family (ours-proj, ours-concat; bigan-proj and egbad with alpha = 0): the paper's Algorithm 1,
  D on real pairs (x, E(x)) against fake pairs (G(z), z), then E and G on
  alpha·L_cons + (1-alpha)·L_adv through the just-updated D.
- ae: E and G on the mean |x - G(E(x))|.
- anogan: a plain GAN, D on images against G(z), then G.

With simulated anomalies (`simulate` > 0, trainer/anomalies.py) E and G get the corrupted batch and
restore the clean one (the consistency target stays x); the pixel judge J, when there is one, learns
the masks from (corrupted input, its reconstruction).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trainer.anomalies import simulate
from trainer.config import Config
from trainer.losses import consistency_loss, d_loss, eg_adv_loss, focal_loss, gan_g_loss

Wrap = Callable[[nn.Module], nn.Module]


def _unwrapped(m: nn.Module) -> nn.Module:
    return m


class EGPair(nn.Module):
    """E and G in one forward, so DDP sees one forward per step: (ẑ, x̃, x̂, z̃), or (ẑ, x̂) without z."""

    def __init__(self, E: nn.Module, G: nn.Module) -> None:
        super().__init__()
        self.E, self.G = E, G

    def forward(self, x: torch.Tensor, z: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        z_hat = self.E(x)
        if z is None:  # autoencoder: no prior path
            return z_hat, self.G(z_hat)
        x_tilde = self.G(z)
        return z_hat, x_tilde, self.G(z_hat), self.E(x_tilde)


class _Frozen:
    """`with _Frozen(D):` D's parameters take no gradient inside the block (E/G's update through D)."""

    def __init__(self, module: nn.Module) -> None:
        self.params = [p for p in module.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *_: object) -> None:
        for p in self.params:
            p.requires_grad_(True)


class Step:
    """A variant's training step: `step(x)` updates the networks on a batch x (N×C×H×W in [-1, 1]) and
    returns its figures; `opts` are the Adam optimisers by name (resume saves and restores them)."""

    def __init__(self, cfg: Config, nets: dict[str, nn.Module]) -> None:
        self.cfg, self.nets = cfg, nets
        self.opts: dict[str, torch.optim.Optimizer] = {}

    def _adam(self, name: str, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        t = self.cfg.train
        self.opts[name] = torch.optim.Adam(params, lr=t.lr, betas=(t.beta1, t.beta2))
        return self.opts[name]

    def _update(self, name: str, loss: torch.Tensor, *also: str) -> None:
        """One backward of `loss`, then a step of optimiser `name` and of those named in `also`."""
        names = (name, *also)
        for n in names:
            self.opts[n].zero_grad(set_to_none=True)
        loss.backward()
        for n in names:
            self.opts[n].step()

    def step(self, x: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError


class Simulation:
    """A step's simulated anomalies: `corrupt(x)` -> (input, masks); `judge(input, x_hat, masks)` trains J
    (when the networks have one) on the reconstruction E/G just made, detached: J's loss does not reach E/G.
    With judge_end_to_end, `update_eg` adds J's loss on the live reconstruction to E/G's loss and steps J with
    E/G (DRAEM's one network); otherwise it is E/G's update alone."""

    def __init__(self, step: Step, nets: dict[str, nn.Module], wrap: Wrap) -> None:
        self.fraction = step.cfg.train.simulate
        self.step = step
        self.j = wrap(nets["J"]) if "J" in nets else None
        self.end_to_end = self.j is not None and step.cfg.train.judge_end_to_end and step.cfg.train.restore
        if self.j is not None:
            step._adam("J", list(nets["J"].parameters()))

    def update_eg(self, loss_eg: torch.Tensor, x_in: torch.Tensor, x_hat: torch.Tensor,
                  masks: torch.Tensor | None) -> dict[str, float]:
        """E/G's update on `loss_eg`. End to end, J's focal loss on (x_in, x_hat) with x_hat live joins it,
        summed over each image's pixels (a per-sample sum like the consistency loss, so that it is not drowned
        by it; Adam makes J's own update indifferent to that scale), and J steps with E/G: {"loss_j": …}.
        Otherwise E/G alone: {}."""
        if not self.end_to_end or masks is None:
            self.step._update("EG", loss_eg)
            return {}
        loss_j = focal_loss(self.j(x_in, x_hat), masks) * masks[0].numel()
        self.step._update("EG", loss_eg + loss_j, "J")
        return {"loss_j": loss_j.item()}

    def corrupt(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(what E/G get, the masks or None, what J judges): the corrupted batch twice, or with
        restore=false the clean batch for E/G and the corrupted one for J."""
        if self.fraction <= 0:
            return x, None, x
        x_sim, masks = simulate(x, self.fraction, None)
        return (x_sim if self.step.cfg.train.restore else x), masks, x_sim

    def judge(self, x_in: torch.Tensor, x_hat: torch.Tensor | None, masks: torch.Tensor | None) -> dict[str, float]:
        """Train J on (x_in, x_hat): x_hat is E/G's reconstruction of x_in (made here when E/G trained on
        something else, restore=false)."""
        if self.j is None or masks is None or self.end_to_end:
            return {}
        if x_hat is None:
            with torch.no_grad():
                x_hat = self.step.nets["G"](self.step.nets["E"](x_in))
        logits = self.j(x_in, x_hat.detach())
        loss = focal_loss(logits, masks)
        self.step._update("J", loss)
        return {"loss_j": loss.item()}


class BiGANStep(Step):
    """D, then E and G: alpha·consistency + (1-alpha)·adversarial (Algorithm 1)."""

    def __init__(self, cfg: Config, nets: dict[str, nn.Module], wrap: Wrap = _unwrapped) -> None:
        super().__init__(cfg, nets)
        self.eg = wrap(EGPair(nets["E"], nets["G"]))
        self._adam("EG", list(nets["E"].parameters()) + list(nets["G"].parameters()))
        self.d = wrap(nets["D"])
        self._adam("D", list(nets["D"].parameters()))
        self.simulation = Simulation(self, nets, wrap)

    def step(self, x: torch.Tensor) -> dict[str, float]:
        t, D = self.cfg.train, self.nets["D"]
        x_in, masks, x_judged = self.simulation.corrupt(x)
        z = torch.randn(x.shape[0], self.cfg.model.z_dim, device=x.device)
        z_hat, x_tilde, x_hat, z_tilde = self.eg(x_in, z)
        # D: (x, E(x)) is real, (G(z), z) is fake (x as E saw it).
        real, fake = self.d(torch.cat([x_in, x_tilde.detach()]), torch.cat([z_hat.detach(), z])).chunk(2)
        loss_d = d_loss(real, fake, t.loss)
        self._update("D", loss_d)
        # E, G: through the just-updated D, frozen.
        with _Frozen(D):
            real_eg, fake_eg = D(torch.cat([x_in, x_tilde]), torch.cat([z_hat, z])).chunk(2)
            adv = eg_adv_loss(real_eg, fake_eg, t.loss)
            cons = consistency_loss(x, x_hat, z, z_tilde, t.latent_weight)
            loss_eg = t.alpha * cons + (1.0 - t.alpha) * adv
            joint = self.simulation.update_eg(loss_eg, x_in, x_hat, masks)
        return {**joint, "loss_d": loss_d.item(), "loss_eg": loss_eg.item(), "cons": cons.item(), "adv": adv.item(),
                "recon": (x - x_hat).abs().mean().item(), "z_norm": z_hat.detach().norm(dim=1).mean().item(),
                "d_real": real.mean().item(), "d_fake": fake.mean().item(),
                **self.simulation.judge(x_judged, x_hat if x_judged is x_in else None, masks)}


class AEStep(Step):
    """E and G on the mean absolute reconstruction error."""

    def __init__(self, cfg: Config, nets: dict[str, nn.Module], wrap: Wrap = _unwrapped) -> None:
        super().__init__(cfg, nets)
        self.eg = wrap(EGPair(nets["E"], nets["G"]))
        self._adam("EG", list(nets["E"].parameters()) + list(nets["G"].parameters()))
        self.simulation = Simulation(self, nets, wrap)

    def step(self, x: torch.Tensor) -> dict[str, float]:
        x_in, masks, x_judged = self.simulation.corrupt(x)
        z_hat, x_hat = self.eg(x_in, None)
        recon = (x - x_hat).abs().mean()
        joint = self.simulation.update_eg(recon, x_in, x_hat, masks)
        return {**joint, "loss_eg": recon.item(), "recon": recon.item(), "z_norm": z_hat.detach().norm(dim=1).mean().item(),
                **self.simulation.judge(x_judged, x_hat if x_judged is x_in else None, masks)}


class AnoGANStep(Step):
    """D on images against G(z), then G through the just-updated D."""

    def __init__(self, cfg: Config, nets: dict[str, nn.Module], wrap: Wrap = _unwrapped) -> None:
        super().__init__(cfg, nets)
        self.g = wrap(nets["G"])
        self._adam("G", list(nets["G"].parameters()))
        self.d = wrap(nets["D"])
        self._adam("D", list(nets["D"].parameters()))

    def step(self, x: torch.Tensor) -> dict[str, float]:
        t, D = self.cfg.train, self.nets["D"]
        z = torch.randn(x.shape[0], self.cfg.model.z_dim, device=x.device)
        fake_x = self.g(z)
        real, fake = self.d(torch.cat([x, fake_x.detach()])).chunk(2)
        loss_d = d_loss(real, fake, t.loss)
        self._update("D", loss_d)
        with _Frozen(D):
            loss_g = gan_g_loss(D(fake_x), t.loss)
            self._update("G", loss_g)
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "d_real": real.mean().item(),
                "d_fake": fake.mean().item()}


def make_step(cfg: Config, nets: dict[str, nn.Module], wrap: Wrap = _unwrapped) -> Step:
    """The training step of cfg's variant over `nets` (build_networks); `wrap` is DDP's under torchrun."""
    if cfg.model.variant == "ae":
        return AEStep(cfg, nets, wrap)
    if cfg.model.variant == "anogan":
        return AnoGANStep(cfg, nets, wrap)
    return BiGANStep(cfg, nets, wrap)
