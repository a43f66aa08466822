"""The training losses: consistency (L_cons), the adversarial losses of D and of E/G (BCE or hinge), AnoGAN's G,
and the pixel judge's focal loss.

L_cons's norms are the paper's ‖·‖₁, summed over each sample's elements and averaged over the batch; the
adversarial losses are batch means of per-pair terms. The anomaly score is in trainer/score.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def consistency_loss(x: torch.Tensor, x_hat: torch.Tensor, z: torch.Tensor, z_tilde: torch.Tensor,
                     latent_weight: float = 1.0) -> torch.Tensor:
    """L_cons = E_batch ||x - G(E(x))||_1 + latent_weight · E_batch ||z - E(G(z))||_1.

    Each norm sums over the sample's elements (the paper's ||·||_1), so the image term outweighs the
    latent and adversarial terms by its pixel count (per-element means starve it: docs/research/findings.md F2, F3).
    """
    return (x - x_hat).abs().flatten(1).sum(1).mean() + latent_weight * (z - z_tilde).abs().sum(1).mean()


def d_loss(real: torch.Tensor, fake: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """D's loss on logits of real pairs (x, E(x)) and fake pairs (G(z), z).

    bce: -log σ(real) - log(1 - σ(fake)); hinge: relu(1 - real) + relu(1 + fake).
    """
    if kind == "bce":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    raise ValueError(f"unknown adversarial loss {kind!r}")


def eg_adv_loss(real: torch.Tensor, fake: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """E's and G's adversarial loss: make D call (x, E(x)) fake and (G(z), z) real.

    bce: -log(1 - σ(real)) - log σ(fake); hinge: real - fake (BigBiGAN's generator side).
    """
    if kind == "bce":
        return F.softplus(real).mean() + F.softplus(-fake).mean()
    if kind == "hinge":
        return real.mean() - fake.mean()
    raise ValueError(f"unknown adversarial loss {kind!r}")


def gan_g_loss(fake: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """A plain GAN generator's loss (AnoGAN): non-saturating BCE or hinge (-D(G(z)))."""
    return F.softplus(-fake).mean() if kind == "bce" else -fake.mean()


def focal_loss(logits: torch.Tensor, masks: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """The pixel judge's loss: focal loss (Lin et al. 2017) of per-pixel logits against {0, 1} masks,
    the mean over pixels: easy pixels (most of every image) weigh (1 - p_t)^gamma less than hard ones."""
    bce = F.binary_cross_entropy_with_logits(logits, masks, reduction="none")
    p_t = torch.exp(-bce)
    return ((1.0 - p_t) ** gamma * bce).mean()
