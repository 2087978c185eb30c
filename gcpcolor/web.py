"""A small local web page to try gcpcolor: `gcpcolor serve`, then open http://127.0.0.1:7860.

Standard library only (no web framework to install). The page posts the chosen photo as the raw
request body; options travel in the query string; the answer is the colorized PNG at full size.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
from PIL import Image

from .classes import ClassNotFoundError
from .image_io import ImageInputError, load_image

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 64 * 2**20

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
<button id="go">Colorize</button></p>
<p id="status"></p>
<div class="row"><figure><img id="before" alt=""><figcaption>input</figcaption></figure>
<figure><img id="after" alt=""><figcaption id="caption">result</figcaption></figure></div>
<p><a id="download" download="colorized.png" hidden>Download the result</a></p>
<script>
const $ = id => document.getElementById(id);
$("file").onchange = () => { if ($("file").files[0]) $("before").src = URL.createObjectURL($("file").files[0]); };
$("go").onclick = async () => {
  const file = $("file").files[0];
  if (!file) { $("status").textContent = "Choose a photo first."; return; }
  $("status").textContent = "Colorizing…";
  const query = new URLSearchParams({class: $("cls").value, seed: $("seed").value, sigma: $("sigma").value});
  const response = await fetch("/colorize?" + query, {method: "POST", body: file});
  if (!response.ok) { $("status").textContent = (await response.json()).error; return; }
  const url = URL.createObjectURL(await response.blob());
  $("after").src = url; $("download").href = url; $("download").hidden = false;
  $("caption").textContent = "result (class: " + response.headers.get("X-Class-Name") + ")";
  $("status").textContent = "";
};
</script></body></html>
"""


def make_handler(colorizer, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    demo_note = " <b>DEMO MODE: untrained weights, colours are meaningless.</b>" if colorizer.is_demo else ""
    page = PAGE.replace("__DEMO__", demo_note).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args) -> None:  # route to logging, not stderr spam
            logger.info("%s " + format, self.address_string(), *args)

        def _send(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict | None = None) -> None:
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
            url = urlparse(self.path)
            if url.path != "/colorize":
                return self._error(HTTPStatus.NOT_FOUND, "not found")
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_UPLOAD_BYTES:
                return self._error(HTTPStatus.BAD_REQUEST, f"send one photo of 1 byte to {MAX_UPLOAD_BYTES} bytes")
            body = self.rfile.read(length)
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            try:
                seed = int(query.get("seed") or 0)
                sigma = float(query.get("sigma") or 0.0)
            except ValueError:
                return self._error(HTTPStatus.BAD_REQUEST, "seed must be an integer and sigma a number")
            class_spec = query.get("class") or None
            try:
                # load_image reads files: it is the one place that knows every odd photo format.
                with tempfile.TemporaryDirectory() as folder:
                    path = Path(folder) / "upload"
                    path.write_bytes(body)
                    rgb = load_image(path)
                with lock:  # one forward at a time: the model is shared by all request threads
                    if sigma > 0:
                        result = colorizer.diverse(rgb, samples=1, sigma=sigma, seed=seed,
                                                   class_ids=[class_spec] if class_spec else None)[0]
                    else:
                        result = colorizer.colorize(rgb, class_id=class_spec)
            except ImageInputError as exc:
                return self._error(HTTPStatus.BAD_REQUEST, str(exc).replace(str(path), "upload"))
            except ClassNotFoundError as exc:
                return self._error(HTTPStatus.BAD_REQUEST, str(exc))
            buffer = io.BytesIO()
            Image.fromarray(np.round(result.image * 255).astype(np.uint8)).save(buffer, format="PNG")
            self._send(HTTPStatus.OK, buffer.getvalue(), "image/png",
                       {"X-Class-Id": str(result.class_id), "X-Class-Name": result.class_name})

    return Handler


def make_server(colorizer, host: str = "127.0.0.1", port: int = 7860) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), make_handler(colorizer, threading.Lock()))
