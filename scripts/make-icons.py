#!/usr/bin/env python3
"""Draws Switchboard's icons (a patch panel: four jacks joined by cables) as PNGs, with no
image library: the PNG is written by hand. Run from the repo root; writes icons/*.png.
The tray's state icons are the same drawing with a coloured status dot."""
import math
import struct
import sys
import zlib
from pathlib import Path

BG = (37, 99, 235, 255)        # blue tile
JACK = (255, 255, 255, 255)
CABLE = (250, 204, 21, 255)    # yellow cables
STATES = {"idle": None, "busy": (34, 197, 94, 255), "failed": (239, 68, 68, 255), "down": (148, 163, 184, 255)}


def png(path: Path, size: int, pixels) -> None:
    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in pixels)
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def draw(size: int, dot=None):
    s = size
    jacks = [(0.3, 0.3), (0.7, 0.3), (0.3, 0.7), (0.7, 0.7)]
    def dist_seg(px, py, ax, ay, bx, by):
        dx, dy = bx - ax, by - ay
        t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
        return math.hypot(px - (ax + t * dx), py - (ay + t * dy))
    rows = []
    for y in range(s):
        row = []
        for x in range(s):
            u, v = (x + 0.5) / s, (y + 0.5) / s
            # rounded tile
            r = 0.18
            cx = min(max(u, r), 1 - r)
            cy = min(max(v, r), 1 - r)
            inside = math.hypot(u - cx, v - cy) <= r
            px = BG if inside else (0, 0, 0, 0)
            if inside:
                if dist_seg(u, v, 0.3, 0.3, 0.7, 0.7) < 0.035 or dist_seg(u, v, 0.7, 0.3, 0.3, 0.7) < 0.035:
                    px = CABLE
                for jx, jy in jacks:
                    if math.hypot(u - jx, v - jy) < 0.09:
                        px = JACK
            if dot and math.hypot(u - 0.82, v - 0.82) < 0.16:
                px = dot
            row.append(px)
        rows.append(row)
    return rows


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "icons")
    out.mkdir(exist_ok=True)
    for name, size in [("32x32.png", 32), ("128x128.png", 128), ("128x128@2x.png", 256), ("icon.png", 512)]:
        png(out / name, size, draw(size))
    for state, dot in STATES.items():
        png(out / f"tray-{state}.png", 64, draw(64, dot))


if __name__ == "__main__":
    main()
