"""Synthetic ultrasound-like clips (moving speckle in a sector), so tests need no licensed data."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_clip(path: Path, size: int = 64, frames: int = 24, seed: int = 0, gop: int = 8) -> Path:
    """Write an H.264 mp4 of ``frames`` frames of Rayleigh speckle with a short GOP (cheap random access)."""
    import av

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    half = size / 2
    cone = ((np.abs(xx - half) < yy * 0.6 + 2) & (yy > size // 16)).astype(np.float32)  # a probe's field
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        for i in range(frames):
            band = 0.6 + 0.4 * np.sin((yy + 2 * i + 10 * seed) / 6.0)
            g = np.clip(rng.rayleigh(0.35, (size, size)) * band * cone * 255, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.repeat(g[..., None], 3, 2), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
