"""Our own colour prior: smaller BigGAN layouts, DiffAugment, pseudo-classes, `train-prior`,
and stages 1-2 on top of it with the discriminator as loss feature extractor."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from gcpcolor.augment import diff_augment, parse_policy, random_cutout, random_translation
from gcpcolor.config import BigGANConfig, ColorizationConfig, ColorizerConfig, ConfigError, EncoderConfig
from gcpcolor.data import LabeledFolderDataset
from gcpcolor.losses import DiscriminatorFeatures
from gcpcolor.model import GCPColorizationModel, Guidance
from gcpcolor.models.biggan_discriminator import BigGANDiscriminator
from gcpcolor.models.biggan_encoder import BigGANEncoder
from gcpcolor.models.biggan_generator import BigGANGenerator
from gcpcolor.models.colorization_net import GatedConv2d
from gcpcolor.pipeline import Colorizer
from gcpcolor.models.lightness_centroids import LightnessCentroidClassifier
from gcpcolor.prior import PRIOR_CONFIG_FILE, load_lightness_centroids, load_prior
from gcpcolor.pseudo_classes import cluster_photos, kmeans, write_labels_csv
from gcpcolor.train_cli import main as train_main
from gcpcolor.training.config import PSEUDO_CLASSES_FILE
from gcpcolor.training.stage0_prior import (
    hinge_discriminator_loss,
    hinge_generator_loss,
    orthogonal_regularization,
)
from test_train import write_photos

TINY_PRIOR = BigGANConfig(g_ch=4, d_ch=8, dim_z=20, shared_dim=8, n_classes=3, resolution=64, attention_resolution=32)


def small_prior_model_config(**colorization) -> ColorizerConfig:
    return ColorizerConfig(
        biggan=TINY_PRIOR,
        encoder=EncoderConfig(e_ch=8, z_dim=20, shared_dim=8, n_classes=3, resolution=64, attention_resolution=32),
        correspondence=ColorizerConfig.tiny().correspondence,
        colorization=ColorizationConfig(base_channels=8, n_res_blocks=1, **colorization),
        deformator=None,
    )


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("resolution, blocks", [(64, 4), (128, 5)])
def test_smaller_biggan_layouts(resolution, blocks):
    config = dataclasses.replace(TINY_PRIOR, resolution=resolution)
    generator = BigGANGenerator(config).eval()
    assert len(generator.blocks) == blocks and config.num_slots == blocks + 1
    z = torch.randn(2, config.dim_z)
    image, features = generator.generate(z, torch.tensor([0, 2]))
    assert image.shape == (2, 3, resolution, resolution)
    assert {r: f.shape[1] for r, f in features.items()} == config.feature_channels
    assert sorted(features) == [resolution // 4, resolution // 2, resolution]
    discriminator = BigGANDiscriminator(config)
    assert discriminator.correspondence_features(image).shape == (
        2, config.correspondence_channels, resolution // 4, resolution // 4,
    )
    assert discriminator(image, torch.tensor([0, 1])).shape == (2,)
    encoder = BigGANEncoder(dataclasses.replace(EncoderConfig(e_ch=8, z_dim=20, shared_dim=8, n_classes=3), resolution=resolution))
    assert encoder.encode(torch.randn(2, 1, resolution, resolution), torch.tensor([0, 1])).shape == (2, 20)


def test_unsupported_resolution_and_mismatched_parts_are_config_errors():
    with pytest.raises(ConfigError, match="resolution must be one of"):
        BigGANConfig(resolution=96)
    with pytest.raises(ConfigError, match="encoder.resolution=256 must equal biggan.resolution=64"):
        ColorizerConfig(biggan=dataclasses.replace(BigGANConfig(), resolution=64), deformator=None)


@pytest.mark.parametrize("guidance", list(Guidance))
def test_small_prior_runs_through_the_working_size_pipeline(guidance):
    torch.manual_seed(0)
    model = GCPColorizationModel(small_prior_model_config(), guidance).eval()
    assert model.reference_channels()[64] == (3 if guidance is Guidance.IMAGE else TINY_PRIOR.feature_channels[16])
    with torch.no_grad():
        output = model(torch.rand(2, 1, 256, 256) * 2 - 1, torch.tensor([0, 2]))
    assert output.ab.shape == (2, 2, 256, 256)
    assert output.exemplar.shape == output.warped_exemplar.shape == (2, 3, 256, 256)
    assert output.ab.abs().max() <= 110


def test_gated_refinement_replaces_the_deformable_conv_and_starts_at_half():
    gated = GatedConv2d(4, 4, cond_channels=3)
    x, cond = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(gated(x, cond), gated.conv(x) * 0.5)
    model = GCPColorizationModel(small_prior_model_config(deformable=False))
    kinds = {type(m).__name__ for m in model.colorization_net.modules()}
    assert "GatedConv2d" in kinds and "ModulatedDeformConv2d" not in kinds


def test_discriminator_features_for_the_losses():
    discriminator = BigGANDiscriminator(TINY_PRIOR)
    features = DiscriminatorFeatures(discriminator, 64)(torch.rand(2, 3, 256, 256))
    assert list(features) == list(DiscriminatorFeatures.LAYERS)
    assert [f.shape[-1] for f in features.values()] == [32, 16, 8]


# --------------------------------------------------------------------------- GAN recipe


def test_diff_augment_translation_and_cutout_geometry():
    image = torch.arange(16.0).view(1, 1, 4, 4).repeat(3, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    shifted = random_translation(image, generator)
    for sample in shifted:
        # A whole-pixel shift keeps a block of the original and fills the rest with zeros.
        kept = sample[sample != 0]
        assert set(kept.tolist()) <= set(range(16))
    cut = random_cutout(torch.ones(8, 3, 16, 16), torch.Generator().manual_seed(1))
    zeroed = (cut[:, 0] == 0).sum(dim=(1, 2))
    assert (zeroed <= 64).all() and (zeroed > 0).all()  # at most an 8x8 square, clipped at borders
    assert (cut[:, 0] == cut[:, 2]).all()  # the same square in every channel


def test_diff_augment_is_differentiable_seeded_and_validated():
    images = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    a = diff_augment(images, "color,translation,cutout", torch.Generator().manual_seed(3))
    b = diff_augment(images, "color,translation,cutout", torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    a.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert parse_policy("") == ()
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_policy("color,blur")


def test_hinge_losses_and_orthogonal_regularization_by_hand():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # relu(1 - real) = [0, 0.5], relu(1 + fake) = [0, 1]
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(0.25 + 0.5)
    assert hinge_generator_loss(fake).item() == pytest.approx(1.0)
    layer = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
    assert orthogonal_regularization(layer).item() == 0.0
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    # W Wᵀ = [[2, 1], [1, 1]]: off-diagonal squares 1 + 1
    assert orthogonal_regularization(layer).item() == pytest.approx(2.0)


def test_kmeans_finds_separated_groups():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + rng.normal(scale=0.3, size=(20, 2)) for c in centres])
    labels, found = kmeans(points, 3, seed=1)
    groups = labels.reshape(3, 20)
    assert all(len(set(group)) == 1 for group in groups) and len(set(groups[:, 0])) == 3
    np.testing.assert_allclose(np.sort(found, axis=0), np.sort(centres, axis=0), atol=0.3)


def test_pseudo_classes_are_a_readable_labels_file(tmp_path):
    folder = write_photos(tmp_path / "photos", [(40, 48)] * 6)
    (folder / "broken.png").write_bytes(b"not an image")
    files = sorted(str(p) for p in folder.glob("*.png"))
    clustering = cluster_photos(files, 2)
    assert clustering.skipped == [str(folder / "broken.png")]
    assert sum(clustering.sizes()) == 6 and min(clustering.sizes()) >= 1
    write_labels_csv(tmp_path / "classes.csv", folder, clustering)
    dataset = LabeledFolderDataset(folder, tmp_path / "classes.csv", image_size=32)
    assert sorted(c for _, c in dataset.samples) == sorted(clustering.labels.tolist())


# --------------------------------------------------------------------------- commands


def _prior_config(tmp_path: Path, data: Path, steps: int) -> Path:
    config = {
        "model": dataclasses.asdict(TINY_PRIOR),
        "data": {"root": str(data), "image_size": 64, "num_workers": 0},
        "conditioning": {"mode": "clusters", "num_clusters": 2},
        "optim": {"batch_size": 4, "max_steps": steps},
        "logging": {"log_every": 1, "image_every": 2, "tensorboard": False, "progress_bar": False},
        "checkpoint": {"output_dir": str(tmp_path / "prior"), "save_every": 2},
        "precision": "fp32",
        "device": "cpu",
    }
    path = tmp_path / "prior.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def trained_prior(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("prior_run")
    data = write_photos(tmp_path / "photos", [(72, 80)] * 10)
    result = CliRunner().invoke(train_main, ["train-prior", "--config", str(_prior_config(tmp_path, data, 4))])
    assert result.exit_code == 0, result.output
    return tmp_path, data


def test_train_prior_exports_a_prior_folder(trained_prior):
    tmp_path, _ = trained_prior
    final = tmp_path / "prior" / "final"
    assert (final / PRIOR_CONFIG_FILE).is_file() and (final / PSEUDO_CLASSES_FILE).is_file()
    centroids = load_lightness_centroids(final)
    assert np.asarray(centroids["centres"]).shape == (2, 36)
    generator, discriminator = load_prior(final)
    assert generator.config.n_classes == 2 and not generator.training
    image, _ = generator.generate(torch.randn(2, 20), torch.tensor([0, 1]))
    assert image.shape == (2, 3, 64, 64) and torch.isfinite(image).all()
    # The EMA generator's batch-norm statistics were re-estimated from its own samples.
    means = [m.stored_mean for m in generator.modules() if hasattr(m, "stored_mean")]
    assert any(mean.abs().sum() > 0 for mean in means)
    with (tmp_path / "prior" / PSEUDO_CLASSES_FILE).open() as handle:
        assert {row["class"] for row in csv.DictReader(handle)} <= {"0", "1"}


def test_train_prior_resumes_exactly(trained_prior):
    tmp_path, data = trained_prior
    run = tmp_path / "resume_run"
    run.mkdir()
    config = _prior_config(run, data, 2)
    assert CliRunner().invoke(train_main, ["train-prior", "--config", str(config)]).exit_code == 0
    result = CliRunner().invoke(
        train_main, ["train-prior", "--config", str(config), "--resume", "--set", "optim.max_steps=4"]
    )
    assert result.exit_code == 0, result.output
    straight = load_file(str(tmp_path / "prior" / "checkpoints" / "step_0000004" / "weights.safetensors"))
    resumed = load_file(str(run / "prior" / "checkpoints" / "step_0000004" / "weights.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_train_prior_rejects_bad_settings(tmp_path):
    config = _prior_config(tmp_path, tmp_path, 2)
    result = CliRunner().invoke(train_main, ["train-prior", "--config", str(config), "--set", "data.image_size=128"])
    assert result.exit_code == 2 and "must equal model.resolution" in result.output
    result = CliRunner().invoke(train_main, ["train-prior", "--config", str(config), "--set", "data.root=" + str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "dataset folder not found" in result.output


def test_stages_one_and_two_on_our_prior_without_vgg(trained_prior):
    tmp_path, data = trained_prior
    prior_dir = tmp_path / "prior" / "final"
    common = [
        "--set", f"data.root={data}", "--set", f"data.labels_file={prior_dir / PSEUDO_CLASSES_FILE}",
        "--set", "data.num_workers=0", "--set", "optim.max_steps=2", "--set", "optim.batch_size=2",
        "--set", "logging.tensorboard=false", "--set", "logging.progress_bar=false", "--set", "device=cpu",
    ]
    model = {"encoder": {"e_ch": 8, "shared_dim": 8}, "correspondence": {"nonlocal_channels": 8},
             "colorization": {"base_channels": 8, "n_res_blocks": 1, "deformable": False}}
    stage1 = tmp_path / "stage1.yaml"
    stage1.write_text(yaml.safe_dump({"model": model, "prior": {"prior_dir": str(prior_dir)}, "precision": "fp32",
                                      "checkpoint": {"output_dir": str(tmp_path / "s1")}}))
    result = CliRunner().invoke(train_main, ["train-encoder", "--config", str(stage1), *common])
    assert result.exit_code == 0, result.output
    stage2 = tmp_path / "stage2.yaml"
    stage2.write_text(yaml.safe_dump({
        "prior": {"pretrained": str(tmp_path / "s1" / "final")}, "precision": "fp32",
        "feature_extractor": "auto", "contextual_max_positions": 256,
        "patchgan": {"base_channels": 4, "n_layers": 2, "num_scales": 1},
        "checkpoint": {"output_dir": str(tmp_path / "s2")},
    }))
    result = CliRunner().invoke(train_main, ["train", "--config", str(stage2), *common])
    assert result.exit_code == 0, result.output
    final = tmp_path / "s2" / "final"
    # No VGG19 file exists in the test home: "auto" fell back to the prior's discriminator.
    assert yaml.safe_load((final / "train_config.yaml").read_text())["feature_extractor"] == "prior_discriminator"
    colorizer = Colorizer.from_pretrained(final)
    assert colorizer.config.biggan.resolution == 64 and colorizer.model.deformator is not None
    # The prior's pseudo-class centroids came along and pick the classes of gray photos.
    assert colorizer.config.class_predictor == "lightness_centroids"
    torch.testing.assert_close(
        colorizer.model.class_predictor.centres,
        torch.tensor(load_lightness_centroids(prior_dir)["centres"], dtype=torch.float32),
    )
    result = colorizer.colorize(np.full((50, 70, 3), 0.5, dtype=np.float32))
    assert result.image.shape == (50, 70, 3)
    assert result.exemplar.shape == (256, 256, 3)


def test_lightness_centroids_pick_the_nearest_layout():
    classifier = LightnessCentroidClassifier(num_classes=2, thumbnail_size=6)
    dark = torch.full((1, 1, 32, 32), -0.8)  # L = 10
    bright = torch.full((1, 1, 32, 32), 0.8)  # L = 90
    top_bright = dark.clone()
    top_bright[..., :16, :] = 0.8
    descriptors = classifier.descriptor(torch.cat([dark, top_bright]))
    classifier.set_centroids({"thumbnail_size": 6, "mean": 0.0, "scale": 1.0, "centres": descriptors.tolist()})
    # L of a uniform gray thumbnail is its own L: the descriptor is exact for flat photos.
    torch.testing.assert_close(descriptors[0], torch.full((36,), 10.0), atol=1e-3, rtol=0)
    assert classifier(torch.cat([dark, bright, top_bright])).argmax(dim=1).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="do not fit"):
        classifier.set_centroids({"thumbnail_size": 6, "mean": 0.0, "scale": 1.0, "centres": [[0.0] * 36]})


def test_half_precision_export_round_trip(tmp_path):
    torch.manual_seed(0)
    colorizer = Colorizer(GCPColorizationModel(small_prior_model_config()))
    colorizer.save_pretrained(tmp_path / "half", dtype=torch.float16)
    stored = load_file(str(tmp_path / "half" / "model.safetensors"))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    reloaded = Colorizer.from_pretrained(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in reloaded.model.parameters())
    photo = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
    a = colorizer.colorize(photo, class_id=1).image
    b = reloaded.colorize(photo, class_id=1).image
    assert np.abs(a - b).max() < 0.05
