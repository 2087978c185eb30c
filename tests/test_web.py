"""The local web page: served HTML, a colorized PNG back at full size, clean errors."""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from gcpcolor.web import make_server


@pytest.fixture()
def server(demo_colorizer):
    server = make_server(demo_colorizer, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _post(url: str, body: bytes):
    return urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=60)


def test_page_and_colorize(server):
    page = urllib.request.urlopen(server + "/", timeout=10).read().decode()
    assert "<input type=\"file\"" in page and "DEMO MODE" in page
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((30, 50)) * 255).astype(np.uint8)).save(buffer, format="JPEG")
    with _post(server + "/colorize?class=goldfish&seed=1&sigma=0.5", buffer.getvalue()) as response:
        assert response.headers["X-Class-Id"] == "1"
        image = Image.open(io.BytesIO(response.read()))
        assert image.size == (50, 30) and image.mode == "RGB"


@pytest.mark.parametrize("query, body, fragment", [
    ("", b"not an image", "not an image"),
    ("?class=zzzzqq", None, "zzzzqq"),
    ("?seed=abc", None, "seed"),
])
def test_errors_are_json_400(server, query, body, fragment):
    if body is None:
        buffer = io.BytesIO()
        Image.new("L", (8, 8)).save(buffer, format="PNG")
        body = buffer.getvalue()
    with pytest.raises(urllib.error.HTTPError) as info:
        _post(server + "/colorize" + query, body)
    assert info.value.code == 400
    assert fragment in json.loads(info.value.read())["error"]
