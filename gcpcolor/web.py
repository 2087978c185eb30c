"""A small local web page to try gcpcolor: `gcpcolor serve`, then open http://127.0.0.1:7860.

Standard library only (no web framework to install). The page posts the chosen photo as the raw
request body; options travel in the query string; the answer is the colorized PNG at full size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from .classes import ClassNotFoundError
from .config import MAX_TEMPERATURE
from .image_io import ImageInputError, is_out_of_memory, load_photo, load_pixels, one_line_message, to_8_bit
from .image_writing import encode_image

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 64 * 2**20
#: The largest seed torch.Generator.manual_seed takes (an unsigned 64-bit integer).
MAX_SEED = 2**64 - 1
#: The largest latent noise for diverse results. The prior's latents are N(0, I): far beyond
#: that the results are noise, and sigma = 1000 crashed the whole process (demo model) with a
#: segmentation fault inside torchvision's deform_conv2d: no exception that could be caught.
MAX_SIGMA = 10.0
#: How long the page waits for an answer before saying so: long enough for a big photo on a slow
#: CPU, short enough that a lost answer is noticed.
PAGE_TIMEOUT_SECONDS = 300
#: How long a request thread waits for a client that announced more bytes than it sends.
SOCKET_TIMEOUT_SECONDS = 60
#: Reference photos the server keeps (each a few kilobytes at the prior's resolution), so that a
#: page may colorize several photos after one upload of its reference.
MAX_KEPT_REFERENCES = 16

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gcpcolor</title>
<style>
 body{font-family:system-ui,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;color:#222}
 .row{display:flex;gap:1rem;flex-wrap:wrap} figure{flex:1;min-width:300px;margin:0}
 img{max-width:100%;border:1px solid #ccc} label{margin-right:1rem} #status{color:#a33}
</style></head><body>
<h1>gcpcolor</h1>
<p>Colorize a black-and-white photo with a generative colour prior (GCP-Colorization).__DEMO__</p>
<p><input type="file" id="file" accept="image/*">
<label>class <input id="cls" size="18" placeholder="automatic"></label>
<label>seed <input id="seed" type="number" value="0" style="width:5em"></label>
<label>variation &sigma; <input id="sigma" type="number" value="0" step="0.1" min="0" style="width:5em"></label>
<label id="temperature-row" __TEMPERATURE_HIDDEN__ title="lower: bolder colours; higher: more muted">colour temperature
<input id="temperature" type="number" value="__TEMPERATURE__" step="0.05" min="0.05" max="10" style="width:5em"></label>
<button id="go">Colorize</button></p>
<p id="reference-row" __REFERENCE_HIDDEN__><label>colours from (optional) <input type="file" id="reference" accept="image/*"></label>
a colour photo whose colours the result follows in place of the prior's exemplar</p>
<p id="status"></p>
<div class="row"><figure><img id="before" alt=""><figcaption>input</figcaption></figure>
<figure><img id="after" alt=""><figcaption id="caption">result</figcaption></figure></div>
<p><a id="download" download="colorized.png" hidden>Download the result</a></p>
<script>
const $ = id => document.getElementById(id);
$("file").onchange = () => { if ($("file").files[0]) $("before").src = URL.createObjectURL($("file").files[0]); };
async function errorMessage(response) {
  try { return (await response.json()).error; }
  catch { return "The server answered " + response.status + " " + response.statusText + "."; }
}
$("go").onclick = async () => {
  const file = $("file").files[0];
  if (!file) { $("status").textContent = "Choose a photo first."; return; }
  $("status").textContent = "Colorizing…";
  $("go").disabled = true;
  const query = new URLSearchParams({class: $("cls").value, seed: $("seed").value, sigma: $("sigma").value});
  if (!$("temperature-row").hidden) query.set("temperature", $("temperature").value);
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), __TIMEOUT_SECONDS__ * 1000);
  try {
    const reference = $("reference").files[0];
    if (reference) {
      const sent = await fetch("/reference", {method: "POST", body: reference, signal: controller.signal});
      if (!sent.ok) { $("status").textContent = "Reference photo: " + await errorMessage(sent); return; }
      query.set("reference", (await sent.json()).reference);
    }
    const response = await fetch("/colorize?" + query, {method: "POST", body: file, signal: controller.signal});
    if (!response.ok) { $("status").textContent = await errorMessage(response); return; }
    const url = URL.createObjectURL(await response.blob());
    $("after").src = url; $("download").href = url; $("download").hidden = false;
    $("caption").textContent = "result (class: " + response.headers.get("X-Class-Name") + ")";
    $("status").textContent = response.headers.get("X-Input-Color") === "yes"
      ? "This photo already has colour: it was recoloured from its lightness alone." : "";
  } catch (error) {
    $("status").textContent = error.name === "AbortError"
      ? "No answer from the server after __TIMEOUT_SECONDS__ s; try a smaller photo."
      : "No answer from the server (" + error.message + "); is gcpcolor serve still running?";
  } finally {
    clearTimeout(timer);
    $("go").disabled = false;
  }
};
</script></body></html>
"""


@contextlib.contextmanager
def decoding_temperature(colorizer, temperature: float | None) -> Iterator[None]:
    """The model decodes at `temperature` inside the block (its own outside; None: unchanged)."""
    if temperature is None:
        yield
        return
    own = colorizer.config.colorization.temperature
    colorizer.model.set_temperature(temperature)
    try:
        yield
    finally:
        colorizer.model.set_temperature(own)


class RequestError(Exception):
    """A request we answer with `status` and the message, which the page shows."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def make_handler(colorizer, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    demo_note = " <b>DEMO MODE: untrained weights, colours are meaningless.</b>" if colorizer.is_demo else ""
    page = (PAGE.replace("__DEMO__", demo_note).replace("__TIMEOUT_SECONDS__", str(PAGE_TIMEOUT_SECONDS))
            .replace("__REFERENCE_HIDDEN__", "" if colorizer.takes_reference else "hidden")
            .replace("__TEMPERATURE_HIDDEN__", "" if colorizer.model.predicts_distribution else "hidden")
            .replace("__TEMPERATURE__", f"{colorizer.config.colorization.temperature:g}").encode())
    references: OrderedDict[str, object] = OrderedDict()  # id -> the model's reference input, newest last

    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_SECONDS
        answered = False

        def log_message(self, format: str, *args) -> None:  # route to logging, not stderr spam
            logger.info("%s " + format, self.address_string(), *args)

        def _send(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict | None = None) -> None:
            self.answered = True
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: HTTPStatus, message: str) -> None:
            self._send(status, json.dumps({"error": message}).encode(), "application/json")

        def do_GET(self) -> None:
            if urlparse(self.path).path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            else:
                self._error(HTTPStatus.NOT_FOUND, "not found")

        def do_POST(self) -> None:
            # Every request gets an answer: a dropped connection leaves the page waiting.
            try:
                if urlparse(self.path).path == "/reference":
                    self._reference_request()
                else:
                    self._colorize_request()
                return
            except RequestError as exc:
                status, message = exc.status, str(exc)
            except Exception as exc:  # MemoryError included: the server stays up for the next photo
                logger.exception("colorizing a request failed")
                if is_out_of_memory(exc):
                    status = HTTPStatus.SERVICE_UNAVAILABLE
                    message = "the server ran out of memory colorizing this photo; try a smaller one"
                else:
                    status = HTTPStatus.INTERNAL_SERVER_ERROR
                    message = f"colorization failed: {type(exc).__name__}: {one_line_message(exc)}"
            if self.answered:
                return  # the connection failed while the answer was already on its way
            try:
                self._error(status, message)
            except OSError:
                logger.info("%s left before the answer: %s", self.address_string(), message)

        def _read_upload(self) -> bytes:
            declared = self.headers.get("Content-Length")
            if declared is None:
                raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the photo as the request body with a Content-Length")
            digits = declared.strip()
            if not (digits.isascii() and digits.isdigit()):
                raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length must be a whole number, got {declared!r}")
            significant = digits.lstrip("0") or "0"
            # Compared by length first: int() refuses numbers of thousands of digits.
            if len(significant) > len(str(MAX_UPLOAD_BYTES)) or int(significant) > MAX_UPLOAD_BYTES:
                raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                   f"the photo is larger than the limit of {MAX_UPLOAD_BYTES} bytes")
            length = int(significant)
            if length == 0:
                raise RequestError(HTTPStatus.BAD_REQUEST, "the request has no photo in it")
            try:
                body = self.rfile.read(length)
            except TimeoutError:
                raise RequestError(HTTPStatus.REQUEST_TIMEOUT, "the photo did not arrive in time") from None
            if len(body) < length:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"the photo was cut off after {len(body)} of {length} bytes")
            return body

        def _read_photo(self, body: bytes, what: str, with_file_details: bool = True):
            """(pixels, metadata, alpha) of an uploaded photo (metadata and alpha None without
            `with_file_details`); a one-line 400 for what cannot be read."""
            try:
                # load_pixels reads files: it is the one place that knows every odd photo format.
                with tempfile.TemporaryDirectory() as folder:
                    path = Path(folder) / what
                    path.write_bytes(body)
                    # the download keeps what the command line keeps: DPI, EXIF, XMP, transparency
                    rgb, metadata, alpha = load_photo(path) if with_file_details else (load_pixels(path), None, None)
            except ImageInputError as exc:
                raise RequestError(HTTPStatus.BAD_REQUEST, str(exc).replace(str(path), what)) from None
            return rgb, metadata, alpha

        def _reference_request(self) -> None:
            """Keep a reference photo for later /colorize requests; answers {"reference": id}."""
            if not colorizer.takes_reference:
                raise RequestError(HTTPStatus.BAD_REQUEST, "this model cannot follow a reference photo")
            body = self._read_upload()
            rgb, _, _ = self._read_photo(body, "reference", with_file_details=False)
            key = hashlib.sha256(body).hexdigest()[:32]
            with lock:
                references[key] = colorizer.prepare_reference(rgb)
                references.move_to_end(key)
                while len(references) > MAX_KEPT_REFERENCES:
                    references.popitem(last=False)
            self._send(HTTPStatus.OK, json.dumps({"reference": key}).encode(), "application/json")

        def _colorize_request(self) -> None:
            url = urlparse(self.path)
            if url.path != "/colorize":
                raise RequestError(HTTPStatus.NOT_FOUND, "not found")
            body = self._read_upload()
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            try:
                seed = int(query.get("seed") or 0)
                sigma = float(query.get("sigma") or 0.0)
                temperature = float(query["temperature"]) if query.get("temperature") else None
            except ValueError:
                raise RequestError(HTTPStatus.BAD_REQUEST, "seed must be an integer, sigma and temperature numbers") from None
            if temperature is not None and not colorizer.model.predicts_distribution:
                raise RequestError(HTTPStatus.BAD_REQUEST, "this model predicts colours directly: it has no temperature")
            if temperature is not None and not 0 < temperature <= MAX_TEMPERATURE:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"temperature must be a number above 0 and at most {MAX_TEMPERATURE:g}")
            if not 0 <= seed <= MAX_SEED:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"seed must be 0..{MAX_SEED}")
            if not 0 <= sigma <= MAX_SIGMA:  # also refuses nan, which fails every comparison
                raise RequestError(HTTPStatus.BAD_REQUEST, f"sigma must be a number from 0 to {MAX_SIGMA:g}")
            class_spec = query.get("class") or None
            reference_key = query.get("reference")
            rgb, metadata, alpha = self._read_photo(body, "upload")
            try:
                # one forward at a time: the model (and its temperature) is shared by all request threads
                with lock, decoding_temperature(colorizer, temperature):
                    if reference_key:
                        if reference_key not in references:
                            raise RequestError(HTTPStatus.BAD_REQUEST,
                                               "the reference photo is no longer on the server: choose it again")
                        result = colorizer.colorize(rgb, class_id=class_spec, reference=references[reference_key])
                    elif sigma > 0:
                        result = colorizer.diverse(rgb, samples=1, sigma=sigma, seed=seed,
                                                   class_ids=[class_spec] if class_spec else None)[0]
                    else:
                        result = colorizer.colorize(rgb, class_id=class_spec)
            except ClassNotFoundError as exc:
                raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
            problem = result.problem(rgb)
            if problem is not None:
                raise RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, problem)
            png = encode_image(to_8_bit(result.pixels), "PNG", metadata=metadata, alpha=alpha)
            self._send(HTTPStatus.OK, png, "image/png",
                       {"X-Class-Id": str(result.class_id), "X-Class-Name": result.class_name,
                        "X-Input-Color": "yes" if result.input_is_color else "no"})

    return Handler


def make_server(colorizer, host: str = "127.0.0.1", port: int = 7860) -> ThreadingHTTPServer:
    """The server; it turns the colorizer's ColorInputWarning off, as the page tells the user."""
    colorizer.warn_on_color_input = False
    return ThreadingHTTPServer((host, port), make_handler(colorizer, threading.Lock()))
