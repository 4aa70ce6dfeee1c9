"""Run configuration: one dataclass, validated on creation, saved as JSON with every run.

Defaults are the practicum's (../shared/docs/lecture.md, section 5): MNIST, d = 20,
hidden = d^2 = 400, BCE + 1.0 * KL, Adam with lr 1e-3, batch 256, 10 epochs, seed 1.

Each field also carries its ``vaelab train`` flag (``--latent-dim`` for ``latent_dim``):
the help, the group it is listed in and, where the annotation does not say enough, how
its text is read (``parse``), its ``metavar`` and its ``choices``. The command line builds
its flags from them; the library's errors name the fields (:class:`SettingError`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vaelab.errors import SettingError
from vaelab.setting_spec import (
    ACTIVATION_CHOICES,
    BINARIZE_CHOICES,
    CONDITION_CHOICES,
    DATA,
    DEVICE_CHOICES,
    ESTIMATOR_CHOICES,
    LR_SCHEDULE_CHOICES,
    MODEL,
    OBJECTIVE_CHOICES,
    OPTIMISATION,
    PRECISION_CHOICES,
    PRIOR_CHOICES,
    RECON_CHOICES,
    RUN,
    check_choice,
    setting,
)
from vaelab.setting_values import (
    epochs_or_share,
    hidden_sizes,
    int_list,
    number_or_learned,
    stored_hidden,
)

# The lecture's sizes, unless the model has its own (vaelab.models.MODELS[name].defaults)
LECTURE_LATENT_DIM, LECTURE_ACTIVATION = 20, "relu"
# beta of a conditional run unless given: enough KL pressure that the latent leaves the
# class to the label (docs/results.md, "Conditional VAE"; benchmarks/conditional.py)
CONDITIONAL_BETA = 4.0
DEFAULT_IW_K = 5  # importance samples of --objective iwae unless --iw-k says otherwise
LECTURE_EMBED_EPOCHS = (0, 5, 10)
DEFAULT_EPOCHS = 10  # the lecture's, unless --epochs or --time-budget says otherwise


@dataclass
class TrainConfig:
    """Every setting of a training run. ``hidden=None`` means ``latent_dim ** 2``;
    ``beta=None`` means 1, or ``CONDITIONAL_BETA`` for a conditional run; the model's
    sizes left as None are its own defaults (``_model_defaults``), else the lecture's.

    Examples:
        >>> TrainConfig().hidden, TrainConfig(latent_dim=2).hidden  # d^2 unless given
        (400, 4)
        >>> TrainConfig(hidden=[200, 200]).hidden, TrainConfig(hidden=[300]).hidden
        ([200, 200], 300)
        >>> c = TrainConfig(model="vae-2l")  # Burda et al.'s two stochastic layers
        >>> c.latent_dim, c.z1_dim, c.hidden, c.activation
        (50, 100, [200, 200], 'tanh')
        >>> TrainConfig().beta, TrainConfig(condition="label").beta
        (1.0, 4.0)
        >>> TrainConfig(model="ae", epochs=3).to_dict()["model"]
        'ae'
        >>> TrainConfig(lr=float("nan"))
        Traceback (most recent call last):
        ...
        vaelab.errors.SettingError: lr must be a positive finite number, got nan
    """

    dataset: str = setting(
        "mnist", DATA, "mnist, fashion-mnist, an IDX folder or an .npz (default {default})"
    )
    data_dir: str | None = setting(
        None, DATA, "look here first for the data files (also $VAELAB_DATA)"
    )
    limit: int | None = setting(
        None, DATA, "train on the first N training images only", metavar="N"
    )
    # Taken before --limit, so a limited run is selected on the same images (MNIST: the
    # last 10,000 of its 60,000 training images are its canonical validation split).
    val_size: int | None = setting(
        None,
        DATA,
        "hold out the last N training images (before --limit) for validation: val_loss "
        "per epoch and checkpoints/best.pt by it; MNIST's own split is 10000",
        metavar="N",
    )
    binarize: str = setting(
        "none",
        DATA,
        "Bernoulli-binarised pixels: dynamic re-samples each batch (default {default})",
        choices=BINARIZE_CHOICES,
    )
    # a name of vaelab.presets.PRESETS; TrainConfig.from_preset (and `vaelab train --preset`)
    # fills the other settings from it, here it is the record of where they came from
    preset: str | None = setting(
        None,
        MODEL,
        "a named recipe (see `vaelab presets`): its settings, with the flags given here "
        "winning (a given --epochs or --time-budget replaces the preset's length)",
        metavar="NAME",
    )
    # a name of vaelab.models.MODELS, checked when the config is made (no choices here:
    # the registry imports torch, and `vaelab train --help` must not)
    model: str = setting("vae", MODEL, "model name, see `vaelab models` (default {default})")
    # None: the model's own default (MODELS[name].defaults), else the lecture's
    latent_dim: int | None = setting(
        None, MODEL, "latent size d (default 20; vae-2l: 50, its top latent)", metavar="D"
    )
    # an int (one hidden layer, as earlier versions wrote it) or a list (one per layer)
    hidden: int | list[int] | None = setting(
        None,
        MODEL,
        "hidden units, or one size per layer: 200,200 (default d^2; vae-2l: 200,200)",
        parse=hidden_sizes,
        metavar="H[,H...]",
    )
    activation: str | None = setting(
        None,
        MODEL,
        "the MLP models' nonlinearity (default relu; vae-2l: tanh)",
        choices=ACTIVATION_CHOICES,
    )
    z1_dim: int | None = setting(  # vae-2l only (default 100, Burda et al.'s)
        None, MODEL, "vae-2l: size of the lower latent z1 (default 100)", metavar="D1"
    )
    recon: str = setting(  # bce: Bernoulli (sum over pixels); mse: 0.5 * squared error
        "bce",
        MODEL,
        "the lecture's reconstruction loss: bce, or mse = 0.5 * squared error (default {default})",
        choices=RECON_CHOICES,
    )
    # None: 1, the lecture's, or CONDITIONAL_BETA for --condition label (docs/concepts.md,
    # "A conditional VAE": at beta = 1 the latent carries the class too)
    beta: float | None = setting(
        None,
        MODEL,
        f"weight of the KL term (default 1; {CONDITIONAL_BETA:g} with --condition label)",
    )
    # p(x|z), the one name the code reads (vaelab.losses.LIKELIHOOD_NAMES: bernoulli,
    # continuous-bernoulli, gaussian, mse); None when made means "from --recon": bce ->
    # bernoulli, mse -> mse (_resolve_likelihood). Checked when the config is made.
    likelihood: str | None = setting(
        None,
        MODEL,
        "p(x|z) instead of --recon: bernoulli (= bce), continuous-bernoulli (a density "
        "on [0, 1]), gaussian (normalised, mean sigmoid(logits))",
    )
    gaussian_sigma: float | str | None = setting(  # gaussian only: fixed (1.0) or "learned"
        None,
        MODEL,
        "the gaussian likelihood's scale: a fixed number (default 1) or 'learned'",
        parse=number_or_learned,
        metavar="S|learned",
    )
    objective: str = setting(  # Burda et al. 2015 for iwae
        "elbo",
        MODEL,
        "training bound: elbo, or iwae, the importance-weighted bound (default {default})",
        choices=OBJECTIVE_CHOICES,
    )
    iw_k: int | None = setting(  # iwae only (default DEFAULT_IW_K)
        None,
        MODEL,
        f"importance samples of --objective iwae (default {DEFAULT_IW_K}; K=1 is the ELBO)",
        metavar="K",
    )
    # -- the gradient estimator of the IWAE bound and the prior p(z) (issue 16, part B);
    # checked by _validate_prior_and_estimator
    estimator: str = setting(  # dreg: Tucker, Lawson, Gu & Maddison 2018 (objectives.py)
        "standard",
        MODEL,
        "gradient of --objective iwae: standard, or dreg, the doubly reparameterised "
        "estimator (same loss, no score-function term in the encoder gradient) "
        "(default {default})",
        choices=ESTIMATOR_CHOICES,
    )
    prior: str = setting(  # vaelab.models.priors
        "standard",
        MODEL,
        "p(z): standard N(0, I), mog (a learned mixture of --prior-components Gaussians) "
        "or vamp (the VampPrior of --pseudo-inputs learned inputs) (default {default})",
        choices=PRIOR_CHOICES,
    )
    pseudo_inputs: int | None = setting(
        None, MODEL, "learned pseudo-inputs of --prior vamp (the paper uses 500)", metavar="K"
    )
    prior_components: int | None = setting(
        None, MODEL, "Gaussians in the mixture of --prior mog", metavar="K"
    )
    condition: str | None = setting(  # None = "none"; label: a conditional VAE (Sohn et al.)
        None,
        MODEL,
        "label: condition encoder and decoder on the data's labels, one-hot (a conditional "
        "VAE; needs labelled data); none (default)",
        choices=CONDITION_CHOICES,
    )
    kl_warmup: float | str = setting(
        0.0,
        MODEL,
        "anneal the KL weight linearly from 0 to beta over E epochs, or over P%% of the "
        "run (default 0: off)",
        parse=epochs_or_share,
        metavar="E|P%",
    )
    lr: float = setting(1e-3, OPTIMISATION, "Adam learning rate (default {default:g})")
    adam_eps: float = setting(
        1e-8,
        OPTIMISATION,
        "Adam's epsilon (default {default:g}; Burda et al. use 1e-4)",
        metavar="EPS",
    )
    # vaelab.training.schedules; a function of the share of training done, step by step
    lr_schedule: str = setting(
        "constant",
        OPTIMISATION,
        "the learning rate over the run: constant; burda, the IWAE paper's 8 stages (3^i "
        "epochs at lr*10^(-i/7), 3280 epochs in all) compressed proportionally onto the "
        "run's length; cosine, down to 0 at the end (default {default})",
        choices=LR_SCHEDULE_CHOICES,
    )
    lr_warmup: float | str = setting(
        0.0,
        OPTIMISATION,
        "raise the learning rate linearly from 0 over the first E epochs or P%% of the "
        "run, then follow --lr-schedule over the rest (default 0: off)",
        parse=epochs_or_share,
        metavar="E|P%",
    )
    ema: float | None = setting(
        None,
        OPTIMISATION,
        "keep an exponential moving average of the weights with this decay per step "
        "(e.g. 0.999; min(D, (1+n)/(10+n)) after n steps); test loss, checkpoints' "
        "model, evaluate and figures use it (default: off)",
        metavar="D",
    )
    batch_size: int = setting(256, OPTIMISATION, "batch size (default {default})", metavar="B")
    # None: DEFAULT_EPOCHS, or as many as --time-budget allows
    epochs: int | None = setting(
        None, OPTIMISATION, f"training epochs after epoch 0 (default {DEFAULT_EPOCHS})", metavar="E"
    )
    time_budget: float | None = setting(
        None,
        OPTIMISATION,
        "train for this many minutes of wall-clock time instead of --epochs: steps, "
        "evaluation and checkpoints count, the schedules run over the budget (warm-ups "
        "as P%%), the last epoch ends where it does; not bit-reproducible",
        metavar="MINUTES",
    )
    seed: int = setting(1, OPTIMISATION, "random seed (default {default})")
    device: str = setting(
        "auto", OPTIMISATION, "where to train (default {default})", choices=DEVICE_CHOICES
    )
    precision: str = setting(
        "fp32",
        OPTIMISATION,
        "bf16: bfloat16 matmuls under autocast, fp32 weights and losses; about 2x faster "
        "on CPUs with AVX512-BF16/AMX and on GPUs (default {default})",
        choices=PRECISION_CHOICES,
    )
    compile: bool = setting(
        False,
        OPTIMISATION,
        "torch.compile the training step (slow to start; needs a C++ compiler on CPU)",
    )
    grad_clip: float | None = setting(
        None,
        OPTIMISATION,
        "clip the gradient's global norm (default: no clipping)",
        metavar="NORM",
    )
    keep_every: int | None = setting(
        None,
        RUN,
        "also keep a resumable checkpoint every N epochs (checkpoints/epoch-NNN.pt)",
        metavar="N",
    )
    embed_epochs: list[int] | None = setting(
        None,
        RUN,
        "epochs whose test-set latents are cached (default "
        f"{','.join(map(str, LECTURE_EMBED_EPOCHS))} that run, and the last)",
        parse=int_list,
        metavar="LIST",
    )
    output_bias_init: bool = setting(  # Burda et al.'s code does this; off: the lecture's
        False,
        OPTIMISATION,
        "start the decoder's output bias at the logit of the mean training pixel",
    )
    tensorboard: bool = setting(
        False,
        RUN,
        "also log losses and images per epoch to RUN/tb/ (needs vaelab[tensorboard])",
    )

    def __post_init__(self) -> None:
        self._model_defaults()
        if self.hidden is None:
            self.hidden = self.latent_dim**2
        if isinstance(self.hidden, (list, tuple)) and self.hidden:
            self.hidden = stored_hidden(self.hidden)
        if self.epochs is None and self.time_budget is None:
            self.epochs = DEFAULT_EPOCHS
        if self.embed_epochs is not None:
            self.embed_epochs = sorted({int(e) for e in self.embed_epochs})
        self._resolve_likelihood()
        if self.likelihood == "gaussian" and self.gaussian_sigma is None:
            self.gaussian_sigma = 1.0
        if self.objective == "iwae" and self.iw_k is None:
            self.iw_k = DEFAULT_IW_K
        if self.condition == "none":
            self.condition = None
        if self.beta is None:
            self.beta = CONDITIONAL_BETA if self.condition == "label" else 1.0
        self.validate()

    def _model_defaults(self) -> None:
        """``latent_dim``, ``hidden``, ``activation`` and ``z1_dim`` left as None take the
        model's own defaults (``vaelab.models.MODELS[model].defaults``; vae-2l: Burda et
        al.'s 50, 200-200, tanh, 100), else the lecture's d = 20, hidden = d^2, relu."""
        from vaelab.models import MODELS  # late: the registry imports torch

        check_choice("model", self.model, MODELS)
        own = MODELS[self.model].defaults
        for name, lecture in (
            ("latent_dim", LECTURE_LATENT_DIM),
            ("hidden", None),
            ("activation", LECTURE_ACTIVATION),
            ("z1_dim", None),
        ):
            if getattr(self, name) is None:
                setattr(self, name, own.get(name, lecture))

    def _resolve_likelihood(self) -> None:
        """Map the lecture's --recon and --likelihood onto one name, once: afterwards
        ``likelihood`` is set and ``recon`` agrees with it (mse if and only if mse)."""
        if self.recon == "mse" and self.likelihood not in (None, "mse"):
            raise SettingError(
                "{recon} mse is the lecture's shorthand (0.5 * squared error); give either "
                "it or {likelihood}, not both ({likelihood} gaussian is the normalised density)"
            )
        if self.likelihood is None:
            self.likelihood = "mse" if self.recon == "mse" else "bernoulli"
        if self.likelihood == "mse":
            self.recon = "mse"

    @classmethod
    def from_preset(cls, name: str, **given: Any) -> TrainConfig:
        """The config of preset ``name`` (``vaelab.presets``) with the settings ``given``
        winning, e.g. ``TrainConfig.from_preset("burda-vae", epochs=5)``."""
        from vaelab.presets import preset_settings

        return cls(**preset_settings(name, given))

    def validate(self) -> None:
        """Raise SettingError naming the first invalid setting (``vaelab.config_checks``)."""
        from vaelab.config_checks import validate_config

        validate_config(self)

    @property
    def needs_unit_range(self) -> bool:
        """Bernoulli-type likelihoods (bernoulli, continuous-bernoulli) need x in [0, 1]."""
        return self.likelihood in ("bernoulli", "continuous-bernoulli")

    def cached_epochs(self) -> list[int]:
        """Epochs whose test-set latents are kept: as given, or the lecture's 0, 5, 10
        (those that run) plus the final epoch.

        Examples:
            >>> TrainConfig().cached_epochs(), TrainConfig(epochs=3).cached_epochs()
            ([0, 5, 10], [0, 3])
            >>> TrainConfig(epochs=20, embed_epochs=[20, 1]).cached_epochs()
            [1, 20]
        """
        if self.embed_epochs is not None:
            return list(self.embed_epochs)
        if self.epochs is None:  # --time-budget: the last epoch is known when it ends
            return list(LECTURE_EMBED_EPOCHS)
        return sorted({e for e in LECTURE_EMBED_EPOCHS if e <= self.epochs} | {self.epochs})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a saved dict, ignoring keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
