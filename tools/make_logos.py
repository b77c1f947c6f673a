"""Render kernelspec/logo-32x32.png and logo-64x64.png (the loupe: a ring and a handle).

Pure Python (zlib only), so the logos can be rebuilt anywhere: python3 tools/make_logos.py
"""
import math, struct, zlib, pathlib

def render(size):
    s = size / 64.0
    px = []
    for y in range(size):
        row = []
        for x in range(size):
            fx, fy = (x + 0.5) / s, (y + 0.5) / s
            d = math.hypot(fx - 26, fy - 26)
            # distance to the handle segment (39,39)-(58,58)
            t = max(0.0, min(1.0, ((fx - 39) + (fy - 39)) / 38.0))
            hd = math.hypot(fx - (39 + 19 * t), fy - (39 + 19 * t))
            if abs(d - 17) <= 3 or hd <= 4:
                row.append((0x1F, 0x4E, 0x79, 255))
            elif d < 14:
                row.append((0xE8, 0xF1, 0xFB, 255))
            else:
                row.append((0, 0, 0, 0))
        px.append(row)
    raw = b"".join(b"\x00" + bytes(c for p in row for c in p) for row in px)
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))

root = pathlib.Path(__file__).resolve().parent.parent / "kernelspec"
for n in (32, 64):
    (root / f"logo-{n}x{n}.png").write_bytes(render(n))
