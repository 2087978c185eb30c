import json

import pytest

from gcpcolor.config import ColorizerConfig, ConfigError, config_from_dict, config_to_dict


def test_json_round_trip(tmp_path):
    config = ColorizerConfig.tiny()
    path = tmp_path / "config.json"
    config.save(path)
    assert ColorizerConfig.load(path) == config
    assert json.loads(path.read_text())["biggan"]["g_ch"] == 8


def test_paper_defaults():
    config = ColorizerConfig()
    assert config.biggan.g_ch == 96 and config.biggan.z_chunk_size == 17 and config.biggan.used_z_dims == 119
    assert config.biggan.feature_channels == {64: 384, 128: 192, 256: 96}
    assert config.biggan.correspondence_channels == 576
    assert config.correspondence.temperature == 0.01 and config.deformator.dim == 119


def test_unknown_key_is_an_error():
    data = config_to_dict(ColorizerConfig())
    data["biggan"]["gch"] = 3
    with pytest.raises(ConfigError, match="gch"):
        config_from_dict(ColorizerConfig, data)


def test_bad_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ColorizerConfig.load(path)


def test_retired_fields_of_older_files_are_ignored(tmp_path):
    # Configs written before work_size and ab_scale were retired (the bundled model's among them).
    data = config_to_dict(ColorizerConfig.tiny())
    data.update(work_size=256, ab_scale=110.0)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    assert ColorizerConfig.load(path) == ColorizerConfig.tiny()
    assert ColorizerConfig.tiny().work_size == 256
    assert "ab_scale" not in config_to_dict(ColorizerConfig()) and "work_size" not in config_to_dict(ColorizerConfig())


def test_nested_values_lay_over_the_declared_default_and_are_typed():
    from dataclasses import dataclass, field

    from gcpcolor.config import BigGANConfig

    @dataclass(frozen=True)
    class Holder:
        prior: BigGANConfig = field(default_factory=lambda: BigGANConfig(g_ch=8, resolution=64, attention_resolution=32))
        scale: float = 1.0
        sizes: tuple[int, ...] = (1, 2)

    decoded = config_from_dict(Holder, {"prior": {"d_ch": 16}, "scale": "1e-4", "sizes": [3, 4, 5]})
    assert decoded.prior == BigGANConfig(g_ch=8, d_ch=16, resolution=64, attention_resolution=32)
    assert decoded.scale == 1e-4 and decoded.sizes == (3, 4, 5)
    with pytest.raises(ConfigError, match="prior.g_ch: expected int"):
        config_from_dict(Holder, {"prior": {"g_ch": "wide"}})
