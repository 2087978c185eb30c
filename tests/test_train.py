"""Training of both stages: configs, loss decrease, gradient routing, exact resume, CLI.

Everything runs the tiny model with a random prior on a few generated photos in tmp_path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from gcpcolor.config import ConfigError
from gcpcolor.errors import TrainingSetupError
from gcpcolor.train_cli import main as train_main
from gcpcolor.training.checkpoints import CHECKPOINT_FILES, LATEST_POINTER, STATE_FILE, WEIGHTS_FILE, CheckpointManager
from gcpcolor.training.config import Stage1Config, Stage2Config, load_train_config
from gcpcolor.training.engine import JOINT_PHASE
from gcpcolor.training.run import run_training
from gcpcolor.training.stage1_encoder import EncoderTrainer
from gcpcolor.training.stage2_colorization import ColorizationTrainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

pytestmark = pytest.mark.filterwarnings("ignore:VGG19 weights.*:UserWarning")


def smooth_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A colourful photo-like image: a different sinusoidal gradient in each channel."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [
        0.5 + 0.45 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0.5, 2) * yy) + rng.uniform(0, 6))
        for _ in range(3)
    ]
    return (np.stack(channels, axis=-1) * 255).round().astype(np.uint8)


def write_photos(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["file,imagenet_index"]
    for index, (height, width) in enumerate(sizes):
        Image.fromarray(smooth_photo(rng, height, width)).save(folder / f"photo{index}.png")
        rows.append(f"photo{index}.png,{(index * 97) % 1000}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_photos(tmp_path_factory.mktemp("photos"), [(96, 128), (200, 160), (256, 256), (80, 64)])


@pytest.fixture(scope="module")
def one_photo(tmp_path_factory) -> Path:
    return write_photos(tmp_path_factory.mktemp("one_photo"), [(256, 256)], seed=1)


def tiny_config(stage: int, root: Path, output_dir: Path, *overrides: str) -> Stage1Config | Stage2Config:
    return load_train_config(
        stage,
        CONFIGS / "smoke" / f"stage{stage}_tiny.yaml",
        [
            f"data.root={root}",
            f"checkpoint.output_dir={output_dir}",
            "logging.progress_bar=false",
            "logging.tensorboard=false",
            *overrides,
        ],
    )


def overfit_overrides(steps: int, lr: float) -> list[str]:
    # One photo, centre crop, constant learning rate: a fixed batch to overfit.
    return ["data.train=false", "optim.batch_size=1", f"optim.lr={lr}", f"optim.max_steps={steps}",
            "optim.linear_decay=false", "checkpoint.save_every=1000"]


def parameters_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- configs


def test_shipped_configs_carry_the_paper_settings():
    stage1 = load_train_config(1, CONFIGS / "paper" / "stage1.yaml")
    assert (stage1.optim.lr, stage1.optim.betas, stage1.optim.epochs, stage1.optim.batch_size) == (
        1e-5, (0.9, 0.999), 10, 8)
    assert (stage1.loss.feature, stage1.loss.latent) == (1.0, 0.0125)
    assert stage1.optim.linear_decay and stage1.model == "full" and stage1.precision == "bf16"

    stage2 = load_train_config(2, CONFIGS / "paper" / "stage2.yaml")
    assert (stage2.optim.lr, stage2.optim.betas, stage2.optim.epochs, stage2.optim.batch_size) == (
        1e-4, (0.5, 0.999), 10, 8)
    weights = stage2.loss
    assert (weights.perceptual, weights.adversarial, weights.domain, weights.contextual) == (1e-3, 1.0, 10.0, 0.1)
    assert weights.contextual_layer_weights == {"relu3_2": 2.0, "relu4_2": 4.0, "relu5_2": 8.0}
    assert stage2.guidance == "features" and not stage2.allow_random_vgg
    assert stage2.patchgan.num_scales == 3

    for stage in (1, 2):
        tiny = load_train_config(stage, CONFIGS / "smoke" / f"stage{stage}_tiny.yaml")
        assert tiny.model == "tiny" and tiny.prior.random_prior and tiny.optim.max_steps <= 64


def test_config_defaults_come_from_the_stage_not_the_section_class(tmp_path):
    # A file that only sets epochs keeps stage 2's lr and betas.
    path = tmp_path / "partial.yaml"
    path.write_text("prior: {random_prior: true}\noptim: {epochs: 3}\n")
    config = load_train_config(2, path)
    assert (config.optim.epochs, config.optim.lr, config.optim.betas) == (3, 1e-4, (0.5, 0.999))


def test_config_unknown_keys_and_bad_values_are_errors(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("prior: {random_prior: true}\noptim: {lrr: 0.1}\n")
    with pytest.raises(ConfigError, match="optim: unknown option.*lrr"):
        load_train_config(1, path)
    with pytest.raises(ConfigError, match="unknown option 'lrr'"):
        load_train_config(1, CONFIGS / "smoke" / "stage1_tiny.yaml", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="optim.batch_size: expected int"):
        load_train_config(1, CONFIGS / "smoke" / "stage1_tiny.yaml", ["optim.batch_size=two"])
    with pytest.raises(ConfigError, match="guidance must be one of"):
        load_train_config(2, CONFIGS / "smoke" / "stage2_tiny.yaml", ["guidance=colour"])
    with pytest.raises(ConfigError, match="optim.warmup_steps must be >= 0"):
        load_train_config(2, CONFIGS / "smoke" / "stage2_tiny.yaml", ["optim.warmup_steps=-5"])
    with pytest.raises(ConfigError, match="exactly one of"):
        load_train_config(2, CONFIGS / "smoke" / "stage2_tiny.yaml", ["prior.prior_weights_dir=/weights"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_train_config(1, tmp_path / "missing.yaml")


def test_config_overrides_are_typed_and_nested():
    config = load_train_config(
        2,
        CONFIGS / "paper" / "stage2.yaml",
        ["optim.lr=2e-4", "optim.betas=[0.0, 0.99]", "guidance=none", "optim.max_steps=null",
         "model.colorization.base_channels=32", "data.root=/data/imagenet/train"],
    )
    assert config.optim.lr == pytest.approx(2e-4) and isinstance(config.optim.lr, float)
    assert config.optim.betas == (0.0, 0.99) and config.guidance == "none"
    assert config.model["colorization"]["base_channels"] == 32
    assert config.model["biggan"]["g_ch"] == 96  # the rest of the "full" preset is kept
    assert config.data.root == "/data/imagenet/train"


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_manager_is_atomic_prunes_and_points_to_latest(tmp_path):
    manager = CheckpointManager(tmp_path / "checkpoints", keep_last=2)

    def write(folder: Path) -> None:
        for name in CHECKPOINT_FILES:
            (folder / name).write_text(folder.name)

    for step in (10, 20, 30):
        manager.save(step, write)
    names = [path.name for path in manager.checkpoints()]
    assert names == ["step_0000020", "step_0000030"]
    assert (manager.directory / LATEST_POINTER).read_text().strip() == "step_0000030"

    # A save that fails half-way leaves neither a checkpoint nor a moved pointer behind.
    def failing(folder: Path) -> None:
        (folder / WEIGHTS_FILE).write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        manager.save(40, failing)
    assert manager.latest().name == "step_0000030"
    assert not any(p.name.startswith(".tmp-") for p in manager.directory.iterdir())

    # A half-written folder from a killed process is not a checkpoint, even as the newest one.
    partial = manager.directory / ".tmp-step_0000050-12345"
    partial.mkdir()
    (partial / WEIGHTS_FILE).write_text("partial")
    incomplete = manager.directory / "step_0000060"
    incomplete.mkdir()
    (manager.directory / LATEST_POINTER).unlink()
    assert manager.latest().name == "step_0000030"


# --------------------------------------------------------------------------- stage 1


def test_stage1_overfits_one_batch(one_photo, tmp_path):
    config = tiny_config(1, one_photo, tmp_path / "run", *overfit_overrides(steps=8, lr=1e-3))
    result = run_training(config)
    totals = [terms["total"] for terms in result.history]
    features = [terms["feature"] for terms in result.history]
    assert len(totals) == 8
    assert totals[-1] < 0.7 * totals[0]
    assert features[-1] < features[0]


def test_stage1_gradients_reach_only_the_encoder(photos, tmp_path):
    trainer = EncoderTrainer(tiny_config(1, photos, tmp_path / "run"))
    model = trainer.model
    frozen = {name: getattr(model, name) for name in
              ("generator", "discriminator", "correspondence", "colorization_net", "deformator")}
    frozen_before = {name: parameters_of(module) for name, module in frozen.items()}
    encoder_before = parameters_of(model.encoder)

    batch = next(iter(trainer.loader))
    trainer.accumulate_gradients(JOINT_PHASE, batch, 1.0)
    encoder_grads = [p.grad for p in model.encoder.parameters()]
    assert all(grad is not None for grad in encoder_grads)
    assert sum(float(grad.abs().sum()) for grad in encoder_grads) > 0
    for name, module in frozen.items():
        assert all(p.grad is None and not p.requires_grad for p in module.parameters()), name
        assert not module.training, name

    trainer.train_step([batch])
    for name, module in frozen.items():
        assert same_tensors(parameters_of(module), frozen_before[name]), name
    assert not same_tensors(parameters_of(model.encoder), encoder_before)


def test_stage1_resume_continues_bit_for_bit(photos, tmp_path):
    # 4 photos, batch 1, 2 micro-batches per step: 2 steps per epoch; 3 steps cross an epoch.
    overrides = ["optim.batch_size=1", "optim.grad_accumulation=2", "optim.max_steps=3",
                 "checkpoint.save_every=1", "checkpoint.keep_last=0"]
    uninterrupted = run_training(tiny_config(1, photos, tmp_path / "full", *overrides))
    full_checkpoints = CheckpointManager(tmp_path / "full" / "checkpoints")
    assert [p.name for p in full_checkpoints.checkpoints()] == [f"step_000000{i}" for i in (1, 2, 3)]
    for checkpoint in full_checkpoints.checkpoints():
        assert sorted(p.name for p in checkpoint.iterdir()) == sorted(CHECKPOINT_FILES)
    assert (tmp_path / "full" / "checkpoints" / LATEST_POINTER).read_text().strip() == "step_0000003"
    state = torch.load(full_checkpoints.checkpoints()[0] / STATE_FILE, weights_only=True)
    assert (state["step"], state["epoch"], state["position"]) == (1, 0, 1)

    # "Kill" after step 1 (mid-epoch): only its checkpoint survives, plus a half-written one.
    resumed_dir = tmp_path / "resumed" / "checkpoints"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(full_checkpoints.checkpoints()[0], resumed_dir / "step_0000001")
    (resumed_dir / LATEST_POINTER).write_text("step_0000001\n")
    half_written = resumed_dir / ".tmp-step_0000002-4242"
    half_written.mkdir()
    (half_written / WEIGHTS_FILE).write_bytes(b"truncated")

    resumed = run_training(tiny_config(1, photos, tmp_path / "resumed", *overrides), resume=True)
    assert len(resumed.history) == 2 and resumed.step == 3
    assert [h["total"] for h in resumed.history] == [h["total"] for h in uninterrupted.history[1:]]
    expected = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    actual = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert same_tensors(expected, actual)
    assert not half_written.exists()  # cleaned up by the next save


def test_stage1_refuses_to_overwrite_a_run_without_resume(photos, tmp_path):
    config = tiny_config(1, photos, tmp_path / "run", "optim.max_steps=1", "optim.batch_size=2")
    run_training(config)
    with pytest.raises(TrainingSetupError, match="already holds checkpoints"):
        run_training(config)
    with pytest.raises(TrainingSetupError, match="no complete checkpoint"):
        run_training(config, resume=tmp_path / "nowhere")
    # Resuming a finished run only re-exports.
    assert run_training(config, resume=True).history == []


# --------------------------------------------------------------------------- stage 2


def test_stage2_gradients_reach_only_the_trained_networks(photos, tmp_path):
    trainer = ColorizationTrainer(tiny_config(2, photos, tmp_path / "run"))
    model = trainer.model
    generator_side = {"correspondence": model.correspondence, "colorization_net": model.colorization_net}
    frozen = {"generator": model.generator, "discriminator": model.discriminator,
              "encoder": model.encoder, "deformator": model.deformator, "loss_features": trainer.loss_features}

    batch = next(iter(trainer.loader))
    terms, fake_lab, visuals = trainer.generator_losses(batch)
    assert set(terms) == {"total", "perceptual", "contextual", "adversarial", "domain"}
    assert fake_lab.shape == (1, 3, 256, 256)
    assert torch.equal(fake_lab[:, :1], batch["lab"][:, :1])  # the photo's own L is kept
    assert list(visuals) == ["gray", "exemplar", "warped", "output", "truth"]
    terms["total"].backward()
    for name, module in generator_side.items():
        grads = [p.grad for p in module.parameters()]
        assert all(grad is not None for grad in grads), name
        assert sum(float(grad.abs().sum()) for grad in grads) > 0, name
    assert all(p.grad is None for p in trainer.patchgan.parameters())
    assert all(p.requires_grad for p in trainer.patchgan.parameters())  # restored after the G pass
    for name, module in frozen.items():
        assert all(p.grad is None for p in module.parameters()), name

    generator_grads = {n: p.grad.clone() for n, p in model.colorization_net.named_parameters()}
    loss = trainer.discriminator_loss(batch["lab"], fake_lab)
    loss.backward()
    assert all(p.grad is not None for p in trainer.patchgan.parameters())
    assert same_tensors({n: p.grad for n, p in model.colorization_net.named_parameters()}, generator_grads)
    for name, module in frozen.items():
        assert all(p.grad is None for p in module.parameters()), name


def test_stage2_overfits_one_batch(one_photo, tmp_path):
    config = tiny_config(2, one_photo, tmp_path / "run", *overfit_overrides(steps=3, lr=1e-3))
    history = run_training(config).history
    totals = [terms["total"] for terms in history]
    assert totals[-1] < 0.85 * totals[0]
    assert history[-1]["domain"] < history[0]["domain"]


# --------------------------------------------------------------------------- CLI


def cli_args(command: str, stage: int, root: Path, output_dir: Path, *overrides: str) -> list[str]:
    args = [command, "--config", str(CONFIGS / "smoke" / f"stage{stage}_tiny.yaml"),
            "--set", f"data.root={root}", "--set", f"checkpoint.output_dir={output_dir}",
            "--set", "logging.progress_bar=false"]
    for override in overrides:
        args += ["--set", override]
    return args


def test_cli_missing_config_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(train_main, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "config file not found" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "override, message",
    [("optim.lrr=1", "unknown option 'lrr'"), ("data.root=/no/such/folder", "dataset folder not found")],
)
def test_cli_bad_key_or_missing_data_is_a_one_line_error(photos, tmp_path, override, message):
    args = cli_args("train-encoder", 1, photos, tmp_path / "run", override)
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_cli_missing_prior_weights_is_a_one_line_error(photos, tmp_path):
    args = cli_args("train-encoder", 1, photos, tmp_path / "run", "prior.random_prior=false",
                    f"prior.prior_weights_dir={tmp_path / 'weights'}", "model=full")
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 2, result.output
    assert "biggan_G_ema_256.pth" in result.output and "Traceback" not in result.output


def tensorboard_events(log_dir: Path):
    """Every scalar and image event of the TensorBoard logs in `log_dir`, loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def read_scalars(log_dir: Path) -> tuple[dict[str, list[int]], list[str]]:
    """{scalar tag: steps logged} and the image tags of the TensorBoard events in `log_dir`."""
    accumulator = tensorboard_events(log_dir)
    scalars = {tag: [event.step for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
    return scalars, accumulator.Tags()["images"]


def test_cli_stage1_end_to_end_writes_checkpoints_tensorboard_and_export(photos, tmp_path):
    output_dir = tmp_path / "run"
    args = cli_args("train-encoder", 1, photos, output_dir, "optim.max_steps=2", "checkpoint.save_every=1",
                    "checkpoint.keep_last=1", "logging.log_every=1", "logging.image_every=1", "optim.lr=0.02")
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    checkpoints = CheckpointManager(output_dir / "checkpoints").checkpoints()
    assert [p.name for p in checkpoints] == ["step_0000002"]  # keep_last=1 pruned step 1
    saved = yaml.safe_load((checkpoints[0] / "train_config.yaml").read_text())
    assert saved["optim"]["lr"] == 0.02  # the --set override reached the run

    scalars, images = read_scalars(output_dir / "tensorboard")
    assert {"loss/total", "loss/feature", "loss/latent", "lr/encoder", "throughput/images_per_second"} <= set(scalars)
    assert scalars["loss/total"] == [1, 2] and images == ["samples"]

    from gcpcolor.pipeline import Colorizer

    exported = Colorizer.from_pretrained(output_dir / "final").model
    trained = load_file(str(checkpoints[0] / WEIGHTS_FILE))
    for key, value in exported.encoder.state_dict().items():
        assert torch.equal(value, trained[f"encoder.{key}"])


def test_cli_stage2_end_to_end_and_exact_resume(photos, tmp_path):
    overrides = ["optim.max_steps=2", "checkpoint.save_every=1", "checkpoint.keep_last=0",
                 "logging.log_every=1", "logging.image_every=2"]
    full = tmp_path / "full"
    result = CliRunner().invoke(train_main, cli_args("train", 2, photos, full, *overrides))
    assert result.exit_code == 0, result.output
    checkpoints = CheckpointManager(full / "checkpoints").checkpoints()
    assert [p.name for p in checkpoints] == ["step_0000001", "step_0000002"]
    weights = load_file(str(checkpoints[0] / WEIGHTS_FILE))
    assert {key.split(".")[0] for key in weights} == {"correspondence", "colorization_net", "patchgan"}
    state = torch.load(checkpoints[0] / STATE_FILE, weights_only=True)
    assert set(state["optimizers"]) == set(state["schedulers"]) == {"colorizer", "patchgan"}

    scalars, images = read_scalars(full / "tensorboard")
    losses = {"total", "perceptual", "contextual", "adversarial", "domain", "discriminator"}
    assert {f"loss/{name}" for name in losses} | {"lr/colorizer", "lr/patchgan"} <= set(scalars)
    assert images == ["samples"]

    # A new run resumed from the step-1 checkpoint of the first ends with the same weights.
    resumed = tmp_path / "resumed"
    args = cli_args("train", 2, photos, resumed, *overrides) + ["--resume", str(checkpoints[0])]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    assert same_tensors(
        load_file(str(checkpoints[1] / WEIGHTS_FILE)),
        load_file(str(resumed / "checkpoints" / "step_0000002" / WEIGHTS_FILE)),
    )
    assert same_tensors(
        load_file(str(full / "final" / "model.safetensors")),
        load_file(str(resumed / "final" / "model.safetensors")),
    )


def test_cli_missing_vgg_weights_is_a_one_line_error(photos, tmp_path):
    args = cli_args("train", 2, photos, tmp_path / "run", "allow_random_vgg=false",
                    f"vgg_weights={tmp_path / 'vgg19.pth'}")
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 2, result.output
    assert "vgg19-dcbb9e9d.pth" in result.output and "Traceback" not in result.output


def test_prior_from_the_authors_files(photos, tmp_path):
    from gcpcolor.legacy import save_authors_checkpoints
    from gcpcolor.model import GCPColorizationModel
    from gcpcolor.config import ColorizerConfig

    torch.manual_seed(123)
    authors = GCPColorizationModel(ColorizerConfig.tiny())
    save_authors_checkpoints(authors, tmp_path / "weights")
    config = tiny_config(2, photos, tmp_path / "run", "prior.random_prior=false",
                         f"prior.prior_weights_dir={tmp_path / 'weights'}")
    model = ColorizationTrainer(config).model
    for name in ("generator", "discriminator", "encoder", "deformator"):
        assert same_tensors(getattr(model, name).state_dict(), getattr(authors, name).state_dict()), name
    # Only the prior is taken from the authors' files; the trained networks start from scratch.
    assert not same_tensors(model.colorization_net.state_dict(), authors.colorization_net.state_dict())


def test_stage2_starts_from_the_stage1_export(photos, tmp_path):
    stage1 = run_training(tiny_config(1, photos, tmp_path / "stage1", "optim.max_steps=1", "optim.lr=1e-3"))
    exported = load_file(str(stage1.final_dir / "model.safetensors"))
    for guidance in ("features", "image"):
        config = tiny_config(2, photos, tmp_path / f"stage2_{guidance}", "prior.random_prior=false",
                             f"prior.pretrained={stage1.final_dir}", f"guidance={guidance}")
        trainer = ColorizationTrainer(config)
        model = trainer.model
        for name in ("encoder", "generator", "discriminator", "correspondence"):
            state = getattr(model, name).state_dict()
            assert same_tensors(state, {k: exported[f"{name}.{k}"] for k in state}), name
        assert not model.encoder.training and not any(p.requires_grad for p in model.encoder.parameters())
        assert model.colorization_net.training
    # The image guidance feeds RGB (3 channels) to SPADE: its colorization net is a new one.
    assert model.colorization_net.up_norm3.mlp_gamma.in_channels == 3


def test_stage2_with_truth_references_trains_a_model_that_takes_a_reference(photos, tmp_path):
    from gcpcolor.pipeline import Colorizer

    config = tiny_config(2, photos, tmp_path / "run", "guidance=image", "truth_reference=1.0", "optim.max_steps=2")
    result = run_training(config)
    colorizer = Colorizer.from_pretrained(result.final_dir)
    assert colorizer.takes_reference
    photo = np.random.default_rng(0).uniform(size=(24, 32)).astype(np.float32)
    blue = np.broadcast_to(np.float32([0.1, 0.2, 0.9]), (8, 8, 3))
    assert colorizer.colorize(photo, reference=blue).warped_exemplar[..., 2].mean() > 0.8


def test_skipped_files_are_reported(tmp_path):
    root = write_photos(tmp_path / "photos", [(96, 96), (128, 96), (64, 64)])
    (root / "photo1.png").write_bytes(b"not a png")
    # Three steps of one photo: the whole epoch, so the broken file is met.
    result = run_training(tiny_config(1, root, tmp_path / "run", "optim.max_steps=3", "optim.batch_size=1"))
    assert result.skipped_files == [str(root / "photo1.png")]
    assert (tmp_path / "run" / "skipped_files.txt").read_text().split() == [str(root / "photo1.png")]


def test_train_commands_are_registered_on_the_main_cli():
    from gcpcolor.cli import main as gcpcolor_main

    assert {"train", "train-encoder"} <= set(gcpcolor_main.commands)


def test_a_signal_stops_training_after_the_step_with_a_checkpoint_and_resume_goes_on(photos, tmp_path):
    # As `timeout --signal=INT` or a cluster's pre-emption does it: the signal reaches the whole
    # process group, data-loading workers included.
    import os
    import signal
    import subprocess
    import sys
    import time

    output_dir = tmp_path / "run"
    args = cli_args("train-encoder", 1, photos, output_dir, "optim.max_steps=100000", "checkpoint.save_every=100000",
                    "logging.log_every=1", "data.num_workers=1")
    command = [sys.executable, "-m", "gcpcolor", *args]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        lines.append(line)
        if "step 3/" in line or not line:
            break
    os.killpg(process.pid, signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    output = "".join(lines) + rest
    assert process.returncode == 128 + signal.SIGINT, output
    assert "Traceback" not in output
    stopped = [line for line in output.splitlines() if line.startswith("training stopped by SIGINT at step ")]
    assert len(stopped) == 1, output
    step = int(stopped[0].split(" at step ")[1].split(";")[0])
    assert step >= 3
    checkpoints = CheckpointManager(output_dir / "checkpoints").checkpoints()
    assert [p.name for p in checkpoints] == [f"step_{step:07d}"]
    assert not (output_dir / "final").exists()

    resumed = CliRunner().invoke(train_main, cli_args("train-encoder", 1, photos, output_dir, f"optim.max_steps={step + 1}",
                                                      "logging.log_every=1") + ["--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert (output_dir / "final" / "model.safetensors").is_file()
    state = torch.load(CheckpointManager(output_dir / "checkpoints").checkpoints()[-1] / STATE_FILE, weights_only=True)
    assert state["step"] == step + 1


def test_warmup_raises_the_rate_linearly_then_it_decays(photos, tmp_path):
    config = tiny_config(1, photos, tmp_path / "run", "optim.max_steps=4", "optim.warmup_steps=2", "optim.lr=0.02",
                         "logging.tensorboard=true", "logging.log_every=1", "checkpoint.save_every=1000")
    run_training(config)
    rates = [event.value for event in tensorboard_events(tmp_path / "run" / "tensorboard").Scalars("lr/encoder")]
    # The rate of optimizer step s (from 0): 0.02 · min(1, (s + 1)/2) · (1 - s/4)
    assert rates == pytest.approx([0.02 * 0.5 * 1.0, 0.02 * 1.0 * 0.75, 0.02 * 0.5, 0.02 * 0.25], rel=1e-6)
