"""The demo catalog: a dozen made-up titles with posters drawn here by Pillow, so the
repository ships no binary images and every poster is reproducible from its seed."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter, ImageFont


@dataclass(frozen=True)
class DemoVariant:
    label: str
    tags: tuple[str, ...]
    jpeg: bytes


@dataclass(frozen=True)
class DemoTitle:
    id: str
    name: str
    genres: tuple[str, ...]
    variants: tuple[DemoVariant, ...]


TITLES = (
    ("signal-from-europa", "Signal from Europa", ("sci-fi",)),
    ("the-last-orchard", "The Last Orchard", ("drama",)),
    ("midnight-diner-club", "Midnight Diner Club", ("comedy",)),
    ("iron-tide", "Iron Tide", ("action",)),
    ("paper-lanterns", "Paper Lanterns", ("romance", "drama")),
    ("the-quiet-house", "The Quiet House", ("horror",)),
    ("kitchen-kings", "Kitchen Kings", ("reality",)),
    ("orbit-kids", "Orbit Kids", ("kids", "sci-fi")),
    ("cold-case-bay", "Cold Case Bay", ("crime",)),
    ("wild-north", "Wild North", ("documentary",)),
    ("neon-heist", "Neon Heist", ("action", "crime")),
    ("summer-of-tides", "Summer of Tides", ("romance",)),
)

# Each composition is a different kind of poster an editor might upload.
COMPOSITIONS = ("portrait", "group", "landscape", "typographic", "close-up")

PALETTES = {
    "dark": ((12, 14, 30), (70, 20, 60)),
    "bright": ((255, 214, 90), (255, 120, 80)),
    "cool": ((20, 80, 160), (120, 220, 230)),
    "warm": ((150, 40, 20), (250, 170, 60)),
    "green": ((20, 90, 50), (170, 230, 120)),
}

SIZE = (800, 1200)


def _gradient(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    strip = Image.linear_gradient("L").resize(SIZE)
    return Image.composite(Image.new("RGB", SIZE, bottom), Image.new("RGB", SIZE, top), strip)


def _face(draw: ImageDraw.ImageDraw, cx: int, cy: int, r: int, rng: random.Random) -> None:
    skin = rng.choice(((241, 194, 125), (198, 134, 66), (141, 85, 36), (255, 219, 172)))
    draw.ellipse((cx - r, cy - int(r * 1.25), cx + r, cy + int(r * 1.25)), fill=skin)
    eye = max(2, r // 7)
    for dx in (-r // 2.6, r // 2.6):
        draw.ellipse(
            (cx + dx - eye, cy - r // 4 - eye, cx + dx + eye, cy - r // 4 + eye), fill=(30, 20, 20)
        )
    draw.arc(
        (cx - r // 2, cy + r // 6, cx + r // 2, cy + r * 0.75),
        20,
        160,
        fill=(120, 30, 40),
        width=max(2, r // 12),
    )


def poster(name: str, composition: str, palette: str, seed: int) -> Image.Image:
    """One poster: a gradient, a composition of figures or shapes, and the title line."""
    rng = random.Random(seed)
    top, bottom = PALETTES[palette]
    image = _gradient(top, bottom)
    draw = ImageDraw.Draw(image)
    w, h = SIZE
    if composition == "portrait":
        _face(draw, int(w * rng.uniform(0.35, 0.65)), int(h * 0.4), 170, rng)
    elif composition == "close-up":
        _face(draw, w // 2, int(h * 0.45), 330, rng)
    elif composition == "group":
        for i in range(4):
            _face(draw, int(w * (0.18 + 0.21 * i)), int(h * rng.uniform(0.35, 0.5)), 80, rng)
    elif composition == "landscape":
        for i in range(6):
            x = rng.randint(0, w)
            peak = rng.randint(int(h * 0.3), int(h * 0.6))
            shade = tuple(max(0, c - 40 - 15 * i) for c in bottom)
            draw.polygon(((x - 400, h), (x, peak), (x + 400, h)), fill=shade)
        draw.ellipse((w * 0.65, h * 0.1, w * 0.85, h * 0.23), fill=(255, 245, 200))
    else:  # typographic
        for i in range(12):
            y = int(h * 0.08 * i)
            draw.rectangle((0, y, w, y + 18), fill=tuple(min(255, c + 40) for c in top))
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    draw = ImageDraw.Draw(image)
    size = 110 if composition == "typographic" else 64
    font = ImageFont.load_default(size=size)
    y = int(h * (0.35 if composition == "typographic" else 0.8))
    for line in _wrap(name, 14 if composition == "typographic" else 22):
        box = draw.textbbox((0, 0), line, font=font)
        x = (w - (box[2] - box[0])) // 2
        draw.text((x + 3, y + 3), line, font=font, fill=(0, 0, 0))
        draw.text((x, y), line, font=font, fill=(255, 255, 255))
        y += box[3] - box[1] + 18
    return image


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def demo_catalog(seed: int = 7) -> Iterator[DemoTitle]:
    """The demo titles, each with 3 to 5 distinct poster variants (JPEG bytes)."""
    rng = random.Random(seed)
    for index, (title_id, name, genres) in enumerate(TITLES):
        count = 3 + index % 3
        compositions = rng.sample(COMPOSITIONS, count)
        variants = []
        for composition in compositions:
            palette = rng.choice(tuple(PALETTES))
            image = poster(name, composition, palette, rng.randrange(1 << 30))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            tags = (composition, palette)
            variants.append(DemoVariant(f"{composition} ({palette})", tags, buffer.getvalue()))
        yield DemoTitle(title_id, name, genres, tuple(variants))
