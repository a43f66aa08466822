"""Detector configuration as plain data: the networks, the training, the score; presets and --set parsing.

Each option's comment says what it does; why it has its default is in docs/research/findings.md
(the F numbers in the comments).
The paper's recipe is one `--set recipe=paper` away from the shipped defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from common.errors import UserError

VARIANTS = ("ours-proj", "ours-concat", "bigan-proj", "egbad", "ae", "anogan")
SIZES = (32, 64, 128, 256)


@dataclass
class ModelConfig:
    """The networks' shapes (trainer/models.py)."""

    variant: str = "ours-proj"   # one of VARIANTS
    image_size: int = 128        # 32, 64, 128 or 256 px (square) (F22)
    channels: int = 3            # 1 (grey) or 3 (BGR)
    z_dim: int = 100             # latent size (paper: 100)
    width: int = 32              # channels of the first conv; doubles per stride-2 stage
    max_width: int = 256         # cap on conv channels for the big sizes
    join: str = "projection"     # D joins x and z by "projection" (paper eq. 13) or "concat" (EGBAD)
    eg_batchnorm: bool = True    # BatchNorm on E's and G's convs (paper: yes)
    d_batchnorm: bool = False    # BatchNorm on D's convs (paper: yes; with spectral norm it does not learn, F1)
    d_spectral_norm: bool = True  # spectral norm on D's convs (paper: yes)
    pooling: str = "sum"         # D's global pooling of the trunk: "sum" (paper) or "mean"
    latent_bound: float = 4.0    # E(x) = b·tanh(h/b) keeps codes on the prior's scale; 0 = unbounded (paper)
    concat_hidden: int = 512     # width of the z-MLP and joint layer of the concat D
    judge: bool = False          # a pixel judge J(x, G(E(x))) beside D (trainer/models.py PixelJudge), trained on
    #                              simulated anomalies (needs simulate > 0); the score is then its pooled map
    judge_width: int = 16        # channels of J's first stage; doubles per stage


@dataclass
class TrainConfig:
    """How the networks are trained (trainer/steps.py, trainer/fit.py)."""

    epochs: int = 80             # passes over the training images
    batch_size: int = 16
    lr: float = 8e-4             # Adam learning rate for E, G and D (paper: 1e-4; F14)
    beta1: float = 0.5           # Adam betas (paper: 0.9, 0.999)
    beta2: float = 0.999
    alpha: float = 0.9           # L_EG = alpha·L_cons + (1-alpha)·L_adv (paper: 0.9; 0 = no consistency)
    loss: str = "hinge"          # adversarial loss: "bce" (paper) or "hinge"
    latent_weight: float = 1.0   # weight of ||z - E(G(z))||_1 inside L_cons (per-sample sums, the paper's norm)
    ema: float = 0.99            # decay per step of an exponential moving average of E, G and D's weights,
    #                              which then is what gets validated and shipped; 0 = off (the last weights)
    bn_recalibrate: bool = True  # re-estimate BatchNorm stats on the scoring path E(x) -> G(E(x)) each epoch
    shift: float = 0.06          # random translation of training images, up to this fraction of the size; 0 = off
    simulate: float = 0.0        # share of each batch given a simulated anomaly (trainer/anomalies.py); E/G then
    #                              restore the clean image (the consistency target) and J learns the masks; 0 = off
    restore: bool = True         # with simulate: E/G get the corrupted images and restore the clean ones; false = E/G
    #                              train on clean images only and J sees the corrupted ones' reconstructions (ablation)
    judge_end_to_end: bool = False  # with a judge: J's loss also reaches E/G through the reconstruction (DRAEM trains
    #                              both as one network); false = J learns on a detached reconstruction
    val_fraction: float = 0.1    # held-out normal training images for checkpoint choice and threshold
    select: str = "val"          # epoch to ship: "val" (lowest held-out reconstruction error) or "last"
    seed: int = 0
    device: str = "auto"         # auto, cpu or cuda


@dataclass
class ScoreConfig:
    """How a trained detector scores an image and where its threshold lies (trainer/score.py, detector.py)."""

    lam: float = 0.1             # score A = (1-lam)·L_R + lam·L_D (paper: 0.1)
    score_reduce: str = "max"    # L_R per image: "max" of the anomaly map, or its "mean" (paper)
    smooth_sigma: float = 0.0    # Gaussian sigma (px) of the anomaly map; 0 = image_size/64
    score_tolerance: int = 1     # residual = distance of x to the range of G(E(x)) within ± this many px;
    #                              0 = |x - G(E(x))| (paper)
    score_normalize: str = "pixel"  # "pixel": standardise the map per pixel (and L_D, L_R) by the normal
    #                              training images' mean and spread (trainer/score_stats.py); "none" (paper)
    score_channels: str = "max"  # "max": each colour channel's residual map standardised on its own, the map
    #                              is their max; "mean": one map of the channel mean (paper)
    score_pair_weight: float = 0.0  # A += this · L_P, D's verdict on the pair: -D(x, E(x)) standardised on the normal
    #                              images (EGBAD's cross-entropy score); needs score_normalize=pixel; 0 = off (paper)
    score_code_weight: float = 0.0  # A += this · L_Z, the Mahalanobis distance of E(x) to the normal images' codes,
    #                              standardised; needs score_normalize=pixel; 0 = off (paper)
    threshold_rule: str = "sigma"  # shipped threshold from held-out normal scores: "sigma" = mean + threshold_sigmas
    #                              standard deviations, "quantile" = their threshold_quantile (trainer/threshold.py)
    threshold_sigmas: float = 3.0
    threshold_quantile: float = 0.99
    judge_topk: float = 0.01     # with a pixel judge: the image score is the mean of this share of the smoothed
    #                              judge map's highest pixels (at least one pixel; a small share = its max)
    judge_normalize: bool = False  # standardise the judge's map per pixel by the normal training images (with
    #                              score_normalize=pixel); it helped on one surface and hurt on another (F25)
    anogan_steps: int = 100      # AnoGAN: Gamma, gradient steps of the latent search per image
    anogan_lr: float = 0.05      # AnoGAN: Adam learning rate of the latent search


# Per-variant settings applied before the user's --set overrides.
VARIANT_PRESETS: dict[str, dict[str, Any]] = {
    "ours-proj": {"join": "projection"},
    "ours-concat": {"join": "concat"},
    "bigan-proj": {"join": "projection", "alpha": 0.0},
    "egbad": {"join": "concat", "alpha": 0.0},
    "ae": {"alpha": 1.0, "lam": 0.0},
    "anogan": {"join": "projection"},
}

# The paper's recipe as written, selected with `--set recipe=paper` (other --set items still apply).
PAPER_RECIPE: dict[str, Any] = {
    "d_batchnorm": True, "pooling": "sum", "loss": "bce", "lr": 1e-4, "beta1": 0.9, "beta2": 0.999,
    "latent_bound": 0.0, "alpha": 0.9, "score_reduce": "mean", "bn_recalibrate": False,
    "shift": 0.0, "score_tolerance": 0, "score_normalize": "none", "score_channels": "mean",
    "score_pair_weight": 0.0, "score_code_weight": 0.0,
}

# MNIST one-class (`fit --mnist-digit`, `bench` on MNIST folders), under the explicit options and --set
# items: whole-image anomalies, centred digits, ≈ 6,000 images a digit, 28-px images
# (docs/research/findings.md F6, F11, F14, F19, F20).
MNIST_OVERRIDES: dict[str, Any] = {"image_size": 32, "score_reduce": "mean", "shift": 0.0, "epochs": 40, "lr": 2e-4,
                                   "z_dim": 16, "score_pair_weight": 1.0, "score_code_weight": 1.0}

# Checkpoints written before an option existed behave as they did then: a stored config that lacks
# score_tolerance predates the tolerant residual, the per-pixel statistics and the image_size/64 sigma;
# one that lacks score_channels predates the per-channel map (it scored the channel mean).
LEGACY_SCORE = {"score_tolerance": 0, "score_normalize": "none", "score_channels": "mean"}

# Options that were measured, did not help and were removed: name -> (the value that meant "off",
# where the measurement is). A stored config may hold them at that value; `--set` of one is an error.
RETIRED: dict[str, tuple[Any, str]] = {
    "adv_balance": (False, "docs/research/findings.md F23"),
    "adv_match": (False, "docs/research/findings.md F24"),
    "lr_schedule": ("constant", "docs/research/findings.md F14, F19"),
    "rotate": (0.0, "docs/research/findings.md F17"),
    "input_noise": (0.0, "docs/research/findings.md F21"),
    "input_erase": (0.0, "docs/research/findings.md F21"),
    "d_sn_heads": (False, "docs/research/results.md, ablations"),
    "cons_reduce": ("sum", "docs/research/findings.md F2, F3"),
}
_RETIRED_SHAPES = {"d_sn_heads"}   # retired options that changed the networks' weights, not only their training


def with_mnist_defaults(overrides: dict[str, Any], mnist: bool) -> dict[str, Any]:
    """MNIST_OVERRIDES under the given overrides (an explicit --epochs wins) when mnist, else overrides."""
    if not mnist:
        return overrides
    return {**MNIST_OVERRIDES, **{k: v for k, v in overrides.items() if v is not None}}


_CHOICES: dict[str, tuple[Any, ...]] = {
    "variant": VARIANTS, "image_size": SIZES, "channels": (1, 3), "join": ("projection", "concat"),
    "pooling": ("sum", "mean"), "loss": ("bce", "hinge"), "score_reduce": ("mean", "max"),
    "select": ("val", "last"), "score_normalize": ("none", "pixel"), "score_channels": ("mean", "max"),
    "threshold_rule": ("sigma", "quantile"), "device": ("auto", "cpu", "cuda"),
}
_POSITIVE = {"z_dim", "width", "max_width", "concat_hidden", "judge_width", "epochs", "batch_size", "lr", "anogan_steps", "threshold_sigmas",
             "anogan_lr"}
_UNIT = {"alpha", "lam", "val_fraction", "shift", "threshold_quantile", "beta1", "beta2", "ema", "simulate"}


def retired_in(stored: dict[str, Any]) -> dict[str, Any]:
    """The retired options a stored config (its flat "train" and "model" sections) holds switched on."""
    flat = {**stored.get("model", {}), **stored.get("train", {})}
    return {k: flat[k] for k, (off, _) in RETIRED.items() if k in flat and flat[k] != off}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's form (format 1): "model", and "train" holding the training and score options."""
        return {"model": asdict(self.model), "train": {**asdict(self.train), **asdict(self.score)}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Read a stored config (format 1, or older): each key into its section; a retired option is dropped,
        unless it was on and shaped the networks (then their weights do not fit: a UserError)."""
        shaped = sorted(set(retired_in(d)) & _RETIRED_SHAPES)
        if shaped:
            raise UserError(f"this checkpoint was trained with the retired option(s) {', '.join(shaped)} "
                            f"({'; '.join(RETIRED[k][1] for k in shaped)}), which shaped its networks; "
                            "train it again with `trainer fit`")
        m = ModelConfig(**_known(ModelConfig, d.get("model", {})))
        stored = {**d.get("train", {}), **d.get("score", {})}
        t = TrainConfig(**_known(TrainConfig, stored))
        s = ScoreConfig(**_known(ScoreConfig, stored))
        if stored and "score_tolerance" not in stored:   # saved before the option existed
            for key, value in LEGACY_SCORE.items():
                setattr(s, key, value)
            if s.smooth_sigma == 0:
                s.smooth_sigma = m.image_size / 32
        elif stored and "score_channels" not in stored:
            s.score_channels = "mean"
        if stored and "threshold_rule" not in stored:   # saved when the quantile was the only rule
            s.threshold_rule = "quantile"
        return cls(model=m, train=t, score=s)


def _known(kind: type, stored: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in stored.items() if k in names}


def _owner(cfg: Config, key: str) -> object:
    parts = (cfg.model, cfg.train, cfg.score)
    for part in parts:
        if key in {f.name for f in fields(part)}:
            return part
    if key in RETIRED:
        raise UserError(f"option {key!r} was retired: it was measured and did not help ({RETIRED[key][1]})")
    known = sorted(f.name for part in parts for f in fields(part))
    raise UserError(f"unknown option {key!r}; known options: {', '.join(known)}")


def _parse_value(key: str, text: str, current: Any) -> Any:
    kind = type(current)
    try:
        if kind is bool:
            low = text.strip().lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(text)
            return low in ("1", "true", "yes", "on")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        return text.strip()
    except ValueError:
        raise UserError(f"bad value for {key}: {text!r} is not a {kind.__name__}") from None


def _validate(key: str, value: Any) -> None:
    if key in _CHOICES and value not in _CHOICES[key]:
        raise UserError(f"bad value for {key}: {value!r}; choose one of {', '.join(map(str, _CHOICES[key]))}")
    if key in _POSITIVE and value <= 0:
        raise UserError(f"bad value for {key}: {value!r}; it must be > 0")
    if key in _UNIT and not 0.0 <= value <= 1.0:
        raise UserError(f"bad value for {key}: {value!r}; it must lie in [0, 1]")
    if key == "score_tolerance" and not 0 <= value <= 8:
        raise UserError(f"bad value for score_tolerance: {value!r}; it must lie in 0..8 px")
    if key == "smooth_sigma" and value < 0:
        raise UserError(f"bad value for smooth_sigma: {value!r}; it must be >= 0 (0 = image_size/64)")
    if key in ("score_pair_weight", "score_code_weight") and not 0.0 <= value <= 10.0:
        raise UserError(f"bad value for {key}: {value!r}; it must lie in 0..10 (0 = off)")
    if key == "judge_topk" and not 0.0 < value <= 1.0:
        raise UserError(f"bad value for judge_topk: {value!r}; it must lie in (0, 1]")
    if key == "latent_bound" and value < 0:
        raise UserError(f"bad value for latent_bound: {value!r}; it must be >= 0 (0 = unbounded)")


def set_option(cfg: Config, key: str, value: Any) -> None:
    """Set one option by name after checking its type and range."""
    owner = _owner(cfg, key)
    current = getattr(owner, key)
    if isinstance(value, str) and not isinstance(current, str):
        value = _parse_value(key, value, current)
    elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    _validate(key, value)
    setattr(owner, key, value)


def parse_sets(items: list[str]) -> dict[str, str]:
    """['alpha=0.9', 'loss=bce'] -> {'alpha': '0.9', 'loss': 'bce'}; malformed items are a UserError."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad --set {item!r}; write KEY=VALUE, e.g. --set alpha=0.9")
        out[key.strip()] = value
    return out


def build_config(variant: str = "ours-proj", overrides: dict[str, Any] | None = None,
                 sets: list[str] | None = None) -> Config:
    """Defaults, then the variant's preset, then explicit overrides, then --set items (last wins)."""
    if variant not in VARIANTS:
        raise UserError(f"unknown model {variant!r}; choose one of {', '.join(VARIANTS)}")
    cfg = Config()
    cfg.model.variant = variant
    for key, value in VARIANT_PRESETS[variant].items():
        set_option(cfg, key, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            set_option(cfg, key, value)
    items = parse_sets(sets or [])
    recipe = items.pop("recipe", None)
    if recipe is not None:
        if recipe.strip() != "paper":
            raise UserError(f"bad value for recipe: {recipe!r}; the one recipe is 'paper'")
        for key, value in PAPER_RECIPE.items():
            if key != "alpha" or cfg.train.alpha > 0:  # keep the variant's alpha = 0 (no consistency)
                set_option(cfg, key, value)
    for key, value in items.items():
        if key == "variant":
            raise UserError("choose the variant with --model, not --set variant=...")
        set_option(cfg, key, value)
    check_consistent(cfg)
    return cfg


def check_consistent(cfg: Config) -> None:
    """Options that are each valid but not together: a UserError naming the fix."""
    s = cfg.score
    if cfg.model.judge and cfg.train.simulate <= 0:
        raise UserError("the pixel judge learns from simulated anomalies: with judge=true also --set simulate=0.5 "
                        "(the share of each batch that gets one)")
    if cfg.model.variant == "anogan" and (cfg.model.judge or cfg.train.simulate > 0):
        raise UserError("anogan has no encoder to restore a corrupted image or to judge with; "
                        "simulate and judge apply to the other variants")
    if s.score_normalize == "none" and (s.score_pair_weight > 0 or s.score_code_weight > 0):
        raise UserError("score_pair_weight and score_code_weight weigh standardised terms: with score_normalize=none "
                        "also --set score_pair_weight=0 --set score_code_weight=0")


def replace(cfg: Config, **changes: Any) -> Config:
    """A copy of cfg with some options changed (by name, in any section)."""
    new = Config(model=dataclasses.replace(cfg.model), train=dataclasses.replace(cfg.train),
                 score=dataclasses.replace(cfg.score))
    for key, value in changes.items():
        set_option(new, key, value)
    check_consistent(new)
    return new
