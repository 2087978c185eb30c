"""The local web page: served HTML, a colorized PNG back at full size, clean errors."""

from __future__ import annotations

import http.client
import io
import json
import re
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from gcpcolor import web
from gcpcolor.web import make_server


@pytest.fixture()
def server(demo_colorizer):
    server = make_server(demo_colorizer, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    demo_colorizer.warn_on_color_input = True  # make_server turned it off on the shared colorizer


def _post(url: str, body: bytes):
    return urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=60)


def test_page_and_colorize(server):
    page = urllib.request.urlopen(server + "/", timeout=10).read().decode()
    assert "<input type=\"file\"" in page and "DEMO MODE" in page
    assert '<label id="temperature-row" hidden title="lower: bolder' in page  # no temperature for a model that predicts colours directly
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((30, 50)) * 255).astype(np.uint8)).save(buffer, format="JPEG")
    with _post(server + "/colorize?class=goldfish&seed=1&sigma=0.5", buffer.getvalue()) as response:
        assert response.headers["X-Class-Id"] == "1" and response.headers["X-Input-Color"] == "no"
        image = Image.open(io.BytesIO(response.read()))
        assert image.size == (50, 30) and image.mode == "RGB"


@pytest.mark.parametrize("query, body, fragment", [
    ("", b"not an image", "not an image"),
    ("?class=zzzzqq", None, "zzzzqq"),
    ("?seed=abc", None, "seed"),
    ("?class=" + "9" * 5000, None, "out of range"),  # int() refuses so many digits: was a 500
    ("?class=%C2%B2", None, "unknown ImageNet class"),  # '²' is a digit to str.isdigit, not to int()
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


# ----------------------------------------------------------------------------- every request answered


def _raw_request(url: str, head: bytes, body: bytes = b"", timeout: float = 60) -> tuple[int, dict]:
    """Send hand-written request lines (which urllib would refuse to send) and read the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(head + b"\r\n\r\n" + body)
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, json.loads(response.read())


def _png(width: int = 8, height: int = 8, value: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), value).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("length, status, fragment", [
    (b"abc", 400, "whole number"),
    (b"-5", 400, "whole number"),
    (b"\xc2\xb2", 400, "whole number"),  # a superscript two: a digit to str.isdigit, not to int
    (b"9" * 5000, 413, "limit"),
    (None, 411, "Content-Length"),
])
def test_malformed_content_length_is_answered(server, length, status, fragment):
    head = b"POST /colorize HTTP/1.1\r\nHost: localhost"
    if length is not None:
        head += b"\r\nContent-Length: " + length
    answer_status, answer = _raw_request(server, head)
    assert answer_status == status and fragment in answer["error"]


def test_a_client_that_stops_sending_gets_an_answer(demo_colorizer, monkeypatch):
    monkeypatch.setattr(web, "SOCKET_TIMEOUT_SECONDS", 1)
    server = make_server(demo_colorizer, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = _png()
        head = b"POST /colorize HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d" % (len(body) + 100)
        status, answer = _raw_request(f"http://127.0.0.1:{server.server_address[1]}", head, body, timeout=30)
        assert status == 408 and "in time" in answer["error"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("query, fragment", [
    ("?seed=99999999999999999999999&sigma=0.5", "seed"),
    ("?seed=-1&sigma=0.5", "seed"),
    ("?seed=" + "9" * 5000, "seed"),
    ("?sigma=nan", "sigma"),
    ("?sigma=inf", "sigma"),
    ("?sigma=-1", "sigma"),
    ("?sigma=1000", "sigma"),  # a segmentation fault in the model before it was refused
    ("?temperature=0.5", "no temperature"),  # the demo model predicts colours directly
])
def test_out_of_range_options_are_answered_400(server, query, fragment):
    with pytest.raises(urllib.error.HTTPError) as info:
        _post(server + "/colorize" + query, _png())
    assert info.value.code == 400
    assert fragment in json.loads(info.value.read())["error"]


@pytest.mark.parametrize("error, status, fragment", [
    (MemoryError(), 503, "out of memory"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), 503, "out of memory"),
    (ZeroDivisionError("float division by zero"), 500, "ZeroDivisionError: float division by zero"),
], ids=["MemoryError", "torch-oom", "unexpected"])
def test_the_server_survives_a_failing_model(server, demo_colorizer, monkeypatch, error, status, fragment):
    real = demo_colorizer.colorize

    def colorize(rgb, *args, **kwargs):
        if rgb.shape[1] == 33:
            raise error
        return real(rgb, *args, **kwargs)

    monkeypatch.setattr(demo_colorizer, "colorize", colorize)
    with pytest.raises(urllib.error.HTTPError) as info:
        _post(server + "/colorize", _png(width=33))
    assert info.value.code == status
    assert fragment in json.loads(info.value.read())["error"]
    with _post(server + "/colorize", _png()) as response:  # the next photo is served as usual
        assert response.status == 200


def test_an_all_black_result_is_answered_500(server, demo_colorizer, monkeypatch):
    real = demo_colorizer.colorize

    def black(rgb, *args, **kwargs):
        result = real(rgb, *args, **kwargs)
        result.pixels = np.zeros_like(result.pixels)
        return result

    monkeypatch.setattr(demo_colorizer, "colorize", black)
    with pytest.raises(urllib.error.HTTPError) as info:
        _post(server + "/colorize", _png())
    assert info.value.code == 500 and "all black" in json.loads(info.value.read())["error"]


# The page's script runs in node with a stand-in for the browser: the server answers late,
# with an error, or the connection breaks. The page must say so, never "Colorizing…" forever.
PAGE_HARNESS = r"""
const elements = {};
globalThis.document = {getElementById: id => (elements[id] ??= {id, textContent: "", files: [{name: "p.png"}]})};
globalThis.URL = {createObjectURL: () => "blob:result"};
const realSetTimeout = setTimeout;
const delays = [];
globalThis.setTimeout = (callback, ms) => { delays.push(ms); return realSetTimeout(callback, 0); };
const scenario = process.argv[2];
globalThis.fetch = (url, options) => new Promise((resolve, reject) => {
  if (scenario === "silent") {  // never answers: only the page's own timeout can end the wait
    options.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
  } else if (scenario === "error") {
    resolve({ok: false, status: 503, statusText: "Service Unavailable", json: async () => ({error: "out of memory"})});
  } else if (scenario === "not-json") {
    resolve({ok: false, status: 502, statusText: "Bad Gateway", json: async () => { throw new SyntaxError("<html>"); }});
  } else {
    reject(new TypeError("Failed to fetch"));
  }
});
%SCRIPT%
(async () => {
  await document.getElementById("go").onclick();
  console.log(JSON.stringify({status: elements.status.textContent, delays, disabled: elements.go.disabled}));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
@pytest.mark.parametrize("scenario, expected", [
    ("silent", "No answer from the server after 300 s"),
    ("error", "out of memory"),
    ("not-json", "502 Bad Gateway"),
    ("broken", "Failed to fetch"),
])
def test_the_page_never_waits_forever(server, tmp_path, scenario, expected):
    page = urllib.request.urlopen(server + "/", timeout=10).read().decode()
    script = re.search(r"<script>(.*)</script>", page, re.DOTALL).group(1)
    harness = tmp_path / "harness.js"
    harness.write_text(PAGE_HARNESS.replace("%SCRIPT%", script))
    completed = subprocess.run(["node", str(harness), scenario], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    outcome = json.loads(completed.stdout)
    assert expected in outcome["status"] and outcome["disabled"] is False
    assert web.PAGE_TIMEOUT_SECONDS * 1000 in outcome["delays"]


def test_a_colour_photo_is_recoloured_and_the_page_is_told(server):
    x, y = np.meshgrid(np.linspace(0, 1, 40), np.linspace(0, 1, 24))
    buffer = io.BytesIO()
    Image.fromarray((np.stack([x, 1 - x, y], axis=2) * 200 + 30).astype(np.uint8)).save(buffer, format="PNG")
    with _post(server + "/colorize", buffer.getvalue()) as response:
        assert response.status == 200 and response.headers["X-Input-Color"] == "yes"
    page = urllib.request.urlopen(server + "/", timeout=10).read().decode()
    assert "X-Input-Color" in page and "already has colour" in page


def test_the_download_keeps_transparency_and_resolution(server):
    """The page's PNG carries what `gcpcolor colorize` carries: the alpha of a cut-out and the DPI."""
    gray = (np.random.default_rng(4).random((20, 30)) * 255).astype(np.uint8)
    alpha = np.zeros((20, 30), np.uint8)
    alpha[5:15, 8:22] = 255
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([gray, gray, gray, alpha])).save(buffer, format="PNG", dpi=(300, 300))
    with _post(server + "/colorize", buffer.getvalue()) as response:
        image = Image.open(io.BytesIO(response.read()))
        assert image.mode == "RGBA" and image.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        np.testing.assert_array_equal(np.asarray(image.getchannel("A")), alpha)


def test_a_semantic_models_page_sets_the_colour_temperature_per_request(semantic_colorizer):
    from gcpcolor.metrics import colorfulness

    colorizer = semantic_colorizer
    server = make_server(colorizer, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        page = urllib.request.urlopen(url + "/", timeout=10).read().decode()
        assert re.search(r'<label id="temperature-row"  title="lower: bolder[^>]*>colour temperature\s*<input id="temperature"[^>]*value="0.38"', page)
        buffer = io.BytesIO()
        Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(buffer, format="PNG")
        vividness = {}
        for temperature in ("0.05", "5"):
            with _post(f"{url}/colorize?class=1&temperature={temperature}", buffer.getvalue()) as response:
                result = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"), dtype=np.float64)
            vividness[temperature] = colorfulness(result)
            assert colorizer.config.colorization.temperature == 0.38  # the model's own again after the request
        assert vividness["0.05"] > vividness["5"]
        for bad in ("nan", "0", "11", "warm"):
            with pytest.raises(urllib.error.HTTPError) as info:
                _post(f"{url}/colorize?temperature={bad}", _png())
            assert info.value.code == 400 and "temperature" in json.loads(info.value.read())["error"]
    finally:
        server.shutdown()
        server.server_close()
