"""Training of both stages of GCP-Colorization, in one process or under torchrun (DDP).

Stage 1 (`EncoderTrainer`) trains the encoder E against the frozen BigGAN generator and
discriminator. Stage 2 (`ColorizationTrainer`) trains the correspondence and colorization
networks end to end against a multi-scale PatchGAN, with the prior (E, G, D) frozen.

One code path serves a CPU, one GPU and torchrun on several GPUs and nodes: with `WORLD_SIZE`
set, a process group is initialised (NCCL on CUDA, gloo on CPU), only the trainable networks are
wrapped in DistributedDataParallel, each process reads its share of the data, and rank 0 alone
writes logs, TensorBoard events and checkpoints.

Checkpoints (`<output_dir>/checkpoints/step_XXXXXXX/`) hold the trainable weights
(safetensors), the train and model configs, and `training_state.pt` (optimisers, schedulers,
step, epoch, position in the epoch, every rank's RNG states). They are written into a temporary
folder and renamed into place; `latest` names the newest one and is updated last. A resumed run
continues exactly where the checkpoint left off: the data order and crops are functions of
(seed, epoch, index), so skipping the batches already seen reproduces the rest of the epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Adam, Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Dataset
from torchvision.utils import make_grid
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .color import gray_to_rgb, lab_to_rgb
from .config import ColorizerConfig, DeformatorConfig, config_from_dict, config_to_dict
from .class_probe import fit_class_probe
from .data import make_dataloader, make_dataset
from .legacy import (
    load_biggan_discriminator,
    load_biggan_encoder,
    load_biggan_generator,
    load_deformator,
)
from .models.efficientnet_lite import load_efficientnet_lite0
from .models.lightness_centroids import LightnessCentroidClassifier
from .models.semantic_class_probe import SemanticClassProbe
from .serialization import load_state_dict_strict
from .errors import MissingWeightsError
from .losses import (
    ContextualLoss,
    DiscriminatorFeatures,
    ab_classification_loss,
    rebalancing_weights,
    domain_alignment_loss,
    encoder_feature_loss,
    latent_regularizer,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    perceptual_loss,
)
from .model import ForwardOutput, GCPColorizationModel, Guidance, resample_square
from .models.patchgan import MultiScalePatchGAN, lab_to_discriminator_input
from .models.vgg import VGG19Features, find_vgg19_weights
from .pipeline import Colorizer, save_model_pretrained
from .prior import load_lightness_centroids, load_prior
from .training_config import (
    Stage1Config,
    Stage2Config,
    TrainConfig,
    config_to_plain,
    dump_train_config,
    resolve_model_config,
    stage_config_class,
    train_config_from_dict,
    validate_train_config,
)
from .weights import AUTHORS_FILES, find_weight_file

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
LATEST_POINTER = "latest"
WEIGHTS_FILE = "weights.safetensors"
TRAIN_CONFIG_FILE = "train_config.yaml"
MODEL_CONFIG_FILE = "model_config.json"
STATE_FILE = "training_state.pt"
CHECKPOINT_FILES = (WEIGHTS_FILE, TRAIN_CONFIG_FILE, MODEL_CONFIG_FILE, STATE_FILE)
FINAL_DIR = "final"
SKIPPED_FILES_REPORT = "skipped_files.txt"

#: Rows of the TensorBoard image grid (one per sample of the current batch).
IMAGE_GRID_SAMPLES = 4
#: photos whose colours make the ab prior of the rebalanced classification loss
AB_PRIOR_SAMPLES = 512
#: VGG19 layers of the stage-2 losses: perceptual on relu5_2, contextual on all three.
VGG_LAYERS = ("relu3_2", "relu4_2", "relu5_2")

RANDOM_PRIOR_WARNING = (
    "RANDOM PRIOR: BigGAN and the encoder are randomly initialised (prior.random_prior: true). "
    "This run only exercises the training code; what it trains cannot colorize photos."
)


class TrainingSetupError(ValueError):
    """An expected problem that stops training before it starts (one-line message)."""


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistributedContext:
    """Who this process is in the job; a single process is rank 0 of a world of 1."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def all_gather_object(self, value: Any) -> list[Any]:
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average of each value over all processes."""
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return dict(zip(keys, (tensor / self.world_size).tolist()))


def resolve_training_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingSetupError("device: cuda was requested but no CUDA device is available")
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup_distributed(device: str = "auto") -> DistributedContext:
    """The process group of a torchrun launch (WORLD_SIZE > 1), or a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(device=resolve_training_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    training_device = resolve_training_device(device, local_rank)
    if training_device.type == "cuda":
        torch.cuda.set_device(training_device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if training_device.type == "cuda" else "gloo")
    return DistributedContext(rank, local_rank, world_size, training_device)


def teardown_distributed(context: DistributedContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- RNG


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def capture_rng_state(device: torch.device) -> dict[str, Any]:
    """All RNG states of this process, as types `torch.load(weights_only=True)` accepts."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# --------------------------------------------------------------------------- checkpoints


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def is_complete_checkpoint(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in CHECKPOINT_FILES)


class CheckpointManager:
    """`step_XXXXXXX/` folders in `directory`, written atomically, with a `latest` pointer."""

    PREFIX = "step_"
    TEMPORARY_PREFIXES = (".tmp-", ".old-")

    def __init__(self, directory: Path, keep_last: int = 0) -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last

    @classmethod
    def step_name(cls, step: int) -> str:
        return f"{cls.PREFIX}{step:07d}"

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (half-written temporary folders are not listed)."""
        if not self.directory.is_dir():
            return []
        found = [
            path
            for path in self.directory.iterdir()
            if path.name.startswith(self.PREFIX)
            and path.name[len(self.PREFIX) :].isdigit()
            and is_complete_checkpoint(path)
        ]
        return sorted(found, key=lambda path: int(path.name[len(self.PREFIX) :]))

    def latest(self) -> Path | None:
        pointer = self.directory / LATEST_POINTER
        if pointer.is_file():
            candidate = self.directory / pointer.read_text().strip()
            if is_complete_checkpoint(candidate):
                return candidate
            logger.warning("%s names %s, which is not a complete checkpoint", pointer, candidate)
        complete = self.checkpoints()
        return complete[-1] if complete else None

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """Let `write` fill a temporary folder, then move it into place and update `latest`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = self.step_name(step)
        final = self.directory / name
        temporary = self.directory / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        try:
            write(temporary)
            for path in temporary.iterdir():
                _fsync_path(path)
            _fsync_path(temporary)
            if final.exists():  # a resumed run saving a step an earlier attempt had reached
                stale = self.directory / f".old-{name}-{os.getpid()}"
                os.replace(final, stale)
                shutil.rmtree(stale)
            os.replace(temporary, final)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        _fsync_path(self.directory)
        self._write_pointer(name)
        self._prune(keep=final)
        return final

    def _write_pointer(self, name: str) -> None:
        pointer = self.directory / LATEST_POINTER
        temporary = self.directory / f".tmp-{LATEST_POINTER}-{os.getpid()}"
        with open(temporary, "w") as handle:
            handle.write(name + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, pointer)
        _fsync_path(self.directory)

    def _prune(self, keep: Path) -> None:
        for path in self.directory.iterdir():
            if path.name.startswith(self.TEMPORARY_PREFIXES):  # left by an interrupted save
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        if self.keep_last <= 0:
            return
        complete = [path for path in self.checkpoints() if path != keep]
        for path in complete[: max(0, len(complete) - (self.keep_last - 1))]:
            shutil.rmtree(path, ignore_errors=True)


def resolve_resume(resume: str | os.PathLike | bool | None, manager: CheckpointManager) -> Path | None:
    """The checkpoint folder to resume from; None means start from scratch.

    `True` or "latest": the newest checkpoint of this run's output_dir, if there is one.
    A path: a checkpoint folder, a `checkpoints/` folder, or an output_dir.
    """
    if resume is None or resume is False:
        return None
    if resume is True or resume == "latest":
        return manager.latest()
    path = Path(resume).expanduser()
    if is_complete_checkpoint(path):
        return path
    for folder in (path, path / CHECKPOINTS_DIR):
        found = CheckpointManager(folder).latest()
        if found is not None:
            return found
    raise TrainingSetupError(
        f"--resume {path}: no complete checkpoint there (a checkpoint folder holds "
        f"{', '.join(CHECKPOINT_FILES)})"
    )


# --------------------------------------------------------------------------- model


def freeze(module: nn.Module | None) -> None:
    if module is not None:
        module.eval()
        module.requires_grad_(False)


def build_model(config: TrainConfig, guidance: Guidance, needs_encoder: bool) -> GCPColorizationModel:
    """The full network with its prior loaded from the configured source."""
    prior = config.prior
    if prior.random_prior:
        logger.warning(RANDOM_PRIOR_WARNING)
        return GCPColorizationModel(resolve_model_config(config.model), guidance)
    if prior.pretrained:
        source = Colorizer.from_pretrained(prior.pretrained).model
        model_config = source.config
        if isinstance(config.model, Mapping):
            # With a pretrained source, `model` lists only what changes (e.g. a new colorization
            # network); every network whose layout stays the same keeps its trained weights.
            model_config = config_from_dict(ColorizerConfig, _deep_merge(config_to_dict(source.config), config.model))
        model = GCPColorizationModel(model_config, guidance)
        for name in ("generator", "discriminator", "encoder", "correspondence", "deformator", "class_predictor"):
            _copy_matching_weights(source, model, name)
        if isinstance(model.class_predictor, SemanticClassProbe) and isinstance(source.class_predictor, LightnessCentroidClassifier):
            # the probe reads the lightness thumbnail standardised as the prior's clustering did
            model.class_predictor.lightness.load_state_dict(source.class_predictor.state_dict())
        if not _copy_matching_weights(source, model, "colorization_net"):
            logger.info("the colorization network changed (guidance %s or its config): it starts from scratch", guidance.value)
        _load_pretrained_backbone(model, keep=model.config.colorization == source.config.colorization)
        return model

    if prior.prior_dir:
        return _model_with_own_prior(config, guidance, prior.prior_dir)

    weights_dir = prior.prior_weights_dir
    roles = ["generator", "discriminator"] + (["encoder"] if needs_encoder else [])
    # Look for every file before building anything: a missing one is reported at once.
    paths = {role: find_weight_file(AUTHORS_FILES[role], weights_dir) for role in roles}
    try:
        paths["deformator"] = find_weight_file(AUTHORS_FILES["deformator"], weights_dir)
    except FileNotFoundError:
        pass
    model_config = resolve_model_config(config.model)
    if "deformator" not in paths and model_config.deformator is not None:
        model_config = dataclasses.replace(model_config, deformator=None)
    model = GCPColorizationModel(model_config, guidance)
    model.generator = load_biggan_generator(paths["generator"], model_config.biggan)
    model.discriminator = load_biggan_discriminator(paths["discriminator"], model_config.biggan)
    if needs_encoder:
        model.encoder = load_biggan_encoder(paths["encoder"], model_config.encoder)
    if "deformator" in paths and model_config.deformator is not None:
        model.deformator = load_deformator(paths["deformator"], model_config.deformator)
    return model


def _deep_merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _copy_matching_weights(source: GCPColorizationModel, model: GCPColorizationModel, name: str) -> bool:
    """Copy network `name` from `source` when both have it with the same layout."""
    mine, theirs = getattr(model, name), getattr(source, name)
    if mine is None or theirs is None:
        return False
    target, state = mine.state_dict(), theirs.state_dict()
    if set(target) != set(state) or any(target[k].shape != state[k].shape for k in target):
        return False
    mine.load_state_dict(state)
    return True


def _load_pretrained_backbone(model: GCPColorizationModel, keep: bool = False) -> None:
    """A new semantic colorization network gets the ImageNet weights of its frozen backbone
    from the pinned package (`keep`: it came with its trained checkpoint already)."""
    if model.config.colorization.type == "semantic" and not keep:
        model.colorization_net.backbone.load_state_dict(load_efficientnet_lite0().state_dict())


def _model_with_own_prior(config: TrainConfig, guidance: Guidance, prior_dir: str) -> GCPColorizationModel:
    """The configured model around a `gcpcolor train-prior` generator and discriminator."""
    generator, discriminator = load_prior(prior_dir)
    centroids = load_lightness_centroids(prior_dir)
    biggan = generator.config
    model_config = resolve_model_config(config.model)
    model_config = dataclasses.replace(
        model_config,
        biggan=biggan,
        class_predictor="lightness_centroids" if centroids else "discriminator",
        encoder=dataclasses.replace(
            model_config.encoder,
            resolution=biggan.resolution,
            z_dim=biggan.dim_z,
            n_classes=biggan.n_classes,
            attention_resolution=biggan.attention_resolution,
        ),
        deformator=DeformatorConfig(dim=biggan.used_z_dims),
    )
    model = GCPColorizationModel(model_config, guidance)
    model.generator, model.discriminator = generator, discriminator
    with torch.no_grad():
        # No direction discovery has run for this prior: identity directions (raw latent axes).
        model.deformator.log_mat_half.zero_()
    if centroids:
        model.class_predictor.set_centroids(centroids)
    return model


class _ReportSkippedFiles(Dataset):
    """Passes items through, adding `skipped`: the unreadable files passed over to make each.

    DataLoader workers are separate processes, each with its own copy of the dataset's
    `skipped_files`; carrying the paths in the batches is how they reach the trainer.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        before = len(self.dataset.skipped_files)
        item = self.dataset[key]
        item["skipped"] = "\n".join(self.dataset.skipped_files[before:])
        return item


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path | None  # the save_pretrained export (None on ranks other than 0)
    step: int
    history: list[dict[str, float]]  # this process's loss terms for each step of this run
    skipped_files: list[str]


# --------------------------------------------------------------------------- trainer base


class _Trainer:
    stage: ClassVar[int]
    config_class: ClassVar[type]

    def __init__(
        self,
        config: TrainConfig,
        resume: str | os.PathLike | bool | None = None,
        context: DistributedContext | None = None,
    ) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}")
        validate_train_config(config)
        self.config = config
        self.context = context or DistributedContext(device=resolve_training_device(config.device))
        self.device = self.context.device
        self.use_bf16 = config.precision == "bf16" and self.device.type == "cuda"
        self.output_dir = Path(config.checkpoint.output_dir).expanduser()
        self.checkpoints = CheckpointManager(self.output_dir / CHECKPOINTS_DIR, config.checkpoint.keep_last)
        self.resume_from = resolve_resume(resume, self.checkpoints)
        has_checkpoints = bool(self.checkpoints.checkpoints())
        views = self.context.all_gather_object((str(self.resume_from), has_checkpoints))
        if len(set(views)) > 1:
            raise TrainingSetupError(
                f"the processes see different checkpoints in {self.checkpoints.directory}: "
                "checkpoint.output_dir must be on a file system shared by all nodes"
            )
        if self.resume_from is None:
            if resume in (None, False) and has_checkpoints:
                raise TrainingSetupError(
                    f"{self.checkpoints.directory} already holds checkpoints: pass --resume to "
                    "continue that run, or choose another checkpoint.output_dir"
                )
            if resume not in (None, False):
                logger.info("no checkpoint in %s yet: starting from scratch", self.checkpoints.directory)

        # The data comes first: a wrong path should fail before minutes of weight loading.
        optim = config.optim
        self.dataset = make_dataset(config.data)
        self.loader, self.sampler = make_dataloader(
            _ReportSkippedFiles(self.dataset),
            batch_size=optim.batch_size,
            num_workers=config.data.num_workers,
            shuffle=True,
            # Every rank shares one seed: DistributedSampler needs it to split one permutation,
            # and the crops are seeded per (seed, epoch, index), so ranks still differ.
            seed=config.seed,
            distributed=self.context.distributed,
        )
        self.steps_per_epoch = len(self.loader) // optim.grad_accumulation
        if self.steps_per_epoch == 0:
            raise TrainingSetupError(
                f"{len(self.dataset)} images are too few for one step of batch_size "
                f"{optim.batch_size} x grad_accumulation {optim.grad_accumulation} x "
                f"{self.context.world_size} process(es)"
            )
        self.total_steps = optim.max_steps or optim.epochs * self.steps_per_epoch
        self._check_weight_files()
        if config.logging.tensorboard:
            _summary_writer_class()  # on every rank: a missing package must stop them all

        # Every rank builds the networks from the same seed, so random initialisations (and a
        # random prior, which DDP does not broadcast) agree everywhere.
        seed_everything(config.seed)
        self.model = self._build_model().to(self.device)
        self.optimizers: dict[str, Optimizer] = {}
        self.schedulers: dict[str, LambdaLR] = {}
        self._build()

        self.step = 0
        self.epoch = 0
        self.position = 0  # optimizer steps already taken in `self.epoch`
        self.skipped_files: set[str] = set()
        self.step_learning_rates: dict[str, float] = {}  # those the last step used
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from)
        else:
            seed_everything(config.seed + self.context.rank)

    # ------------------------------------------------------------------ stage-specific parts
    @property
    def guidance(self) -> Guidance:
        return Guidance.FEATURES

    def _build_model(self) -> nn.Module:
        """All networks of the stage, trained and frozen, on the CPU."""
        model = build_model(self.config, self.guidance, needs_encoder=self.stage == 2)
        # The semantic network is fully convolutional at any multiple of 32 (smaller crops are
        # cheaper to train on); the SPADE network's decoder scales are fixed to the work size.
        flexible = model.config.colorization.type == "semantic" and self.config.data.image_size % 32 == 0
        if self.config.data.image_size != model.config.work_size and not flexible:
            raise TrainingSetupError(
                f"data.image_size must be the model's working size {model.config.work_size}, "
                f"got {self.config.data.image_size}"
            )
        return model

    def _save_model_config(self, path: Path) -> None:
        self.model.config.save(path)

    def _same_model_config(self, path: Path) -> bool:
        return ColorizerConfig.load(path) == self.model.config

    def _export(self, folder: Path) -> None:
        """The trained model in its reloadable format."""
        save_model_pretrained(self.model, folder)

    def _check_weight_files(self) -> None:
        """Fail early on a missing weight file the stage needs besides the prior."""

    def _build(self) -> None:
        """Freeze the prior, wrap the trainable networks, create optimisers and schedulers."""
        raise NotImplementedError

    def trainable_modules(self) -> dict[str, nn.Module]:
        """The networks this stage trains (unwrapped), saved in every checkpoint."""
        raise NotImplementedError

    def ddp_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def backward_micro_batch(
        self, batch: dict[str, Any], scale: float
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Losses of one micro-batch, back-propagated with weight `scale`: (terms, visuals)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def autocast(self):
        if self.use_bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _wrap(self, module: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        if not self.context.distributed:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(
            module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
        )

    def _adam(self, parameters: list[nn.Parameter], lr: float, eps: float = 1e-8) -> Optimizer:
        return Adam(parameters, lr=lr, betas=tuple(self.config.optim.betas), eps=eps)

    def _record_skipped(self, batch: dict[str, Any]) -> None:
        """Note the unreadable files the loader passed over to make `batch`."""
        for paths in batch.get("skipped", ()):
            self.skipped_files.update(path for path in paths.split("\n") if path)

    def _linear_decay(self, optimizer: Optimizer) -> LambdaLR:
        total, linear = self.total_steps, self.config.optim.linear_decay
        return LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total) if linear else 1.0)

    def _inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """(l_input, class_ids, rgb, lab) on the training device."""
        return tuple(
            batch[key].to(self.device, non_blocking=True) for key in ("l_input", "class_id", "rgb", "lab")
        )

    # ------------------------------------------------------------------ training loop
    def train_step(
        self, micro_batches: list[dict[str, Any]]
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """One optimizer step over `micro_batches` (gradient accumulation)."""
        count = len(micro_batches)
        sums: dict[str, torch.Tensor] = {}
        visuals: dict[str, torch.Tensor] = {}
        for index, batch in enumerate(micro_batches):
            self._record_skipped(batch)
            with ExitStack() as stack:
                if index < count - 1:  # gradients are only all-reduced on the last micro-step
                    for module in self.ddp_modules():
                        if isinstance(module, DistributedDataParallel):
                            stack.enter_context(module.no_sync())
                terms, visuals = self.backward_micro_batch(batch, 1.0 / count)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float() / count
        self.step_learning_rates = {
            name: optimizer.param_groups[0]["lr"] for name, optimizer in self.optimizers.items()
        }
        for optimizer in self.optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for scheduler in self.schedulers.values():
            scheduler.step()
        return {name: float(value) for name, value in sums.items()}, visuals

    def _micro_batch_groups(self) -> Iterator[list[dict[str, Any]]]:
        """The rest of the current epoch, from `self.position` on, in groups of micro-batches."""
        accumulation = self.config.optim.grad_accumulation
        self.sampler.set_epoch(self.epoch)
        batches = iter(self.loader)
        if self.position:
            # Order and crops depend on (seed, epoch, index) only: skipping the batches the
            # checkpointed run had trained on continues the epoch exactly.
            logger.info("resuming epoch %d: skipping %d batches", self.epoch, self.position * accumulation)
            for _ in range(self.position * accumulation):
                next(batches)
        for _ in range(self.position, self.steps_per_epoch):
            yield [next(batches) for _ in range(accumulation)]

    def train(self) -> TrainResult:
        """Train up to the configured number of steps, checkpointing on the way; then export."""
        config, context = self.config, self.context
        images_per_step = config.optim.batch_size * config.optim.grad_accumulation * context.world_size
        writer = self._open_tensorboard() if context.is_main and config.logging.tensorboard else None
        history: list[dict[str, float]] = []
        window: dict[str, float] = {}
        window_steps, window_start = 0, time.perf_counter()
        previous_step_end = window_start
        progress = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not (context.is_main and config.logging.progress_bar),
            desc=f"stage {self.stage}",
            unit="step",
            dynamic_ncols=True,
        )
        if self.step == 0:
            logger.info(
                "stage %d: %d steps (%d per epoch), %d images per step on %d process(es), %s",
                self.stage, self.total_steps, self.steps_per_epoch, images_per_step,
                context.world_size, "bf16" if self.use_bf16 else "fp32",
            )
        try:
            with logging_redirect_tqdm():
                while self.step < self.total_steps:
                    for micro_batches in self._micro_batch_groups():
                        terms, visuals = self.train_step(micro_batches)
                        self._advance()
                        history.append(terms)
                        for name, value in terms.items():
                            window[name] = window.get(name, 0.0) + value
                        window_steps += 1
                        progress.update(1)
                        now = time.perf_counter()
                        speed = images_per_step / max(now - previous_step_end, 1e-9)
                        previous_step_end = now
                        progress.set_postfix(loss=f"{terms['total']:.4g}", img_s=f"{speed:.1f}")

                        last = self.step == self.total_steps
                        if self.step % config.logging.log_every == 0 or last:
                            elapsed = time.perf_counter() - window_start
                            means = context.mean({k: v / window_steps for k, v in window.items()})
                            self._log_scalars(writer, means, images_per_step * window_steps / elapsed)
                            window, window_steps, window_start = {}, 0, time.perf_counter()
                        if writer is not None and (self.step % config.logging.image_every == 0 or last):
                            writer.add_image("samples", self._image_grid(visuals), self.step)
                        if self.step % config.checkpoint.save_every == 0 or last:
                            self.save_checkpoint()
                        if last:
                            break
            final_dir = self._export_final()
        finally:
            progress.close()
            if writer is not None:
                writer.close()
        return TrainResult(self.output_dir, final_dir, self.step, history, sorted(self.skipped_files))

    def _advance(self) -> None:
        self.step += 1
        self.position += 1
        if self.position == self.steps_per_epoch:
            self.epoch += 1
            self.position = 0

    def _open_tensorboard(self):
        SummaryWriter = _summary_writer_class()
        log_dir = Path(self.config.logging.tensorboard_dir or self.output_dir / "tensorboard").expanduser()
        # purge_step drops events an interrupted run wrote after the checkpoint it resumes from.
        return SummaryWriter(str(log_dir), purge_step=self.step if self.step else None)

    def _log_scalars(self, writer: Any, losses: dict[str, float], images_per_second: float) -> None:
        if not self.context.is_main:
            return
        learning_rates = self.step_learning_rates
        logger.info(
            "step %d/%d  %s  lr %s  %.1f img/s",
            self.step, self.total_steps,
            "  ".join(f"{k} {v:.4g}" for k, v in sorted(losses.items())),
            " ".join(f"{k}={v:.3g}" for k, v in learning_rates.items()),
            images_per_second,
        )
        if writer is None:
            return
        for name, value in losses.items():
            writer.add_scalar(f"loss/{name}", value, self.step)
        for name, value in learning_rates.items():
            writer.add_scalar(f"lr/{name}", value, self.step)
        writer.add_scalar("throughput/images_per_second", images_per_second, self.step)
        writer.flush()

    @staticmethod
    def _image_grid(visuals: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rows = samples; columns in the order of `visuals` (e.g. gray | exemplar | ... | truth)."""
        columns = [image[:IMAGE_GRID_SAMPLES].detach().float().cpu().clamp(0, 1) for image in visuals.values()]
        side = columns[0].shape[-1]  # exemplars are at the work size, training crops may be smaller
        columns = [resample_square(column, side) for column in columns]
        tiles = torch.stack(columns, dim=1).flatten(0, 1)
        return make_grid(tiles, nrow=len(columns), padding=2)

    # ------------------------------------------------------------------ checkpoints
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {
            f"{name}.{key}": value.detach().to("cpu", copy=True).contiguous()
            for name, module in self.trainable_modules().items()
            for key, value in module.state_dict().items()
        }

    def _data_layout(self) -> dict[str, int]:
        return {
            "world_size": self.context.world_size,
            "batch_size": self.config.optim.batch_size,
            "grad_accumulation": self.config.optim.grad_accumulation,
            "dataset_size": len(self.dataset),
        }

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0); every rank must call it."""
        context = self.context
        rng_states = context.all_gather_object(capture_rng_state(self.device))
        for paths in context.all_gather_object(sorted(self.skipped_files)):
            self.skipped_files.update(paths)
        path = None
        if context.is_main:
            state = {
                "stage": self.stage,
                "step": self.step,
                "epoch": self.epoch,
                "position": self.position,
                "data_layout": self._data_layout(),
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
                "schedulers": {name: s.state_dict() for name, s in self.schedulers.items()},
                "rng": rng_states,
                "skipped_files": sorted(self.skipped_files),
            }
            path = self.checkpoints.save(self.step, lambda folder: self._write_checkpoint(folder, state))
            logger.info("saved checkpoint %s", path)
        context.barrier()
        return path

    def _write_checkpoint(self, folder: Path, state: dict[str, Any]) -> None:
        save_file(
            self.trainable_state_dict(),
            str(folder / WEIGHTS_FILE),
            metadata={"stage": str(self.stage), "step": str(self.step)},
        )
        (folder / TRAIN_CONFIG_FILE).write_text(dump_train_config(self.config))
        self._save_model_config(folder / MODEL_CONFIG_FILE)
        torch.save(state, folder / STATE_FILE)

    def _load_checkpoint(self, folder: Path) -> None:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        if state.get("stage") != self.stage:
            raise TrainingSetupError(
                f"{folder}: a stage-{state.get('stage')} checkpoint cannot resume stage {self.stage}"
            )
        if not self._same_model_config(folder / MODEL_CONFIG_FILE):
            raise TrainingSetupError(f"{folder}: made with another model configuration than this config's")
        self._warn_config_changes(folder)
        weights = load_file(str(folder / WEIGHTS_FILE))
        for name, module in self.trainable_modules().items():
            prefix = f"{name}."
            load_state_dict_strict(
                module,
                {key[len(prefix) :]: value for key, value in weights.items() if key.startswith(prefix)},
                f"{folder / WEIGHTS_FILE} [{name}]",
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.skipped_files = set(state["skipped_files"])
        if state["data_layout"] != self._data_layout():
            logger.warning(
                "resuming with another data layout (%s, was %s): the data order does not continue exactly",
                self._data_layout(), state["data_layout"],
            )
            if self.position >= self.steps_per_epoch:
                self.epoch, self.position = self.epoch + 1, 0
        rng_states = state["rng"]
        if len(rng_states) == self.context.world_size:
            restore_rng_state(rng_states[self.context.rank], self.device)
        else:
            seed_everything(self.config.seed + self.context.rank + self.step)
        logger.info("resumed from %s (step %d, epoch %d)", folder, self.step, self.epoch)

    def _warn_config_changes(self, folder: Path) -> None:
        saved = _flatten(yaml.safe_load((folder / TRAIN_CONFIG_FILE).read_text()) or {})
        current = _flatten(config_to_plain(self.config))
        changed = sorted(key for key in saved.keys() | current.keys() if saved.get(key) != current.get(key))
        if changed and self.context.is_main:
            logger.warning("config differs from the checkpoint's in: %s", ", ".join(changed))

    def _export_final(self) -> Path | None:
        """`Colorizer.save_pretrained` format in <output_dir>/final, plus the train config."""
        for paths in self.context.all_gather_object(sorted(self.skipped_files)):
            self.skipped_files.update(paths)
        final = None
        if self.context.is_main:
            final = self.output_dir / FINAL_DIR
            self._export(final)
            (final / TRAIN_CONFIG_FILE).write_text(dump_train_config(self.config))
            logger.info("exported the trained model to %s", final)
            if self.skipped_files:
                report = self.output_dir / SKIPPED_FILES_REPORT
                report.write_text("".join(f"{path}\n" for path in sorted(self.skipped_files)))
                logger.warning("%d unreadable data files were skipped (list: %s)", len(self.skipped_files), report)
        self.context.barrier()
        return final


def _summary_writer_class() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainingSetupError(
            "TensorBoard logging needs the tensorboard package (pip install 'gcpcolor[train]'); "
            "or set logging.tensorboard: false"
        ) from None
    return SummaryWriter


def _as_float(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.float() for name, value in features.items()}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


# --------------------------------------------------------------------------- stage 1


class EncoderInversion(nn.Module):
    """Stage 1's trainable part, the module DDP wraps: gray photo and class -> latent z."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, l_input: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(l_input, class_ids)


class EncoderTrainer(_Trainer):
    """Stage 1: z = E(L, y), x_inv = G(z, y); L1 on D's last three block outputs + λ_reg·‖z‖²/2."""

    stage = 1
    config_class = Stage1Config

    def _build(self) -> None:
        model = self.model
        for module in (model.generator, model.discriminator, model.correspondence,
                       model.colorization_net, model.deformator):
            freeze(module)
        model.encoder.train()
        model.encoder.requires_grad_(True)
        self.wrapped_inversion = self._wrap(EncoderInversion(model.encoder))
        optimizer = self._adam(list(model.encoder.parameters()), self.config.optim.lr)
        self.optimizers = {"encoder": optimizer}
        self.schedulers = {"encoder": self._linear_decay(optimizer)}

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.model.encoder}

    def ddp_modules(self) -> list[nn.Module]:
        return [self.wrapped_inversion]

    def losses(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        l_input, class_ids, rgb, lab = self._inputs(batch)
        weights = self.config.loss
        discriminator = self.model.discriminator
        with self.autocast():
            # The prior networks see photos at their own resolution (256² for the paper's).
            z = self.wrapped_inversion(self.model.to_prior_resolution(l_input), class_ids)
            inversion, _ = self.model.generator.generate(z, class_ids)
            inversion_features = discriminator.encoder_loss_features(inversion)
            with torch.no_grad():
                real_features = discriminator.encoder_loss_features(self.model.to_prior_resolution(rgb * 2 - 1))
        feature = encoder_feature_loss(
            [f.float() for f in inversion_features], [f.float() for f in real_features]
        )
        latent = latent_regularizer(z.float())
        total = weights.feature * feature + weights.latent * latent
        terms = {"total": total, "feature": feature, "latent": latent}
        visuals = {
            "gray": gray_to_rgb(lab[:, :1]),
            "inversion": resample_square((inversion.detach().float() + 1) / 2, rgb.shape[-1]),
            "truth": rgb,
        }
        return terms, visuals

    def backward_micro_batch(self, batch, scale):
        terms, visuals = self.losses(batch)
        (terms["total"] * scale).backward()
        return terms, visuals


# --------------------------------------------------------------------------- stage 2


class ColorizerForward(nn.Module):
    """Stage 2's trainable part, the module DDP wraps.

    Only the correspondence and colorization networks are registered as submodules; the frozen
    prior is held outside the module tree so DDP neither synchronises nor broadcasts it.
    """

    def __init__(self, model: GCPColorizationModel) -> None:
        super().__init__()
        self.correspondence = model.correspondence
        self.colorization_net = model.colorization_net
        self._model = (model,)  # a tuple is not registered by nn.Module

    def forward(
        self, l_input: torch.Tensor, class_ids: torch.Tensor, truth_rgb: torch.Tensor
    ) -> tuple[ForwardOutput, torch.Tensor]:
        """The colorization of `l_input` and the correspondence embedding of the true colours."""
        model = self._model[0]
        output = model(l_input, class_ids)
        # No loss uses the warped exemplar (it is for display). Returned with its graph, it would
        # make DDP expect gradients for the matching layers even where the guidance leaves them
        # unused (none, unaligned), and their bucket would never be all-reduced.
        output = dataclasses.replace(output, warped_exemplar=output.warped_exemplar.detach())
        with torch.no_grad():
            truth_features = model.correspondence_features(truth_rgb * 2 - 1)
        return output, self.correspondence.embed_reference(truth_features)


class ColorizationTrainer(_Trainer):
    """Stage 2: correspondence + colorization against a multi-scale LSGAN PatchGAN on Lab.

    Generator side: λ_perc·perceptual(VGG relu5_2, output vs truth) + λ_ctx·contextual(output vs
    exemplar) + λ_adv·LSGAN + λ_dom·domain alignment. Both sides are computed from the same
    forward pass of every micro-batch and both optimisers step together.
    """

    stage = 2
    config_class = Stage2Config

    @property
    def guidance(self) -> Guidance:
        return Guidance(self.config.guidance)

    def _build_model(self) -> nn.Module:
        model = super()._build_model()
        probe_data = self.config.class_probe_data
        if model.config.class_predictor == "imagenet_probe" and probe_data is not None and self.resume_from is None:
            fit_class_probe(model, make_dataset(dataclasses.replace(probe_data, train=False)))
        return model

    def _check_weight_files(self) -> None:
        """Settle the loss feature extractor; the checkpoints' config records the one used."""
        config = self.config
        extractor = config.feature_extractor
        if extractor == "auto":
            try:
                find_vgg19_weights(config.vgg_weights)
                extractor = "vgg19"
            except MissingWeightsError:
                extractor = "prior_discriminator"
            logger.info("loss features: %s", extractor)
        elif extractor == "vgg19" and not config.allow_random_vgg:
            find_vgg19_weights(config.vgg_weights)
        self.config = dataclasses.replace(config, feature_extractor=extractor)

    def _build(self) -> None:
        config, model = self.config, self.model
        for module in (*model.prior_modules(), model.deformator):
            freeze(module)
        for module in (model.correspondence, model.colorization_net):
            module.train()
            module.requires_grad_(True)
        if model.config.colorization.type == "semantic":
            model.colorization_net.backbone.requires_grad_(False)
        self.patchgan = MultiScalePatchGAN(config.patchgan).to(self.device).train()
        self.ab_bin_weights: torch.Tensor | None = None
        if config.loss.ab_classification > 0:
            if not getattr(model.colorization_net, "predicts_distribution", False):
                raise TrainingSetupError("loss.ab_classification needs model.colorization.type: semantic")
            centers = model.colorization_net.bin_centers
            counts = ab_bin_counts(self.dataset, centers, AB_PRIOR_SAMPLES)
            self.ab_bin_weights = rebalancing_weights(counts, centers, config.loss.rebalance_mix).to(self.device)
        if config.feature_extractor == "vgg19":
            self.loss_features: nn.Module = VGG19Features(
                config.vgg_weights, layers=VGG_LAYERS, allow_random=config.allow_random_vgg
            )
            layers = VGG_LAYERS
        else:
            # The paper already uses the prior's discriminator as a feature extractor for the
            # inversion loss; without VGG19 it stands in for the perceptual and contextual ones.
            self.loss_features = DiscriminatorFeatures(model.discriminator, model.prior_resolution)
            layers = DiscriminatorFeatures.LAYERS
        self.loss_features = self.loss_features.to(self.device)
        self.perceptual_layer = layers[-1]
        self.contextual = ContextualLoss(
            self.loss_features,
            dict(zip(layers, config.loss.contextual_layer_weights.values())),
            max_positions=config.contextual_max_positions,
        )
        # Without warping (none / unaligned) the matching layers after the embeddings get no
        # gradient; DDP must be told to expect that.
        unused = self.guidance in (Guidance.NONE, Guidance.UNALIGNED)
        self.wrapped_colorizer = self._wrap(ColorizerForward(model), find_unused_parameters=unused)
        self.wrapped_patchgan = self._wrap(self.patchgan)
        generator_parameters = [
            p for p in (*model.correspondence.parameters(), *model.colorization_net.parameters()) if p.requires_grad
        ]
        generator_optimizer = self._adam(generator_parameters, config.optim.lr)
        discriminator_optimizer = self._adam(
            list(self.patchgan.parameters()), config.optim.discriminator_lr or config.optim.lr
        )
        self.optimizers = {"colorizer": generator_optimizer, "patchgan": discriminator_optimizer}
        self.schedulers = {name: self._linear_decay(opt) for name, opt in self.optimizers.items()}

    def trainable_modules(self) -> dict[str, nn.Module]:
        modules = {
            "correspondence": self.model.correspondence,
            "colorization_net": self.model.colorization_net,
            "patchgan": self.patchgan,
        }
        if self.model.config.class_predictor == "imagenet_probe":
            modules["class_predictor"] = self.model.class_predictor  # fitted once, kept with the run
        return modules

    def ddp_modules(self) -> list[nn.Module]:
        return [self.wrapped_colorizer, self.wrapped_patchgan]

    def _scores_for_generator(self, fake_lab: torch.Tensor) -> list[torch.Tensor]:
        """PatchGAN scores of the fake with the PatchGAN frozen: the generator loss must not
        train it, and going around the DDP wrapper keeps this pass out of its gradient sync."""
        self.patchgan.requires_grad_(False)
        try:
            return self.patchgan(lab_to_discriminator_input(fake_lab))
        finally:
            self.patchgan.requires_grad_(True)

    def generator_losses(
        self, batch: dict[str, Any]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
        """(loss terms with 'total', the predicted Lab, visuals) of one micro-batch."""
        l_input, class_ids, rgb, lab = self._inputs(batch)
        if self.config.class_source == "predicted":
            class_ids = self.model.predict_class(l_input)
        weights = self.config.loss
        # Networks run under autocast; colour conversion and losses in float32, where the
        # contextual loss's relative distances and the Lab round trip keep their precision.
        with self.autocast():
            output, truth_embedding = self.wrapped_colorizer(l_input, class_ids, rgb)
        fake_lab = torch.cat([lab[:, :1], output.ab.float()], dim=1)
        output_rgb = lab_to_rgb(fake_lab)
        exemplar_rgb = ((output.exemplar.float() + 1) / 2).clamp(0, 1)
        terms = {"domain": domain_alignment_loss(output.gray_embedding.float(), truth_embedding.float())}
        # Terms with weight 0 are not computed at all: each costs a network pass.
        if weights.perceptual or weights.contextual:
            with self.autocast():
                output_features = _as_float(self.loss_features(output_rgb))
                with torch.no_grad():
                    truth_features = _as_float(self.loss_features(rgb))
                    exemplar_features = _as_float(self.loss_features(exemplar_rgb)) if weights.contextual else None
            if weights.perceptual:
                terms["perceptual"] = perceptual_loss(output_features, truth_features, self.perceptual_layer)
            if weights.contextual:
                terms["contextual"] = self.contextual.feature_loss(output_features, exemplar_features)
        if weights.adversarial:
            with self.autocast():
                fake_scores = [score.float() for score in self._scores_for_generator(fake_lab)]
            terms["adversarial"] = lsgan_generator_loss(fake_scores)
        if weights.ab_classification:
            terms["ab_classification"] = ab_classification_loss(
                output.ab_logits, lab[:, 1:], self.model.colorization_net.bin_centers, self.ab_bin_weights
            )
        total = sum(getattr(weights, name) * value for name, value in terms.items())
        terms = {"total": total, **terms}
        visuals = {
            "gray": gray_to_rgb(lab[:, :1]),
            "exemplar": exemplar_rgb.detach(),
            "warped": (output.warped_exemplar.float() + 1) / 2,
            "output": output_rgb.detach(),
            "truth": rgb,
        }
        return terms, fake_lab, visuals

    def discriminator_loss(self, real_lab: torch.Tensor, fake_lab: torch.Tensor) -> torch.Tensor:
        """LSGAN loss of the PatchGAN on real and (detached) predicted Lab, in one pass."""
        count = real_lab.shape[0]
        both = lab_to_discriminator_input(torch.cat([real_lab, fake_lab.detach()]))
        with self.autocast():
            scores = [score.float() for score in self.wrapped_patchgan(both)]
        return lsgan_discriminator_loss([s[:count] for s in scores], [s[count:] for s in scores])

    def backward_micro_batch(self, batch, scale):
        terms, fake_lab, visuals = self.generator_losses(batch)
        (terms["total"] * scale).backward()
        if not self.config.loss.adversarial:
            return terms, visuals
        real_lab = batch["lab"].to(self.device, non_blocking=True)
        discriminator = self.discriminator_loss(real_lab, fake_lab)
        (discriminator * scale).backward()
        return {**terms, "discriminator": discriminator}, visuals


def ab_bin_counts(dataset: Dataset, centers: torch.Tensor, samples: int) -> torch.Tensor:
    """How often each ab bin is the nearest to a pixel, over the first `samples` photos of
    `dataset` (evenly spread, fixed crops) at a quarter of their size: the colour prior that
    the rebalanced classification loss divides by."""
    counts = torch.zeros(len(centers), dtype=torch.float64)
    step = max(1, len(dataset) // samples)
    for index in range(0, min(len(dataset), step * samples), step):
        lab = dataset[(index, 0)]["lab"][None]
        ab = F.avg_pool2d(lab[:, 1:], 4).permute(0, 2, 3, 1).reshape(-1, 2)
        nearest = torch.cdist(ab, centers.to(ab)).argmin(dim=1)
        counts += torch.bincount(nearest, minlength=len(centers)).double()
    return counts


TRAINERS: dict[int, type[_Trainer]] = {1: EncoderTrainer, 2: ColorizationTrainer}


def export_checkpoint(source: str | os.PathLike, target: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write our reloadable format (`Colorizer.from_pretrained`) to `target` from a run's
    `final/` folder, one of its checkpoints, or a run folder (its newest checkpoint); with
    `dtype` (e.g. float16) the floating-point weights are stored in it."""
    source, target = Path(source).expanduser(), Path(target).expanduser()
    if (source / "config.json").is_file():
        save_model_pretrained(Colorizer.from_pretrained(source).model, target, dtype)
        return target
    checkpoint = resolve_resume(source, CheckpointManager(source / CHECKPOINTS_DIR))
    if checkpoint is None:
        raise TrainingSetupError(f"{source}: neither an exported model nor a run with checkpoints")
    data = yaml.safe_load((checkpoint / TRAIN_CONFIG_FILE).read_text())
    stage = 1 if "guidance" not in data else 2
    config = train_config_from_dict(stage_config_class(stage), data)
    config = dataclasses.replace(config, logging=dataclasses.replace(config.logging, tensorboard=False))
    trainer = TRAINERS[stage](config, checkpoint)  # rebuilds every network, then loads the checkpoint
    save_model_pretrained(trainer.model, target, dtype)
    return target


def run_training(config: TrainConfig, resume: str | os.PathLike | bool | None = None) -> TrainResult:
    """Train the stage `config` is for, in this process or as one rank of a torchrun job."""
    context = setup_distributed(config.device)
    try:
        return TRAINERS[config.stage](config, resume, context).train()
    finally:
        teardown_distributed(context)
