"""Video decoding, in one place for every backend: the frames a caller chooses, resized as they decode, as uint8.

Why this shape:

* **One API, three backends.** torchcodec (seeks, resizes inside FFmpeg; needs FFmpeg's shared libraries),
  PyAV (bundles its own FFmpeg) and OpenCV (``opencv-python-headless``, also bundling FFmpeg; the only decoder
  on the lent GPU machine). ``decoder="auto"`` takes the first of these that imports *and* decodes a tiny probe
  file, and logs the choice once per process. :func:`read_frames` (the frames ``choose(num_frames)`` asks
  for) and :func:`decode_clip` (every frame) return the same frames whichever backend runs: PyAV and OpenCV
  convert each decoded frame to RGB and resize it at once with an antialiased bilinear filter, which matches
  torchcodec's FFmpeg resize within 0.1 grey level on average on every fixture container (measured by
  ``tests/training/data/test_decode.py``). No backend holds more than one full-size frame at a time.
* **Sparse, sorted, approximate.** A pair needs 1-3 frames of a clip, so torchcodec opens in
  ``seek_mode="approximate"`` (no scan at open) and fetches the sorted, de-duplicated indices in one call;
  PyAV decodes forward and stops after the last index asked for. Most ultrasound clips are a single GOP, where
  a sparse triple costs about 80 % of a whole-clip decode: hence :class:`~.cache.FrameCache`, which stores a
  clip's resized frames on first touch so later epochs read three frames from a memory map.
* **Frame counts.** ``choose`` gets the container's frame count when the header has one (MP4, MOV, AVI, GIF)
  and otherwise the number of frames that really decode. torchcodec's index access is off for a stream that
  starts late: in the MPEG-2 program-stream fixture (first frame at 0.54 s) ``get_frame_at(0)`` returns the
  13th frame and only 202 of 215 frames are reachable. Such streams (no header count, or a non-zero start)
  are decoded sequentially, so all three backends give 215 frames. OpenCV's frame count is an estimate (214
  there), so OpenCV always decodes the whole clip and counts.
* **Grayscale by default.** Ultrasound is grayscale: ``grayscale=True`` keeps one luma channel (PIL's
  ``convert("L")`` weights), a third of the memory and host-to-device traffic; :mod:`.augment` expands it to
  3 identical channels, which matches the original checkpoints. ``grayscale=False`` keeps RGB.
* **Frame videos.** A video shared as frame images (:mod:`.frames`: a frame folder, image rows grouped by a
  video id, a list-of-images row) decodes through the same two functions, with PIL in place of a video backend:
  each chosen image is converted to RGB and resized by the same antialiased filter as a decoded video frame
  (lossless frames of a clip give exactly the clip's frames; images of one video may differ in size and mode; a
  JPEG decodes at the smallest DCT scale not below the target, a fraction of a full decode), so the result is
  the same uint8 ``[N, C, S, S]``. A
  frame that does not read (corrupt, zero bytes, not an image) is skipped, like the damaged tail of a video, and
  reported through ``bad_frames`` (else logged once per process); a sparse read that meets one counts the
  frames that do read and chooses again, as a video with a wrong header count does. A frame video with no
  readable frame is a :class:`DecodeError` naming it.
* **CPU only.** Decoding runs in DataLoader workers (or once, into a frame store). GPU decoding (NVDEC) was not
  kept: published measurements show it slower for sparse small-frame access, and it cannot run in forked workers.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import count
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DataError, DecodeError
from .cache import FrameCache
from .frames import frame_name, is_frame_video

__all__ = [
    "DECODERS",
    "BadFrames",
    "VideoInput",
    "decode_clip",
    "eight_bit",
    "read_frames",
    "resolve_decoder",
    "to_gray",
    "video_name",
]

log = logging.getLogger(__name__)

DECODERS: tuple[str, ...] = ("torchcodec", "pyav", "opencv")
"""The backends, in the order ``decoder="auto"`` tries them."""

VideoInput = str | os.PathLike | bytes | Mapping[str, Any]
"""A path, raw bytes, a ``datasets`` ``Video(decode=False)`` value ``{"path": ..., "bytes": ...}``, or a frame
video ``{"frames": [{"path", "bytes"}, ...], "name": ...}`` (:func:`.frames.frame_video`)."""

BadFrames = list[tuple[str, str]]
"""Where a caller collects the frames skipped while decoding: ``(<video>/<frame>, reason)``."""

_WARNED_FRAMES: set[str] = set()  # per process: bad frames already logged (when no caller collects them)

_PROBE_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
"""A 1x1 white GIF (43 bytes): what ``auto`` decodes to prove that a backend can open files."""


def video_name(video: VideoInput) -> str:
    """A short name for messages and the meta split: the file name, whatever the storage (a frame video's name)."""
    if isinstance(video, Mapping):
        if is_frame_video(video) and video.get("name"):
            return str(video["name"])
        path = video.get("path")
        if path:
            return os.path.basename(str(path))
        data = video.get("bytes") or b""
        return f"<{len(data)} bytes sha1:{hashlib.sha1(data).hexdigest()[:10]}>"
    if isinstance(video, bytes | bytearray):
        return f"<{len(video)} bytes sha1:{hashlib.sha1(video).hexdigest()[:10]}>"
    return os.path.basename(os.fspath(video))


def _source(video: VideoInput) -> str | bytes:
    """The video as a local path or bytes (``{"path", "bytes"}`` values prefer their bytes)."""
    if isinstance(video, Mapping):
        if video.get("bytes"):
            return bytes(video["bytes"])
        video = video.get("path") or ""
    if isinstance(video, bytes | bytearray):
        return bytes(video)
    return os.fspath(video)


def _remote(path: str) -> Any:
    """A binary file object for a remote (``hf://``, ``s3://``) path; fsspec comes with ``datasets``."""
    import fsspec

    return fsspec.open(path, "rb").open()


def to_gray(frames: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``[N, 3, H, W]`` -> uint8 luma ``[N, 1, H, W]``, with PIL's integer ITU-R 601 weights."""
    r, g, b = frames.to(torch.int32).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(1)


def _resize(rgb: np.ndarray, size: int) -> torch.Tensor:
    """One decoded ``H x W x 3`` uint8 frame -> ``[3, size, size]`` uint8 (square, aspect ratio ignored, as the
    reference ``Resize((S, S))``): antialiased bilinear, the filter torchcodec's FFmpeg resize matches.

    uint8 in channels-last layout takes torch's vectorised antialias kernel (about 0.1 ms for a 516 px frame on
    one thread). It runs on one thread: for one small op per frame a thread pool only adds contention (15 ms per
    frame was measured with two threads on a loaded 2-core machine)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    finally:
        torch.set_num_threads(threads)
    return y[0].contiguous()


class _Clip:
    """One open video: frames in decode order, each resized as soon as it is decoded.

    Subclasses give ``_raw`` (decoded frames, full size, stopping quietly where a damaged file ends) and
    ``_rgb`` (one of them as ``H x W x 3`` uint8); torchcodec overrides the two public methods instead.
    """

    header_frames: int | None = None  # a frame count the container states and sparse reads may trust

    def __init__(self, video: VideoInput, size: int) -> None:
        self.name, self.size = video_name(video), size

    def _raw(self) -> Iterator[Any]:
        raise NotImplementedError

    def _rgb(self, raw: Any) -> np.ndarray:
        raise NotImplementedError

    def frames(self) -> Iterator[torch.Tensor]:
        for raw in self._raw():
            yield _resize(self._rgb(raw), self.size)

    def frames_at(self, order: list[int]) -> torch.Tensor | None:
        """Frames at sorted, distinct indices (decoding forward, stopping after the last); None if the clip is
        shorter than its header said."""
        want: dict[int, torch.Tensor] = {}
        for i, raw in enumerate(self._raw()):
            if i in order:
                want[i] = _resize(self._rgb(raw), self.size)
            if i >= order[-1]:
                break
        return torch.stack([want[i] for i in order]) if len(want) == len(order) else None

    def no_frames(self) -> str:
        """Why nothing decoded, for the :class:`DecodeError` of a clip without a single frame."""
        return f"{self.name}: no frame decodes (empty, truncated or not a video)"

    def close(self) -> None:
        pass

    def __enter__(self) -> _Clip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _TorchcodecClip(_Clip):
    def __init__(self, video: VideoInput, size: int) -> None:
        from torchcodec.decoders import VideoDecoder  # optional heavy dependency (FFmpeg's shared libraries)
        from torchcodec.transforms import Resize

        super().__init__(video, size)
        src = _source(video)
        self._open = lambda: VideoDecoder(
            _remote(src) if isinstance(src, str) and "://" in src else src,
            seek_mode="approximate",
            transforms=[Resize((size, size))],
            num_ffmpeg_threads=1,
            dimension_order="NCHW",
        )
        try:
            self._decoder = self._open()
        except Exception as e:  # FFmpeg reports every kind of bad input as RuntimeError/ValueError
            raise DecodeError(f"{self.name}: cannot open as a video ({_first_line(e)})") from e
        meta = self._decoder.metadata
        late = bool(meta.begin_stream_seconds_from_header)  # index access is off for late-starting streams
        self.header_frames = None if late else meta.num_frames_from_header or None

    def frames_at(self, order: list[int]) -> torch.Tensor | None:
        try:
            return self._decoder.get_frames_at(order).data
        except Exception:  # noqa: BLE001 - a bad tail or a wrong header count: the caller decodes it all
            return None

    def frames(self) -> Iterator[torch.Tensor]:
        if self.header_frames:
            try:
                yield from self._decoder.get_frames_in_range(0, self.header_frames).data
                return
            except Exception:  # noqa: BLE001 - a bad tail: decode again, frame by frame, keeping what decodes
                self._decoder = self._open()
        yield from _sequential(self._decoder)


def _sequential(decoder: Any) -> Iterator[torch.Tensor]:
    """Every frame torchcodec decodes, in order, from the start; stops at the end or at damage.

    ``get_next_frame``, torchcodec's core op for sequential decoding (private, hence the guard), is the only
    access that reaches every frame of a late-starting stream; without it, index access (which may skip such a
    stream's head, see the module docstring).
    """
    try:
        from torchcodec import _core

        next_frame, core_decoder = _core.get_next_frame, decoder._decoder
        step: Callable[[], Any] = lambda: next_frame(core_decoder)[0]
    except (ImportError, AttributeError):
        index = count()
        step = lambda: decoder.get_frame_at(next(index)).data
    while True:
        try:
            yield step()
        except Exception:  # noqa: BLE001 - end of stream (IndexError/RuntimeError) or damage: keep what decoded
            return


class _PyAVClip(_Clip):
    def __init__(self, video: VideoInput, size: int) -> None:
        import av  # optional dependency: the fallback that brings its own FFmpeg

        super().__init__(video, size)
        src = _source(video)
        file = io.BytesIO(src) if isinstance(src, bytes) else _remote(src) if "://" in src else src
        try:
            self._container: Any = av.open(file)
            self._stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError, OSError, ValueError) as e:
            raise DecodeError(f"{self.name}: cannot open as a video ({_first_line(e) or 'no video stream'})") from e
        self._stream.codec_context.thread_count = 1  # DataLoader workers are the parallelism
        self.header_frames = self._stream.frames or None

    def _raw(self) -> Iterator[Any]:  # once per clip: read_frames reopens the file to decode it all
        import av

        try:
            yield from self._container.decode(self._stream)
        except (av.FFmpegError, EOFError, ValueError):  # damage: keep what decoded
            return

    def _rgb(self, raw: Any) -> np.ndarray:
        return raw.to_ndarray(format="rgb24")

    def close(self) -> None:
        self._container.close()


class _OpenCVClip(_Clip):
    def __init__(self, video: VideoInput, size: int) -> None:
        import cv2  # optional dependency: the decoder of machines without FFmpeg or PyAV

        super().__init__(video, size)
        self._cv2, self._tmp = cv2, None
        src = _source(video)
        if isinstance(src, bytes) or "://" in src:  # OpenCV reads only files: a private temporary copy
            data = src if isinstance(src, bytes) else _remote(src).read()
            fd, self._tmp = tempfile.mkstemp(prefix="timm_uscl_", suffix=os.path.splitext(self.name)[1])
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            src = self._tmp
        self._cap = cv2.VideoCapture(src, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        if not self._cap.isOpened():
            self.close()
            raise DecodeError(f"{self.name}: cannot open as a video (OpenCV's FFmpeg backend refused it)")

    def _raw(self) -> Iterator[Any]:
        while True:
            ok, bgr = self._cap.read()
            if not ok:
                return
            yield bgr

    def _rgb(self, raw: Any) -> np.ndarray:
        return self._cv2.cvtColor(raw, self._cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        if getattr(self, "_cap", None) is not None:
            self._cap.release()
        if self._tmp is not None:
            os.unlink(self._tmp)
            self._tmp = None


class _FrameClip(_Clip):
    """A frame video: its images read by PIL, one at a time, each resized as a decoded video frame is.

    A frame that does not read is left out of :meth:`frames` and recorded in ``bad``; :meth:`frames_at` gives
    None when one of the chosen frames is bad, so the caller counts the frames that read and chooses again.
    """

    def __init__(self, video: Mapping[str, Any], size: int) -> None:
        super().__init__(video, size)
        self._video = video
        self.header_frames = len(video["frames"]) or None
        self.bad: dict[str, str] = {}

    def _image(self, index: int) -> torch.Tensor | None:
        try:
            return _resize(_image_rgb(self._video["frames"][index], self.size), self.size)
        except Exception as e:  # noqa: BLE001 - PIL reports damage as many types; a bad frame is skipped
            self.bad.setdefault(frame_name(self._video, index), _first_line(e))
            return None

    def frames(self) -> Iterator[torch.Tensor]:
        for index in range(len(self._video["frames"])):
            image = self._image(index)
            if image is not None:
                yield image

    def frames_at(self, order: list[int]) -> torch.Tensor | None:
        images = [self._image(i) for i in order]
        good = [x for x in images if x is not None]
        return torch.stack(good) if len(good) == len(images) else None

    def no_frames(self) -> str:
        count = len(self._video["frames"])
        if not count:
            return f"{self.name}: a frame video without frames; add images or remove it"
        first = next(iter(self.bad.items()), ("", "no image"))
        return f"{self.name}: none of its {count} frames reads as an image ({first[0]}: {first[1]})"


def _image_rgb(frame: Mapping[str, Any], size: int) -> np.ndarray:
    """One frame image as ``H x W x 3`` uint8 RGB; a JPEG decodes at the smallest DCT scale not below ``size``."""
    data, path = frame.get("bytes"), frame.get("path")
    if not data and not path:
        raise DecodeError("a frame with neither bytes nor a path")
    if not data and "://" in str(path):
        with _remote(str(path)) as f:
            data = f.read()
    with Image.open(io.BytesIO(data) if data else str(path)) as im:
        im.draft("RGB", (size, size))  # no-op for formats without reduced decoding
        return np.array(eight_bit(im).convert("RGB"))  # a writable copy: torch refuses PIL's read-only buffer


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def eight_bit(im: Image.Image) -> Image.Image:
    """``im`` with 8-bit channels: 16-bit and 32-bit integer images scaled by 65535 / 255, float images in
    [0, 1] by 255; anything else is a one-line :class:`DecodeError` saying how to save it.

    Why: PIL's ``convert("L"/"RGB")`` clips an ``I;16`` image (a common DICOM export as PNG) at 255, so every
    frame became white, with rc 0 in pretraining and plausible-looking numbers in evaluation (N3). 8-bit modes
    (L, P, RGB, RGBA, LA, 1, ...) are returned as they are; PIL already reduces 48-bit RGB PNGs correctly."""
    if im.mode not in (*_SIXTEEN_BIT, "I", "F"):
        return im
    a = np.asarray(im)
    if im.mode == "F":
        if not np.isfinite(a).all() or a.size and (a.min() < 0 or a.max() > 1):
            raise DecodeError("a floating-point image with values outside [0, 1] (or NaN); save it as 8- or 16-bit")
        return Image.fromarray((a * 255 + 0.5).astype(np.uint8))
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise DecodeError(f"a {im.mode} image with values outside 0-65535; save it as an 8- or 16-bit image")
    return Image.fromarray(((a.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8))


def _first_line(e: BaseException) -> str:
    """The message of a backend's exception, one line, without torchcodec's C++ source location."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return re.sub(r"^\w+, \S+\.cpp:\d+, ", "", line)


class _Backend:
    """A decoder backend: how to open a clip, the package to install, and the probe ``auto`` runs."""

    def __init__(self, name: str, package: str, opener: Callable[[VideoInput, int], _Clip]) -> None:
        self.name, self.package, self.open = name, package, opener

    def probe(self) -> None:
        """Raise unless the backend imports and decodes the probe GIF (a missing FFmpeg shows up only here)."""
        with self.open(_PROBE_GIF, 8) as clip:
            if next(iter(clip.frames()), None) is None:
                raise DecodeError(f"{self.name} decoded no frame of a 1-frame GIF")


_BACKENDS: dict[str, _Backend] = {
    "torchcodec": _Backend("torchcodec", "torchcodec (and FFmpeg's shared libraries)", _TorchcodecClip),
    "pyav": _Backend("pyav", "av", _PyAVClip),
    "opencv": _Backend("opencv", "opencv-python-headless", _OpenCVClip),
}
_CHOSEN: dict[str, str] = {}  # per process: the setting ("auto" or a name) -> the backend that works


def resolve_decoder(decoder: str = "auto") -> str:
    """The backend ``decoder`` means here (``auto``: the first of :data:`DECODERS` that can open files).

    Probed once per process; ``auto`` logs its choice (and why earlier backends were passed over) once.
    """
    if decoder in _CHOSEN:
        return _CHOSEN[decoder]
    if decoder != "auto" and decoder not in _BACKENDS:
        raise DataError(f"decoder={decoder!r}: choose one of auto, {', '.join(DECODERS)}")
    passed: list[str] = []
    for name in DECODERS if decoder == "auto" else (decoder,):
        try:
            _BACKENDS[name].probe()
        except Exception as e:  # noqa: BLE001 - a missing package or FFmpeg library surfaces as many types
            passed.append(f"{name}: {type(e).__name__}: {_first_line(e)}")
            continue
        if decoder == "auto":
            log.info("video decoder: %s%s", name, f" (not usable: {'; '.join(passed)})" if passed else "")
        _CHOSEN[decoder] = name
        return name
    if decoder == "auto":
        raise DataError(
            f"no video decoder can open files ({'; '.join(passed)}); install one: pip install torchcodec (with "
            "FFmpeg's shared libraries), pip install av, or pip install opencv-python-headless"
        )
    raise DataError(
        f"decoder={decoder!r} cannot open files ({passed[0]}); pip install {_BACKENDS[decoder].package}, "
        "or set decoder=auto"
    )


def _check_size(size: int) -> None:
    if size < 1:
        raise DataError(f"size={size}: decoded frames need at least 1 pixel; give the side length in pixels")


def _open(backend: _Backend | None, video: VideoInput, size: int) -> _Clip:
    """The clip: a frame video reads its images with PIL; anything else goes to the video backend."""
    if isinstance(video, Mapping) and is_frame_video(video):
        return _FrameClip(video, size)
    assert backend is not None, "a video file needs a video backend"
    return backend.open(video, size)


def _report(clip: _Clip, bad_frames: BadFrames | None) -> None:
    """Hand the frames ``clip`` skipped to the caller, or log each once per process when nobody collects them."""
    for name, reason in getattr(clip, "bad", {}).items():
        if bad_frames is not None:
            bad_frames.append((name, reason))
        elif name not in _WARNED_FRAMES:
            _WARNED_FRAMES.add(name)
            log.warning("skipping frame %s: %s", name, reason)


def _whole(
    backend: _Backend | None, video: VideoInput, size: int, grayscale: bool, bad_frames: BadFrames | None = None
) -> torch.Tensor:
    """Every frame that decodes, ``[N, C, size, size]``; converted per frame so only resized frames pile up."""
    with _open(backend, video, size) as clip:
        frames = [to_gray(f.unsqueeze(0))[0] if grayscale else f for f in clip.frames()]
    if not frames:
        raise DecodeError(clip.no_frames())
    _report(clip, bad_frames)
    return torch.stack(frames)


def _cached(
    video: VideoInput,
    size: int,
    grayscale: bool,
    cache: FrameCache,
    backend: _Backend | None,
    bad_frames: BadFrames | None = None,
) -> np.ndarray:
    """The whole clip from the cache (a memory map), decoding and storing it on a miss."""
    key = cache.key(video, size, grayscale, backend.name if backend is not None else "pil-frames")
    clip = cache.get(key)
    if clip is None:
        whole = _whole(backend, video, size, grayscale, bad_frames)
        cache.put(key, whole)  # never raises for a full or read-only disk: the frames are used regardless
        return whole.numpy()
    return clip


def decode_clip(
    video: VideoInput,
    size: int,
    *,
    grayscale: bool = True,
    cache: FrameCache | None = None,
    decoder: str = "auto",
    bad_frames: BadFrames | None = None,
) -> torch.Tensor:
    """Every frame of ``video`` resized to ``size`` x ``size``: uint8 ``[N, C, size, size]`` on CPU, C = 1
    (grayscale) or 3. Raises :class:`DecodeError` for anything that does not decode. Frames of a frame video
    that do not read are left out and appended to ``bad_frames`` (logged once when it is None)."""
    _check_size(size)
    backend = _backend(video, decoder)
    if cache is not None:
        return torch.from_numpy(np.array(_cached(video, size, grayscale, cache, backend, bad_frames)))
    return _whole(backend, video, size, grayscale, bad_frames)


def _backend(video: VideoInput, decoder: str) -> _Backend | None:
    """The video backend ``decoder`` means; None for a frame video (PIL reads it: no video decoder is needed)."""
    return None if is_frame_video(video) else _BACKENDS[resolve_decoder(decoder)]


def read_frames(
    video: VideoInput,
    choose: Callable[[int], Sequence[int]],
    size: int,
    *,
    grayscale: bool = True,
    cache: FrameCache | None = None,
    decoder: str = "auto",
    bad_frames: BadFrames | None = None,
) -> torch.Tensor:
    """Decode the frames ``choose(num_frames)`` asks for, resized to ``size`` x ``size``.

    Returns uint8 ``[len(indices), C, size, size]`` in the order of the chosen indices (repeats allowed), with
    C = 1 (grayscale) or 3, on CPU. Raises :class:`DecodeError` for anything that does not decode. A frame
    video whose chosen frames include one that does not read is counted again without its bad frames, which go
    to ``bad_frames`` (logged once when it is None), and ``choose`` is asked again.
    """
    _check_size(size)
    backend = _backend(video, decoder)
    if cache is not None:
        clip = _cached(video, size, grayscale, cache, backend, bad_frames)
        return torch.from_numpy(np.ascontiguousarray(clip[list(choose(len(clip)))]))
    frames = None
    with _open(backend, video, size) as opened:
        if opened.header_frames:
            idx = list(choose(opened.header_frames))
            order = sorted(set(idx))
            got = opened.frames_at(order)
            frames = None if got is None else got[[order.index(i) for i in idx]]
    if frames is None:  # no trusted header count, or fewer frames than it said: count what decodes
        whole = _whole(backend, video, size, grayscale=False, bad_frames=bad_frames)
        frames = whole[list(choose(len(whole)))]
    return to_gray(frames) if grayscale else frames
