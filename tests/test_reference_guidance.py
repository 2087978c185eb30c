"""A colour photo of the user's in place of the prior's exemplar (image guidance), and the
stage-2 option that teaches a network to follow its reference (`truth_reference`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gcpcolor.cli import main
from gcpcolor.config import ColorizationConfig, ColorizerConfig, ConfigError
from gcpcolor.model import GCPColorizationModel
from gcpcolor.pipeline import Colorizer

RED, BLUE = (0.85, 0.1, 0.1), (0.1, 0.2, 0.9)


def uniform_photo(rgb, size=(40, 56)) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, dtype=np.float32), (*size, 3)).copy()


@pytest.fixture(scope="module")
def image_guided() -> GCPColorizationModel:
    torch.manual_seed(0)
    return GCPColorizationModel(ColorizerConfig.tiny(), "image").eval()


def test_a_reference_replaces_the_exemplar_of_the_photos_that_take_it(image_guided):
    model = image_guided
    gray = torch.rand(2, 1, 64, 64) * 2 - 1
    classes = torch.tensor([0, 1])
    red = torch.tensor(RED).view(1, 3, 1, 1).expand(2, 3, 40, 30) * 2 - 1
    with torch.no_grad():
        plain = model(gray, classes)
        both = model(gray, classes, z=plain.z, reference=red)
        first_only = model(gray, classes, z=plain.z, reference=red, use_reference=torch.tensor([True, False]))
    red_at_work_size = torch.tensor(RED).view(3, 1, 1) * 2 - 1
    # a uniform photo warps to itself, whatever the matching: every cell's weights sum to one
    for index in range(2):
        torch.testing.assert_close(both.exemplar[index], red_at_work_size.expand_as(both.exemplar[index]))
        torch.testing.assert_close(both.warped_exemplar[index], red_at_work_size.expand_as(both.warped_exemplar[index]),
                                   atol=1e-5, rtol=0)
    torch.testing.assert_close(first_only.exemplar[0], both.exemplar[0])
    torch.testing.assert_close(first_only.exemplar[1], plain.exemplar[1])
    torch.testing.assert_close(first_only.ab[1], plain.ab[1])
    assert not torch.allclose(first_only.ab[0], plain.ab[0])


def test_guidances_that_read_the_generators_features_refuse_a_reference():
    model = GCPColorizationModel(ColorizerConfig.tiny(), "features").eval()
    assert not model.takes_reference
    with pytest.raises(ValueError, match="guidance 'image' only"):
        model(torch.zeros(1, 1, 64, 64), torch.tensor([0]), reference=torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="cannot follow a reference"):
        Colorizer(model).colorize(uniform_photo((0.5, 0.5, 0.5)), reference=uniform_photo(RED))


def test_the_colorizer_passes_the_reference_to_every_photo(image_guided):
    colorizer = Colorizer(image_guided)
    photos = [np.random.default_rng(seed).uniform(size=(48, 40)).astype(np.float32) for seed in range(2)]
    red = colorizer.colorize_batch(photos, 0, reference=uniform_photo(RED))
    blue = colorizer.colorize_batch(photos, 0, reference=Image.fromarray((uniform_photo(BLUE) * 255).astype(np.uint8)))
    for r, b in zip(red, blue):
        assert r.warped_exemplar[..., 0].mean() > 0.8 and r.warped_exemplar[..., 2].mean() < 0.15
        assert b.warped_exemplar[..., 2].mean() > 0.8 and b.warped_exemplar[..., 0].mean() < 0.15
        assert r.image.shape == (48, 40, 3) and not np.array_equal(r.image, b.image)
    single = colorizer.colorize(photos[0], 0, reference=uniform_photo(RED))
    np.testing.assert_allclose(single.image, red[0].image, atol=1)


@pytest.fixture(scope="module")
def image_guided_weights(tmp_path_factory, image_guided):
    directory = tmp_path_factory.mktemp("image_guided")
    Colorizer(image_guided).save_pretrained(directory)
    return directory


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_command_line_reference(tmp_path, image_guided_weights):
    photo = tmp_path / "old.png"
    Image.fromarray((np.random.default_rng(0).uniform(size=(40, 56)) * 255).astype(np.uint8)).save(photo)
    reference = tmp_path / "colours.jpg"
    Image.fromarray((uniform_photo(BLUE, (30, 30)) * 255).astype(np.uint8)).save(reference)
    out = tmp_path / "out"
    result = _run("colorize", photo, "-o", out, "--weights", image_guided_weights, "--reference", reference,
                  "--save-exemplar", "-q")
    assert result.exit_code == 0, result.output
    with Image.open(out / "old_color.png") as written:
        assert written.size == (56, 40)
    with Image.open(out / "old_color_warped.png") as warped:
        mean = np.asarray(warped.convert("RGB"), dtype=np.float64).mean(axis=(0, 1))
    assert mean[2] > 200 and mean[0] < 40  # the blue reference, not the prior's exemplar

    def fails_with(message, *args):
        result = _run("colorize", photo, "-o", tmp_path / "bad", *args)
        # one line says what is wrong (after the demo model's notice, where there is one)
        assert result.exit_code != 0 and message in result.output.strip().splitlines()[-1], result.output
        assert "Traceback" not in result.output

    fails_with("--reference: ", "--weights", image_guided_weights, "--reference", tmp_path / "missing.jpg")
    (tmp_path / "notes.jpg").write_text("not a photo")
    fails_with("--reference: ", "--weights", image_guided_weights, "--reference", tmp_path / "notes.jpg")
    fails_with("does not combine", "--weights", image_guided_weights, "--reference", reference, "--samples", "2")
    fails_with("cannot follow a reference photo", "--demo", "--reference", reference)


# --------------------------------------------------------------------------- training
def test_truth_reference_needs_image_guidance_and_a_share():
    from gcpcolor.training.config import load_train_config

    base = ["prior.random_prior=true"]
    assert load_train_config(2, None, [*base, "guidance=image", "truth_reference=0.5"]).truth_reference == 0.5
    with pytest.raises(ConfigError, match="truth_reference needs guidance: image"):
        load_train_config(2, None, [*base, "truth_reference=0.5"])
    with pytest.raises(ConfigError, match=r"truth_reference must be in \[0, 1\]"):
        load_train_config(2, None, [*base, "guidance=image", "truth_reference=1.5"])


def test_truth_references_are_the_photos_own_colours_mirrored_for_some():
    from gcpcolor.training.stage2_colorization import ColorizationTrainer
    from gcpcolor.training.config import load_train_config

    trainer = ColorizationTrainer.__new__(ColorizationTrainer)  # only the config is read
    trainer.config = load_train_config(2, None, ["prior.random_prior=true", "guidance=image", "truth_reference=1.0"])
    rgb = torch.rand(64, 3, 8, 8)
    torch.manual_seed(0)
    reference, use_reference = trainer._truth_references(rgb)
    assert use_reference.all()
    mirrored = torch.tensor([torch.equal(r, (p.flip(-1) * 2 - 1)) for r, p in zip(reference, rgb)])
    plain = torch.tensor([torch.equal(r, p * 2 - 1) for r, p in zip(reference, rgb)])
    assert (mirrored | plain).all() and 16 < int(mirrored.sum()) < 48
    trainer.config = dataclasses.replace(trainer.config, truth_reference=0.0)
    assert trainer._truth_references(rgb) == (None, None)


def test_a_features_model_fine_tuned_with_image_guidance_keeps_its_trained_layers(tmp_path):
    """Switching a trained semantic model to image guidance restarts only the layer that reads
    the reference; everything else, the frozen backbone included, keeps its weights."""
    from gcpcolor.training.builders import build_model
    from gcpcolor.training.config import load_train_config

    torch.manual_seed(0)
    config = dataclasses.replace(ColorizerConfig.tiny(), colorization=ColorizationConfig(type="semantic", base_channels=8))
    source = GCPColorizationModel(config, "features")
    for parameter in source.colorization_net.parameters():
        parameter.data.add_(0.5)
    Colorizer(source).save_pretrained(tmp_path / "pretrained")
    train_config = load_train_config(2, None, [f"prior.pretrained={tmp_path / 'pretrained'}", "guidance=image",
                                               "truth_reference=0.5"])
    model = build_model(train_config, train_config.guidance, needs_encoder=False)
    assert model.takes_reference
    theirs, mine = source.colorization_net.state_dict(), model.colorization_net.state_dict()
    restarted = {k for k in mine if mine[k].shape != theirs[k].shape}
    assert restarted == {"reference_projection.0.weight"}
    assert all(torch.equal(mine[k], theirs[k]) for k in mine if k not in restarted)


# --------------------------------------------------------------------------- the web page
def test_the_web_page_takes_a_reference_photo_for_models_that_follow_one(image_guided, demo_colorizer):
    import io
    import json
    import threading
    import urllib.error
    import urllib.request

    from gcpcolor.web import make_server

    def png(array) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray((np.asarray(array) * 255).astype(np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()

    def post(url, body):
        return urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=60)

    def serving(colorizer):
        server = make_server(colorizer, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    server, url = serving(Colorizer(image_guided))
    try:
        page = urllib.request.urlopen(url + "/", timeout=10).read().decode()
        assert '<p id="reference-row" >' in page
        with post(url + "/reference", png(uniform_photo(BLUE, (20, 20)))) as answer:
            key = json.loads(answer.read())["reference"]
        photo = png(np.random.default_rng(0).uniform(size=(30, 44)))
        with post(url + f"/colorize?reference={key}", photo) as answer:
            guided = np.asarray(Image.open(io.BytesIO(answer.read())).convert("RGB"))
        with post(url + "/colorize", photo) as answer:
            automatic = np.asarray(Image.open(io.BytesIO(answer.read())).convert("RGB"))
        assert guided.shape == automatic.shape == (30, 44, 3) and not np.array_equal(guided, automatic)
        for path, body, fragment in [("/colorize?reference=0123", photo, "choose it again"),
                                     ("/reference", b"not a photo", "reference")]:
            with pytest.raises(urllib.error.HTTPError) as error:
                post(url + path, body)
            assert error.value.code == 400 and fragment in json.loads(error.value.read())["error"]
    finally:
        server.shutdown()
        server.server_close()

    server, url = serving(demo_colorizer)
    try:
        assert '<p id="reference-row" hidden>' in urllib.request.urlopen(url + "/", timeout=10).read().decode()
        with pytest.raises(urllib.error.HTTPError) as error:
            post(url + "/reference", png(uniform_photo(BLUE, (20, 20))))
        assert error.value.code == 400 and "cannot follow a reference photo" in json.loads(error.value.read())["error"]
    finally:
        server.shutdown()
        server.server_close()
        demo_colorizer.warn_on_color_input = True


def test_a_large_reference_is_shrunk_first_to_the_same_colours(image_guided):
    """A 12 MP scan as the reference: box-reduced before its float copy, it gives the colours
    the direct antialiased resize gives."""
    from gcpcolor.model import resample_square

    colorizer = Colorizer(image_guided)
    rows, columns = np.mgrid[0:3000, 0:4000]
    scan = np.stack([(rows * 255) // 2999, (columns * 255) // 3999, np.full_like(rows, 128)], axis=-1).astype(np.uint8)
    prepared = colorizer.prepare_reference(scan).network_input
    direct = torch.from_numpy(scan.astype(np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1
    expected = resample_square(direct, image_guided.prior_resolution)
    assert prepared.shape == (1, 3, image_guided.prior_resolution, image_guided.prior_resolution)
    torch.testing.assert_close(prepared, expected, atol=0.02, rtol=0)
