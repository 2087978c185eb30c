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
