"""The training loop every stage runs: one `Trainer`, specialised by each stage's file.

A stage says what it builds (`_build_model`, `_build`), what it trains (`trainable_modules`,
`ddp_modules`) and how its losses make gradients (`phases`, `accumulate_gradients`). A step
runs each phase in turn over the step's micro-batches and then steps that phase's optimisers,
so a GAN whose discriminator must update before the generator sees it (stage 0) and a loss that
computes both sides from one forward pass (stage 2, one `joint` phase) share the same loop,
checkpoints, exact resume, logging and export.

Distributed: only the trainable networks are wrapped in DistributedDataParallel, each process
reads its share of the data, and rank 0 alone writes logs, TensorBoard events and checkpoints.
A resumed run continues exactly where its checkpoint left off: the data order and crops are
functions of (seed, epoch, index), so skipping the batches already seen reproduces the rest of
the epoch, and every rank's RNG states are restored.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..config import config_from_dict, config_to_dict
from ..data import make_dataloader, make_dataset
from ..errors import TrainingSetupError
from ..model import Guidance
from ..serialization import load_state_dict_strict, read_safetensors
from .builders import build_model
from .checkpoints import (
    CHECKPOINTS_DIR,
    FINAL_DIR,
    MODEL_CONFIG_FILE,
    SKIPPED_FILES_REPORT,
    STATE_FILE,
    TRAIN_CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointManager,
    changed_settings,
    resolve_resume,
)
from .config import OPTIMIZER_CLASSES, TrainConfig, config_to_plain, dump_train_config, validate_train_config
from .distributed import DistributedContext, resolve_training_device
from .reporting import ReportSkippedFiles, image_grid, summary_writer_class
from .rng import capture_rng_state, restore_rng_state, seed_everything

logger = logging.getLogger(__name__)

#: The one phase of a stage whose losses all come from one forward pass per micro-batch.
JOINT_PHASE = "joint"


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path | None  # the save_pretrained export (None on ranks other than 0)
    step: int
    history: list[dict[str, float]]  # this process's loss terms for each step of this run
    skipped_files: list[str]
    stopped_by: str | None = None  # the signal's name when SIGINT/SIGTERM ended the run early



class StopRequest:
    """Turns the first SIGINT/SIGTERM during training into a request to stop after the current
    step (with a checkpoint), so a killed or time-limited run loses no steps; a second signal
    interrupts at once. Handlers are only installed on the main thread."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        logger.warning("%s received: stopping after this step (again to stop at once)", self.signal_name)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


@dataclass(frozen=True)
class Phase:
    """Part of a training step: gradients from `accumulate_gradients(name, ...)` over all
    micro-batches, then a step of the optimisers named in `optimizers` (an empty tuple: all)."""

    name: str
    optimizers: tuple[str, ...] = ()


class Trainer:
    """What every stage shares; a stage subclasses it (see the module docstring)."""

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
        self.context = context or DistributedContext(device=resolve_training_device(config.device))
        self.config = config = self.prepare_config(config)
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
            ReportSkippedFiles(self.dataset),
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
            summary_writer_class()  # on every rank: a missing package must stop them all

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
        """All networks of the stage, trained and frozen, on the CPU: for stages 1 and 2 the
        composed model around the configured prior (stage 0 builds its own GAN)."""
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
        path.write_text(json.dumps(config_to_dict(self.model.config), indent=2) + "\n")

    def _same_model_config(self, path: Path) -> bool:
        config = self.model.config
        return config_from_dict(type(config), json.loads(path.read_text())) == config

    def _export(self, folder: Path) -> None:
        """The trained model in its reloadable format (`GCPColorizationModel.from_pretrained`)."""
        self.model.save_pretrained(folder)

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

    def phases(self) -> tuple[Phase, ...]:
        """The parts of a step, in order; by default one phase that steps every optimiser."""
        return (Phase(JOINT_PHASE),)

    def accumulate_gradients(
        self, phase: str, batch: dict[str, Any], scale: float
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The losses of `phase` on one micro-batch, back-propagated with weight `scale`:
        (loss terms, visuals). Terms of the same name from several phases are added up."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called once the step's optimisers and schedulers have stepped (e.g. a weight EMA)."""

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

    def make_optimizer(self, parameters: list[nn.Parameter], lr: float, eps: float = 1e-8) -> Optimizer:
        """The optimiser `optim.optimizer` names, with the config's betas."""
        optimizer_class = OPTIMIZER_CLASSES[self.config.optim.optimizer]
        return optimizer_class(parameters, lr=lr, betas=tuple(self.config.optim.betas), eps=eps)

    def _record_skipped(self, batch: dict[str, Any]) -> None:
        """Note the unreadable files the loader passed over to make `batch`."""
        for paths in batch.get("skipped", ()):
            self.skipped_files.update(path for path in paths.split("\n") if path)

    def make_scheduler(self, optimizer: Optimizer) -> LambdaLR:
        """Linear decay to 0 over the run (`optim.linear_decay`), else a constant rate; over the
        first `optim.warmup_steps` steps the rate also rises linearly from 1/warmup of it."""
        total, linear, warmup = self.total_steps, self.config.optim.linear_decay, self.config.optim.warmup_steps

        def factor(step: int) -> float:
            rise = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
            return rise * (max(0.0, 1.0 - step / total) if linear else 1.0)

        return LambdaLR(optimizer, factor)

    def prepare_config(self, config: TrainConfig) -> TrainConfig:
        """The config the run trains with, settled before anything is built (self.context is
        set): a stage that derives settings from its data does so here."""
        return config

    def batch_to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A loader batch as every phase of a step reads it: where a stage has several phases,
        it copies what they need to the device here, once a step."""
        return batch

    def _inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """(l_input, class_ids, rgb, lab) on the training device."""
        return tuple(
            batch[key].to(self.device, non_blocking=True) for key in ("l_input", "class_id", "rgb", "lab")
        )

    # ------------------------------------------------------------------ training loop
    def train_step(
        self, micro_batches: list[dict[str, Any]]
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """One step: each phase over all `micro_batches` (gradient accumulation), then its
        optimisers; then the schedulers and `after_step`."""
        count = len(micro_batches)
        for batch in micro_batches:
            self._record_skipped(batch)
        micro_batches = [self.batch_to_device(batch) for batch in micro_batches]
        self.step_learning_rates = {
            name: optimizer.param_groups[0]["lr"] for name, optimizer in self.optimizers.items()
        }
        sums: dict[str, torch.Tensor] = {}
        visuals: dict[str, torch.Tensor] = {}
        for phase in self.phases():
            for index, batch in enumerate(micro_batches):
                with ExitStack() as stack:
                    if index < count - 1:  # gradients are only all-reduced on the last micro-step
                        for module in self.ddp_modules():
                            if isinstance(module, DistributedDataParallel):
                                stack.enter_context(module.no_sync())
                    terms, phase_visuals = self.accumulate_gradients(phase.name, batch, 1.0 / count)
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + value.detach().float() / count
                visuals = phase_visuals or visuals
            for name in phase.optimizers or tuple(self.optimizers):
                self.optimizers[name].step()
                self.optimizers[name].zero_grad(set_to_none=True)
        for scheduler in self.schedulers.values():
            scheduler.step()
        self.after_step()
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
        stop = StopRequest()
        stopped_by: str | None = None  # set only where every process agreed to stop
        try:
            with logging_redirect_tqdm(), stop:
                while self.step < self.total_steps and stopped_by is None:
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
                            writer.add_image("samples", image_grid(visuals), self.step)
                        # every process must agree to stop at the same step (DDP collectives)
                        stopping = context.any(stop.signal_name is not None)
                        if self.step % config.checkpoint.save_every == 0 or last or stopping:
                            self.save_checkpoint()
                        if stopping:
                            stopped_by = stop.signal_name or "a signal on another process"
                            logger.warning(
                                "stopped by %s at step %d; the checkpoint is saved: resume with --resume",
                                stopped_by, self.step,
                            )
                            break
                        if last:
                            break
            final_dir = None if stopped_by else self._export_final()
        finally:
            progress.close()
            if writer is not None:
                writer.close()
        return TrainResult(
            self.output_dir, final_dir, self.step, history, sorted(self.skipped_files), stopped_by
        )

    def _advance(self) -> None:
        self.step += 1
        self.position += 1
        if self.position == self.steps_per_epoch:
            self.epoch += 1
            self.position = 0

    def _open_tensorboard(self):
        SummaryWriter = summary_writer_class()
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
        weights = read_safetensors(folder / WEIGHTS_FILE)
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
        changed = changed_settings((folder / TRAIN_CONFIG_FILE).read_text(), config_to_plain(self.config))
        if changed and self.context.is_main:
            logger.warning("config differs from the checkpoint's in: %s", ", ".join(changed))

    def _export_final(self) -> Path | None:
        """Our model format (`_export`) in <output_dir>/final, plus the train config."""
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
