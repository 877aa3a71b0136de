"""PNG encoding of the QA figures: Pillow (what the report uses) against the hand-written encoder
it replaced (zlib over "Up"-filtered rows), on the figures of the test data's Source files.

    .venv/bin/python bench/report_png_bench.py [--repeat 30]

Both encoders get the same drawn canvases; the decoded pixels must be identical.  Prints, per
figure, the median (and minimum) CPU time of this thread per figure (``time.thread_time``: what
other jobs on a shared machine do not distort) and the file size of each encoder (level 2).
"""

from __future__ import annotations

import argparse
import io
import statistics
import struct
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from ifu_extract.report import load_object, plot_spectrum, plot_stamps
from ifu_extract.report.cache import PNG_LEVEL, _KEPT, png_bytes

HERE = Path(__file__).resolve().parent
SOURCES = [HERE.parent / "test-data" / f"gx_source_{i}.fits" for i in (1, 3)]


def handwritten_png(rgba: np.ndarray, dpi: float, level: int = PNG_LEVEL) -> bytes:
    """The encoder of ifu-extract 0.1.0 (report.py ``_png_bytes``), kept here for comparison."""
    h, w = rgba.shape[:2]
    raw = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    raw[:, 0] = 2
    rows = raw[:, 1:].reshape(h, w, 3)
    rgb = rgba[..., :3]
    rows[0] = rgb[0]
    np.subtract(rgb[1:], rgb[:-1], out=rows[1:])
    per_metre = int(round(float(dpi) / 0.0254))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"".join([b"\x89PNG\r\n\x1a\n",
                     chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)),
                     chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)),
                     chunk(b"IDAT", zlib.compress(raw.tobytes(), level)),
                     chunk(b"IEND", b"")])


def canvases(tmp: Path) -> dict[str, list[np.ndarray]]:
    """The drawn RGBA canvases of both figures of every Source file."""
    out: dict[str, list[np.ndarray]] = {"stamps": [], "spectrum": []}
    for src in SOURCES:
        obj = load_object(src)
        for kind, func in (("stamps", plot_stamps), ("spectrum", plot_spectrum)):
            func(obj, tmp / f"{kind}.png")
            fig = next(f for k, f in reversed(list(_KEPT.items())) if k[0] == kind).fig
            out[kind].append(np.asarray(fig.canvas.buffer_rgba()).copy())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        figs = canvases(Path(tmp))
    print("| figure | pixels | Pillow CPU ms | hand-written CPU ms | Pillow bytes | hand-written bytes |")
    print("|---|---|---|---|---|---|")
    for kind, arrays in figs.items():
        for rgba in arrays:
            a, b = png_bytes(rgba, 100), handwritten_png(rgba, 100)
            pa = np.asarray(Image.open(io.BytesIO(a)).convert("RGB"))
            pb = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
            assert np.array_equal(pa, pb), "decoded pixels differ"
            times = {}
            for name, enc in (("pil", png_bytes), ("hand", handwritten_png)):
                ts = []
                for _ in range(args.repeat):
                    t0 = time.thread_time()
                    enc(rgba, 100)
                    ts.append(time.thread_time() - t0)
                times[name] = f"{1e3 * statistics.median(ts):.2f} ({1e3 * min(ts):.2f})"
            print(f"| {kind} | {rgba.shape[1]}x{rgba.shape[0]} | {times['pil']} | "
                  f"{times['hand']} | {len(a)} | {len(b)} |")


if __name__ == "__main__":
    main()
