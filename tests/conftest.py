from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # for the authors_spec helper module

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_weights_home(tmp_path_factory, monkeypatch):
    """No test may find a user's real weights: point the lookup at an empty folder."""
    monkeypatch.setenv("GCPCOLOR_HOME", str(tmp_path_factory.mktemp("empty_gcpcolor_home")))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture()
def semantic_colorizer():
    """A tiny untrained model of the default model's kind: it predicts a colour distribution
    (temperature 0.38, the configuration's default)."""
    import dataclasses

    from gcpcolor.config import ColorizationConfig, ColorizerConfig
    from gcpcolor.model import GCPColorizationModel
    from gcpcolor.pipeline import Colorizer

    torch.manual_seed(0)
    config = dataclasses.replace(ColorizerConfig.tiny(), colorization=ColorizationConfig(type="semantic", base_channels=8))
    return Colorizer(GCPColorizationModel(config))


@pytest.fixture(scope="session")
def demo_colorizer():
    from gcpcolor.pipeline import Colorizer

    torch.set_num_threads(2)
    return Colorizer.demo(seed=0)
