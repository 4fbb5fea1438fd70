"""The options of one training run, kept together in :class:`TrainConfig`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from liverctl.errors import ConfigError

__all__ = [
    "METHOD_DEFAULTS",
    "PAPER_DROPOUT",
    "SELECTIONS",
    "TrainConfig",
    "parse_dropout",
    "parse_selection",
    "resolve",
]

_OPTIMIZERS = ("adam", "sgd", "rmsprop")
_SCHEDULERS = ("plateau", "poly")
_SAMPLERS = ("dos", "rsd", "rs")
_LOSSES = ("dice_ce", "tal")
METHODS = ("he2021", "sdnet", "di2in-an", "hdenseunet", "pipofan")

METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "he2021": {"tumour_class": False},  # the whole liver, as He et al. 2021 train it
    # Huang et al. report "the model with 1000 iterations" (of 1200)
    "sdnet": {"lr_step": 200, "select_on": "iteration:1000", "tumour_class": False},  # a liver segmentation
    # Yang et al. 2017 (iterations read as passes over the data): SGD 0.01, / 10 half-way through pre-training
    # (2/3 of the run), batch 4, whole 3 mm volumes, no augmentation (--optimizer adam: lr 3e-4)
    "di2in-an": {"optimizer": "sgd", "epochs": 300, "lr": {"sgd": 1e-2, "adam": 3e-4}, "batch_size": 4,
                 "pretrain_iterations": lambda c: 2 * c.epochs * c.iterations_per_epoch // 3,
                 "lr_step": lambda c: max(1, c.pretrain_iterations // 2), "patch_size": (128, 128, 128),
                 "augment": False, "foreground_fraction": 0.0},
    # Li et al. 2018: 224x224x12 inputs of the paper-sized network, SGD lr 0.01 (poly), mirror + scaling only
    "hdenseunet": {"patch_size": (12, 224, 224), "pretrain_iterations": lambda c: -(-_stage_one(c) // 2)},
    # Fang and Yan 2020: 3 consecutive slices, 224x224 crops, slices that contain the organ, RMSprop, the
    # liver's tumour counted as liver
    "pipofan": {"optimizer": "rmsprop", "patch_size": (1, 224, 224), "foreground_fraction": 1.0,
                "tumour_class": False},
}  # fmt: skip
"""Per training method, the values its paper uses for the options the user left unset (``None``);
a ``dict`` value depends on the resolved optimizer, a callable one is computed from the config
(the values before it in the table already filled in). :class:`TrainConfig` fills them in when it is
made (so ``config.json`` records the resolved values); :func:`resolve` re-resolves them for another method."""
_GENERIC_DEFAULTS: dict[str, Any] = {
    "epochs": 400,
    "patch_size": (128, 128, 128),
    "augment": True,
    "foreground_fraction": 1 / 3,
    "batch_size": 2,
    "pretrain_iterations": 0,
    "lr_step": 200,
    "tumour_class": True,
    "select_on": "final",
}
"""The value of an unset option for a method without its own (nnU-Net / He et al. 2021: batch 2)."""
_ARCHITECTURES = {
    "he2021": "unet3d",
    "sdnet": "vnet",
    "di2in-an": "di2in",
    "hdenseunet": "hdenseunet",
    "pipofan": "pipofan",
}
"""The network each method trains when ``architecture`` is left at ``unet3d``."""
_HDENSEUNET_SIZES = frozenset({"preset", "features", "blocks_2d", "growth_2d", "blocks_3d", "growth_3d",
                               "init_features_2d", "init_features_3d", "decoder_2d", "decoder_3d"})  # fmt: skip
"""``hdenseunet`` arguments that choose its size: without any, ``--method hdenseunet`` trains the paper preset."""
PAPER_DROPOUT = 0.5
"""``--dropout paper`` and the he2021 default of ``unet3d``: He et al. 2021 put dropout after every conv
of their nnU-Net-style U-Net but give no rate; 0.5 is the rate of nnU-Net's Generic_UNet conv block
(``ConvDropoutNormNonlin``) when dropout is on."""
SELECTIONS = ("final", "inner:F", "iteration:N")
"""``select_on`` forms: the final epoch's weights (nnU-Net's convention), the epoch with the best Dice
on an inner validation split of a fraction F of the training cases, or the weights after iteration N."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (defaults: He et al. 2021 / nnU-Net).

    Attributes:
        architecture: registry name of the network (:func:`liverctl.models.build_model`).
        arch_kwargs: extra constructor arguments (``in_channels``, ``out_channels``,
            ``dcm_from_level`` and ``n_datasets`` are set by the trainer).
        patch_size: training patch (z, y, x) in voxels of the preprocessed data; ``None`` = the
            method's paper: 128^3 (he2021, sdnet, di2in-an: the whole 3 mm volume), 12x224x224
            (hdenseunet), 1x224x224 (pipofan: one supervised slice seen with its two neighbours)
        batch_size: patches per iteration (per process under DDP); ``None`` = the method's
            default (:data:`METHOD_DEFAULTS`: 4 for ``di2in-an``, else 2).
        epochs: maximum number of epochs; ``None`` = the method's: 400 (He et al. 2021: ~400),
            300 for ``di2in-an`` (the paper's 200 + 100 iterations read as passes over ~1000
            volumes: 250 iterations of batch 4 are one such pass).
        iterations_per_epoch: iterations per epoch (He et al. 2021: 250).
        optimizer: ``"adam"`` (lr 3e-4, He et al. 2021) or ``"sgd"`` (momentum 0.99, Nesterov,
            lr 1e-2, nnU-Net); ``"rmsprop"`` only for PIPO-FAN. ``None`` = the recipe's own:
            Adam, SGD for ``di2in-an``, RMSprop for ``pipofan``.
        lr: initial learning rate; ``None`` = 3e-4 for Adam, 1e-2 for SGD.
        weight_decay: L2 weight decay (3e-5, nnU-Net).
        scheduler: ``"plateau"`` (ReduceLROnPlateau on the epoch's mean training loss,
            factor 0.2, patience 30 epochs) or ``"poly"`` (``lr0 * (1 - epoch/epochs)^0.9``).
        plateau_patience, plateau_factor, poly_exponent: scheduler parameters.
        stop_window, stop_min_improvement, stop_min_lr: stop rule (plateau only): stop when
            the best epoch training loss of the last ``stop_window`` (60) epochs is not
            lower by at least ``stop_min_improvement`` (5e-3) than the best before them
            and the learning rate is below ``stop_min_lr`` (1e-6).
        val_every: run validation every N epochs (and after the last); 0 disables it.
        folds, fold: k-fold cross-validation (``None`` = train on all cases, no validation).
        sampler: ``"dos"``, ``"rsd"`` or ``"rs"`` (hybrid training, He et al. 2021).
        dcm_from_level: GELN_DCM, dataset-wise encoder levels >= N (``None`` = shared).
        loss: ``"dice_ce"`` or ``"tal"`` (target adaptive loss for datasets with different
            label sets, PIPO-FAN). ``pipofan`` always uses its TAL.
        foreground_fraction: fraction of each batch centred on foreground; ``None`` = the
            method's: 1/3, 0 for ``di2in-an`` (whole volumes), 1 for ``pipofan`` (slices that
            contain the organ, as the paper samples).
        augment: apply the recipe's augmentation (:mod:`liverctl.training.augmentation`);
            ``None`` = the method's: on, off for ``di2in-an`` (the paper states none).
        seed: seeds model initialisation and, with the iteration number, all randomness
            of every iteration.
        device, precision: see :mod:`liverctl.device` (CUDA: float16 autocast + GradScaler).
        num_workers: threads preparing batches ahead of the network (0 = in the loop).
        checkpoint_every: also write ``last.pt`` every N iterations inside an epoch
            (0 = only at epoch ends).
        init_checkpoint: start from these weights (pre-train -> fine-tune protocol).
        finetune_lr: learning rate when ``init_checkpoint`` is given (He et al. 2021: 1e-6);
            ``None`` keeps ``lr``.
        val_overlap: sliding-window overlap for validation.
        dataset_names: names of the datasets, in the order given (DCM branch names);
            filled from the preprocessed folders when empty.
        method: the training recipe: ``"he2021"`` (He et al. 2021,
            :mod:`~liverctl.training.recipes.he2021`), ``"sdnet"`` (SD-Net, :mod:`~liverctl.training.recipes.sdnet`),
            ``"di2in-an"`` (DI2IN-AN, :mod:`~liverctl.training.recipes.di2in_an`), ``"hdenseunet"``
            (H-DenseUNet, :mod:`~liverctl.training.recipes.hdenseunet`) or ``"pipofan"`` (PIPO-FAN,
            :mod:`~liverctl.training.recipes.pipofan`). The recipes use ``epochs *
            iterations_per_epoch`` iterations; the options below only matter to their recipe.
        unlabelled: SD-Net: preprocessed folders used as unlabelled data (images only; labels never
            read). The labelled : unlabelled split is made before preprocessing:
            ``liverctl preprocess DATASET --labelled-fraction F``.
        second_architecture: SD-Net: the second network (``resvnet``; the first is
            ``architecture``, ``vnet`` by default).
        sharpen_temperature: SD-Net: pseudo-label sharpening temperature T (0.1).
        unsup_weight: SD-Net: weight of the unsupervised MSE term (1).
        lr_step: SD-Net: divide the learning rate by 10 every N iterations (200). DI2IN-AN:
            divide it by 10 once, N iterations into each phase (pre-training, adversarial), each
            phase on its own schedule. ``None`` = the method's default (DI2IN-AN: half of
            ``pretrain_iterations``, the paper's 100 of 200).
        pretrain_iterations: DI2IN-AN: generator-only iterations before the adversarial phase
            (``None`` = the first 2/3 of the run: the paper's 200 + 100 "iterations" read as
            passes over the data, 200 pre-training then 100 adversarial). H-DenseUNet: the first
            iterations of stage 1, the 2D warm-up without UNet connections (``None`` = half of
            stage 1; 0 = no warm-up).
        d_steps, g_steps: DI2IN-AN: discriminator / generator steps per adversarial iteration
            (k_D = 10, k_G = 1).
        d_batch_size: DI2IN-AN: patches per discriminator step (8; the generator uses
            ``batch_size``, 4 in the paper).
        adv_weight: DI2IN-AN: lambda of the adversarial term (0.01).
        disc_with_image: DI2IN-AN: the discriminator sees the image concatenated to the label
            map (the paper's discriminator sees the label map only: ``False``).
        disc_kwargs: DI2IN-AN: extra arguments of ``di2in_discriminator``.
        stage_iterations: H-DenseUNet: iterations of stage 1 (2D) and stage 2 (3D + HFF, 2D
            frozen); stage 3 (joint) gets the rest. ``None`` = thirds of the run. PIPO-FAN:
            iterations of phase 1 (deep pyramid supervision) and phase 2 (adaptive fusion
            alone), adding up to the run's iterations; ``None`` = halves.
        class_weights: H-DenseUNet: cross-entropy class weights; ``None`` = (0.78, 0.65,
            8.57) for 3 classes (background, liver, tumour; the authors' code), else all 1.
            PIPO-FAN: ``None`` = (0.2, 1.2) for 2 classes (the authors' code), else all 1.
        coarse_iterations: H-DenseUNet: iterations of the coarse liver-ROI network trained
            first (:mod:`~liverctl.training.recipes.cascade`); its predicted liver box crops the
            training cases of the fine stages and is exported with the model for ``predict``.
            0 = no cascade (the fine network sees the whole preprocessed volume).
        encoder_init: H-DenseUNet: ``"imagenet"`` or a file of torchvision's ImageNet
            DenseNet-161 weights for the 2D encoder (:mod:`liverctl.models.densenet_init`).
        dice_weight: PIPO-FAN: weight of a soft Dice term added to the target adaptive
            loss's cross-entropy (0: the paper's loss, cross-entropy only).
        select_on: which weights are exported (:data:`SELECTIONS`, :func:`parse_selection`):
            ``"final"`` (the last epoch's, nnU-Net's convention), ``"inner:F"`` (the epoch with
            the best mean Dice on an inner validation split: a fraction F of each dataset's
            training cases, drawn with ``seed`` and left out of training) or ``"iteration:N"``
            (the weights after global iteration N). The held-out fold of ``folds`` never
            chooses: its Dice is only logged. ``None`` = the method's: ``"iteration:1000"``
            for ``sdnet`` (the paper's), ``"final"`` for the others.
        tumour_class: he2021 / sdnet / pipofan: train the tumour (``tumour``/``tumor``/``lesion``
            labels) as a class of its own (``True``); ``False`` merges it into the liver, the whole
            organ. ``None`` = the method's (:data:`METHOD_DEFAULTS`): ``False`` for ``he2021`` and
            ``sdnet``, liver segmentations in their papers, ``True`` for the others.
    """

    architecture: str = "unet3d"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    patch_size: tuple[int, int, int] | None = None
    batch_size: int | None = None
    epochs: int | None = None
    iterations_per_epoch: int = 250
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float = 3e-5
    scheduler: str = "plateau"
    plateau_patience: int = 30
    plateau_factor: float = 0.2
    poly_exponent: float = 0.9
    stop_window: int = 60
    stop_min_improvement: float = 5e-3
    stop_min_lr: float = 1e-6
    val_every: int = 10
    folds: int | None = None
    fold: int = 0
    sampler: str = "dos"
    dcm_from_level: int | None = None
    loss: str = "dice_ce"
    foreground_fraction: float | None = None
    augment: bool | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    num_workers: int = 0
    checkpoint_every: int = 50
    init_checkpoint: str | None = None
    finetune_lr: float | None = None
    val_overlap: float = 0.25
    dataset_names: list[str] = field(default_factory=list)
    method: str = "he2021"
    unlabelled: list[str] = field(default_factory=list)
    second_architecture: str = "resvnet"
    sharpen_temperature: float = 0.1
    unsup_weight: float = 1.0
    lr_step: int | None = None
    pretrain_iterations: int | None = None
    d_steps: int = 10
    g_steps: int = 1
    d_batch_size: int = 8
    adv_weight: float = 0.01
    disc_with_image: bool = False
    disc_kwargs: dict[str, Any] = field(default_factory=dict)
    stage_iterations: tuple[int, int] | None = None
    class_weights: list[float] | None = None
    dice_weight: float = 0.0
    tumour_class: bool | None = None
    coarse_iterations: int = 0
    encoder_init: str | None = None
    select_on: str | None = None
    unset: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    """The options left unset (``None``) and filled from :data:`METHOD_DEFAULTS` (not saved)."""

    def __post_init__(self) -> None:
        if self.patch_size is not None:
            self.patch_size = tuple(int(p) for p in self.patch_size)  # type: ignore[assignment]
        if self.stage_iterations is not None:
            self.stage_iterations = tuple(int(n) for n in self.stage_iterations)  # type: ignore[assignment]
        self.unlabelled = [str(u) for u in self.unlabelled]
        if self.method in METHOD_DEFAULTS:  # else validate() says which methods exist
            self.unset = frozenset(self.unset | _fill_defaults(self))
        for name in ("patch_size", "epochs", "augment", "foreground_fraction"):  # an unknown method (refused below)
            if getattr(self, name) is None:
                setattr(self, name, _GENERIC_DEFAULTS[name])
        self.validate()

    @property
    def initial_lr(self) -> float:
        """The learning rate the run starts with."""
        if self.init_checkpoint and self.finetune_lr is not None:
            return float(self.finetune_lr)
        if self.lr is not None:
            return float(self.lr)
        return 3e-4 if self.optimizer in (None, "adam") else 1e-2

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line) for an invalid option."""
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            shown = ",".join(str(v) for v in self.patch_size[::-1])
            raise ConfigError(f"--patch must be three positive integers X,Y,Z, got {shown}")
        for name in ("batch_size", "epochs", "iterations_per_epoch"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ConfigError(f"{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.optimizer is not None and self.optimizer not in _OPTIMIZERS:
            raise ConfigError(f"--optimizer must be one of {', '.join(_OPTIMIZERS)}, got {self.optimizer!r}")
        if self.optimizer == "rmsprop" and self.method != "pipofan":
            raise ConfigError("--optimizer rmsprop is PIPO-FAN's (--method pipofan); use adam or sgd")
        if self.scheduler not in _SCHEDULERS:
            raise ConfigError(f"--scheduler must be one of {', '.join(_SCHEDULERS)}, got {self.scheduler!r}")
        if self.sampler not in _SAMPLERS:
            raise ConfigError(f"--sampler must be one of {', '.join(_SAMPLERS)}, got {self.sampler!r}")
        if self.loss not in _LOSSES:
            raise ConfigError(f"--loss must be one of {', '.join(_LOSSES)}, got {self.loss!r}")
        for name in ("lr", "finetune_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{_flag(name)} must be > 0, got {value}")
        if self.folds is not None:
            if self.folds < 2:
                raise ConfigError(f"--folds must be >= 2, got {self.folds}")
            if not 0 <= self.fold < self.folds:
                raise ConfigError(f"--fold must be in 0..{self.folds - 1} for {self.folds} folds, got {self.fold}")
        if self.val_every < 0 or self.checkpoint_every < 0 or self.num_workers < 0:
            raise ConfigError("--val-every, --checkpoint-every and --workers must be >= 0")
        if not 0 <= self.foreground_fraction <= 1:
            raise ConfigError(f"foreground fraction must be in [0, 1], got {self.foreground_fraction}")
        if self.dcm_from_level is not None and self.dcm_from_level < 0:
            raise ConfigError(f"--dcm-from-level must be >= 0, got {self.dcm_from_level}")
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method != "he2021" and self.dcm_from_level is not None:
            raise ConfigError(f"--dcm-from-level is part of the he2021 recipe, not of --method {self.method}")
        self._validate_recipe_options()

    def _validate_recipe_options(self) -> None:
        """The options of the recipes other than he2021, and the model selection."""
        if not self.sharpen_temperature > 0:
            raise ConfigError(f"sharpen temperature must be > 0, got {self.sharpen_temperature}")
        if self.unsup_weight < 0 or self.adv_weight < 0:
            raise ConfigError("the unsupervised weight and --adv-weight must be >= 0")
        for name in ("lr_step", "d_steps", "g_steps", "d_batch_size"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ConfigError(f"{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.pretrain_iterations is not None and self.pretrain_iterations < 0:
            raise ConfigError(f"--pretrain-iterations must be >= 0, got {self.pretrain_iterations}")
        total = self.epochs * self.iterations_per_epoch
        if self.method == "di2in-an" and (self.pretrain_iterations or 0) >= total:
            raise ConfigError(
                f"--pretrain-iterations {self.pretrain_iterations} leaves no adversarial iteration in a run of {total}:"
                " DI2IN-AN exports the generator after its adversarial phase"
            )
        if self.stage_iterations is not None and (len(self.stage_iterations) != 2 or min(self.stage_iterations) < 0):
            raise ConfigError(
                f"--stage-iterations must be two numbers >= 0 (stages 1 and 2), got {self.stage_iterations}"
            )
        if self.class_weights is not None and (not self.class_weights or min(self.class_weights) < 0):
            raise ConfigError(f"--class-weights must be >= 0, got {self.class_weights}")
        if self.coarse_iterations < 0:
            raise ConfigError(f"--coarse-iterations must be >= 0, got {self.coarse_iterations}")
        if self.method != "hdenseunet" and (self.coarse_iterations or self.encoder_init):
            raise ConfigError("--coarse-iterations and --encoder-init are H-DenseUNet's (--method hdenseunet)")
        if not self.dice_weight >= 0:
            raise ConfigError(f"--dice-weight must be >= 0, got {self.dice_weight}")
        if self.select_on is not None:
            kind, value = parse_selection(self.select_on)
            if kind == "inner" and not self.val_every:
                raise ConfigError(f"--select-on {self.select_on} validates the inner split: --val-every must be >= 1")
            if kind == "iteration" and value > self.epochs * self.iterations_per_epoch:
                why = f" (the {self.method} default: the paper's reported model)" if "select_on" in self.unset else ""
                raise ConfigError(
                    f"--select-on {self.select_on}{why}: the run has only {self.epochs * self.iterations_per_epoch}"
                    " iterations (--epochs x --iterations-per-epoch); pass --select-on final or a smaller N"
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        data = dataclasses.asdict(self)
        del data["unset"]
        data["patch_size"] = list(self.patch_size)
        if self.stage_iterations is not None:
            data["stage_iterations"] = list(self.stage_iterations)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`."""
        data = dict(data)
        if data.get("labelled_fraction", 0) is None:  # a run folder of an earlier release
            del data["labelled_fraction"]
        elif "labelled_fraction" in data:
            raise ConfigError(
                "labelled_fraction moved to preprocessing (a split after the liver crop and z-score leaks labels): "
                "liverctl preprocess DATASET -o OUT --labelled-fraction F, then train OUT/labelled --unlabelled "
                "OUT/unlabelled"
            )
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training options: {', '.join(unknown)}")
        return cls(**data)


def _stage_one(config: TrainConfig) -> int:
    """H-DenseUNet's stage-1 iterations: ``stage_iterations[0]``, else a third of the run."""
    stages = config.stage_iterations
    return int(stages[0]) if stages and len(stages) == 2 else config.epochs * config.iterations_per_epoch // 3


def _fill_defaults(config: TrainConfig) -> set[str]:
    """Fill every unset (``None``) option of :data:`METHOD_DEFAULTS` with its method's value (else
    the generic one); options the user set are kept. Returns the names filled."""
    table = METHOD_DEFAULTS[config.method]
    filled: set[str] = set()
    if config.optimizer is None and "optimizer" in table:
        config.optimizer = table["optimizer"]
        filled.add("optimizer")
    if config.lr is None and config.optimizer in (table.get("lr") or {}):
        config.lr = table["lr"][config.optimizer]
        filled.add("lr")
    for name, generic in _GENERIC_DEFAULTS.items():
        if getattr(config, name) is None:
            value = table.get(name, generic)
            setattr(config, name, value(config) if callable(value) else value)
            filled.add(name)
    config.patch_size = tuple(int(p) for p in config.patch_size)  # type: ignore[union-attr,assignment]
    if (
        config.method == "hdenseunet"
        and config.architecture in ("unet3d", "hdenseunet")
        and not set(config.arch_kwargs) & _HDENSEUNET_SIZES
    ):
        config.arch_kwargs = {**config.arch_kwargs, "preset": "paper"}  # Li et al.'s network, by default
        filled.add("preset")
    if config.method == "he2021" and config.architecture == "unet3d" and "dropout" not in config.arch_kwargs:
        config.arch_kwargs = {**config.arch_kwargs, "dropout": PAPER_DROPOUT}  # after each conv, as the paper
        filled.add("dropout")
    return filled


def resolve(config: TrainConfig | None, method: str | None = None) -> TrainConfig:
    """The one place where a run's options are resolved: ``config`` (``None``: the defaults) for
    ``method`` (``None``: ``config.method``). The options left unset get the method's defaults
    (:data:`METHOD_DEFAULTS`; the ones set explicitly are kept), ``architecture`` left at the
    ``unet3d`` default becomes the method's own network, everything is validated and the
    network is checked to accept ``arch_kwargs`` (before any data is read). A new config;
    resolving a resolved config gives an equal one.

    Raises:
        ConfigError: an invalid option, or an ``arch_kwargs`` entry the network does not accept.
    """
    if config is None:
        config = TrainConfig(method=method or "he2021")
    elif method is not None and method != config.method:
        kwargs = dict(config.arch_kwargs)
        for name in ("dropout", "preset"):  # the he2021 / hdenseunet default, not the user's
            if name in config.unset:
                kwargs.pop(name, None)
        unset = {name: None for name in config.unset if name not in ("dropout", "preset")}
        config = dataclasses.replace(config, method=method, arch_kwargs=kwargs, **unset)
    unset = config.unset
    if config.architecture == "unet3d" and config.method in _ARCHITECTURES:
        config = dataclasses.replace(config, architecture=_ARCHITECTURES[config.method])
    else:
        config = dataclasses.replace(config)
    config.unset = frozenset(unset | config.unset)  # what the user left unset stays known
    _check_arch_kwargs(config)
    return config


def _check_arch_kwargs(config: TrainConfig) -> None:
    """Raise :class:`ConfigError` (one line) when the run's network does not accept an
    argument of ``config.arch_kwargs``."""
    from liverctl.models import model_info

    name = config.architecture
    accepted = model_info(name).defaults
    unknown = sorted(set(config.arch_kwargs) - set(accepted))
    if unknown:
        what = "--dropout" if unknown == ["dropout"] else ", ".join(unknown)
        raise ConfigError(f"{what}: the {name} network (--method {config.method}) does not accept {', '.join(unknown)}")


def parse_selection(text: str) -> tuple[str, float]:
    """``select_on`` -> ``("final", 0)``, ``("inner", F)`` with 0 < F < 1, or ``("iteration", N)``.

    Raises:
        ConfigError: another form, for instance choosing on the held-out fold (not offered).
    """
    kind, _, value = str(text).strip().lower().partition(":")
    if kind == "final" and not value:
        return "final", 0.0
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if kind == "inner" and 0.0 < number < 1.0:
        return "inner", number
    if kind == "iteration" and number >= 1 and number == int(number):
        return "iteration", int(number)
    raise ConfigError(
        f"--select-on must be final, inner:F (0 < F < 1, a split of the training cases) or iteration:N, got"
        f" {text!r}; choosing the model on the held-out fold that is reported is not offered"
    )


def parse_dropout(value: str | float | None) -> float | None:
    """``--dropout paper|none|P`` -> the dropout rate: ``paper`` = :data:`PAPER_DROPOUT`,
    ``none`` = 0, else a number in [0, 1); ``None`` stays ``None`` (the network's default)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "paper":
        return PAPER_DROPOUT
    if text == "none":
        return 0.0
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"--dropout must be paper, none or a rate in [0, 1), got {value!r}")
    return rate


_FLAGS = {
    "iterations_per_epoch": "--iterations-per-epoch",
    "num_workers": "--workers",
    "lr_step": "the learning-rate step",
    "g_steps": "the generator steps",
}


def _flag(name: str) -> str:
    """The ``liverctl train`` option of a :class:`TrainConfig` field, for messages."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))
