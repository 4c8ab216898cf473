"""Draw docs/images/serve_page.jpg: the `defocus serve` page in headless Chromium with eight example photos.

    python docs/images/serve_page.py [--chromium /usr/bin/chromium] [--out docs/images/serve_page.jpg]
"""
from __future__ import annotations

import argparse
import io
import socket
import threading
import time
from pathlib import Path

import uvicorn
from PIL import Image
from playwright.sync_api import sync_playwright

from defocus.serve import ServeSettings, create_app

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ["pcb_and_coin.jpg", "dahlia_flower.jpg", "kodak23_parrots.png", "coffee_cup.png", "dpdd_yellow_pole.png",
          "cat_chelsea.png", "dpdd_magazine_rack.png", "kodak17_living_statue.png"]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "serve_page.jpg"))
    args = ap.parse_args()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server = uvicorn.Server(uvicorn.Config(create_app(ServeSettings(device="cpu")), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.wait_for_function("document.querySelector('#model-info').textContent.includes('model:')",
                                   timeout=120_000)
            page.set_input_files("#file-input", [str(ROOT / "examples" / p) for p in PHOTOS])
            page.wait_for_function(f"document.querySelectorAll('.card[data-state=done]').length === {len(PHOTOS)}",
                                   timeout=300_000)
            png = page.screenshot(full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        while thread.is_alive():
            time.sleep(0.05)
    Image.open(io.BytesIO(png)).convert("RGB").save(args.out, quality=85, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
