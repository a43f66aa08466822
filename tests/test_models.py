"""Shapes of E, G, D for every size and channel count; the projection head against its formula by hand.

Also the latent bound, the variants' network sets and AnoGAN's latent search.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.errors import UserError
from trainer.config import ModelConfig
from trainer.detector import latent_search
from trainer.models import (
    Discriminator,
    Encoder,
    Generator,
    ImageDiscriminator,
    build_networks,
    stage_widths,
)

torch.set_num_threads(1)


def _cfg(size: int = 32, channels: int = 3, **kw: object) -> ModelConfig:
    return ModelConfig(image_size=size, channels=channels, z_dim=kw.pop("z_dim", 10), width=4,  # type: ignore[arg-type]
                       max_width=16, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [32, 64, 128, 256])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_every_size_and_channel_count(size: int, channels: int) -> None:
    cfg = _cfg(size, channels)
    x = torch.rand(2, channels, size, size) * 2 - 1
    z = torch.randn(2, cfg.z_dim)
    E, G = Encoder(cfg), Generator(cfg)
    assert E(x).shape == (2, cfg.z_dim)
    out = G(z)
    assert out.shape == (2, channels, size, size)
    assert out.abs().max() <= 1.0
    for join in ("projection", "concat"):
        D = Discriminator(_cfg(size, channels, join=join))
        assert D(x, z).shape == (2,)
        assert D.features(x, z).dim() == 2
    assert ImageDiscriminator(cfg)(x).shape == (2,)
    assert len(stage_widths(cfg)) == {32: 3, 64: 4, 128: 5, 256: 6}[size]


def test_unsupported_size_is_a_user_error() -> None:
    with pytest.raises(UserError, match="image size 48"):
        Encoder(_cfg(48))


def _hand_projection(pooling: str) -> Discriminator:
    """A projection D whose trunk is the identity: input N×3×4×4 is φ(x) itself; weights set by hand."""
    D = Discriminator(_cfg(32, 3, z_dim=2, pooling=pooling, d_spectral_norm=False))
    D.trunk = nn.Identity()
    D.f1 = nn.Linear(3, 1)
    D.fz = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        D.f1.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
        D.f1.bias.fill_(0.25)
        D.fz.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]]))
    return D


def test_projection_head_equals_formula_by_hand() -> None:
    D = _hand_projection("sum")
    phi = torch.zeros(1, 3, 4, 4)
    phi[0, 0] = 0.5    # sum over 16 positions -> 8
    phi[0, 1, 0, 0] = 3.0  # -> 3
    phi[0, 2, 1, 1] = -1.0  # -> -1
    z = torch.tensor([[2.0, -1.0]])
    # h = (8, 3, -1); f1(h) = 8 - 6 - 0.5 + 0.25 = 1.75; fz(h) = (8, 3 - (-1)) = (8, 4); <(8,4),(2,-1)> = 12
    assert D(phi, z).item() == pytest.approx(1.75 + 12.0)
    assert torch.equal(D.features(phi, z), torch.tensor([[8.0, 3.0, -1.0]]))
    # the feature f does not depend on z; D is linear in z
    assert torch.equal(D.features(phi, -z), D.features(phi, z))
    assert (D(phi, 2 * z) - D(phi, z)).item() == pytest.approx(12.0)


def test_mean_pooling_divides_by_the_feature_map_area() -> None:
    phi = torch.zeros(1, 3, 4, 4)
    phi[0, 0] = 0.5
    z = torch.zeros(1, 2)
    assert _hand_projection("mean").features(phi, z)[0, 0].item() == pytest.approx(0.5)
    assert _hand_projection("mean")(phi, z).item() == pytest.approx(0.5 + 0.25)


def test_concat_join_uses_z_in_its_features() -> None:
    cfg = _cfg(32, 1, join="concat")
    D = Discriminator(cfg)
    x = torch.randn(2, 1, 32, 32)
    z = torch.randn(2, cfg.z_dim)
    assert not torch.allclose(D.features(x, z), D.features(x, z + 1))


def test_spectral_norm_only_when_asked() -> None:
    def count(D: nn.Module) -> int:
        return sum(hasattr(m, "parametrizations") for m in D.modules() if isinstance(m, nn.Conv2d))

    assert count(Discriminator(_cfg(d_spectral_norm=True))) == 3
    assert count(Discriminator(_cfg(d_spectral_norm=False))) == 0
    bn = sum(isinstance(m, nn.BatchNorm2d) for m in Discriminator(_cfg(d_batchnorm=True)).modules())
    assert bn == 2  # every conv but the first (DCGAN)


def test_latent_bound_keeps_codes_within_it() -> None:
    E = Encoder(_cfg(latent_bound=0.5))
    with torch.no_grad():
        E.head.weight.mul_(1000)
    z = E(torch.randn(4, 3, 32, 32))
    assert z.abs().max() <= 0.5
    assert z.abs().max() > 0.4  # saturates rather than zeroes
    unbounded = Encoder(_cfg(latent_bound=0.0))
    with torch.no_grad():
        unbounded.head.weight.mul_(1000)
    assert unbounded(torch.randn(4, 3, 32, 32)).abs().max() > 0.5


@pytest.mark.parametrize(("variant", "keys"), [("ours-proj", {"E", "G", "D"}), ("egbad", {"E", "G", "D"}),
                                               ("ae", {"E", "G"}), ("anogan", {"G", "D"})])
def test_variants_build_their_networks(variant: str, keys: set[str]) -> None:
    assert set(build_networks(_cfg(variant=variant))) == keys
    with pytest.raises(UserError, match="unknown model"):
        build_networks(_cfg(variant="gan"))


def test_latent_search_lowers_its_objective() -> None:
    torch.manual_seed(0)
    cfg = _cfg(32, 1)
    G, D = Generator(cfg).eval(), ImageDiscriminator(cfg).eval()
    x = G(torch.randn(3, cfg.z_dim)).detach()

    def objective(z: torch.Tensor) -> float:
        g = G(z)
        return float((0.9 * (x - g).abs().mean() + 0.1 * (D.features(x) - D.features(g)).abs().mean()).item())

    z0 = latent_search(G, D, x, steps=0, lr=0.05, lam=0.1, seed=3)
    z1 = latent_search(G, D, x, steps=30, lr=0.05, lam=0.1, seed=3)
    assert objective(z1) < 0.8 * objective(z0)
    assert all(p.requires_grad for p in G.parameters())  # G is unfrozen afterwards
