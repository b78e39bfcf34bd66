"""Draw the crew app's icons (pwa/crew/icons/*.png) with Pillow; the PNGs are committed.

    .venv/bin/python bench/crew_icons.py

A white safe-zone drawing (a road cone) on the app's dark blue, so that the same picture
works as a plain and as a maskable icon.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[1] / "pwa" / "crew" / "icons"
BLUE = (11, 61, 110, 255)
ORANGE = (255, 140, 0, 255)
WHITE = (255, 255, 255, 255)


def draw(size: int) -> Image.Image:
    image = Image.new("RGBA", (size, size), BLUE)
    pen = ImageDraw.Draw(image)
    s = size / 100  # drawn on a 100-unit grid, inside the maskable safe zone (a circle of 80)
    pen.polygon([(50 * s, 22 * s), (68 * s, 72 * s), (32 * s, 72 * s)], fill=ORANGE)
    pen.polygon([(43.5 * s, 40 * s), (56.5 * s, 40 * s), (59.5 * s, 49 * s), (40.5 * s, 49 * s)], fill=WHITE)
    pen.polygon([(37.5 * s, 58 * s), (62.5 * s, 58 * s), (65 * s, 65 * s), (35 * s, 65 * s)], fill=WHITE)
    pen.rounded_rectangle([(26 * s, 72 * s), (74 * s, 78 * s)], radius=2 * s, fill=WHITE)
    return image


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for size in (192, 512):
        draw(size).save(OUT / f"icon-{size}.png", optimize=True)
        print(OUT / f"icon-{size}.png")


if __name__ == "__main__":
    main()
