"""Decoding and encoding of the image files salcurate reads and writes.

Label maps are 8-bit PNGs, palette (VOC style) or grey, whose pixel values are class indices
(0 = background, 255 = ignore).  Saliency maps are 8-bit grey PNGs.  This module is the only
place that knows about file formats; the math modules work on arrays.
"""

from __future__ import annotations

import contextlib
import functools
import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from salcurate.errors import InputError

IGNORE_LABEL = 255

#: The largest image (width x height) an import accepts by default.  Pillow itself warns above
#: about 89 million pixels and refuses above about 179 million; 100 million keeps a 10000 x 10000
#: image and refuses what would take gigabytes of memory to decode and score.
DEFAULT_MAX_PIXELS = 100_000_000

#: The 21 PASCAL VOC class names, background first (the default when no class list is given).
VOC_CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)


def describe_array(array: object) -> str:
    """``"float64 array of shape (8, 8)"``, or the type's name for what is not an array (for errors)."""
    if isinstance(array, np.ndarray):
        return f"{array.dtype} array of shape {array.shape}"
    return type(array).__name__


def check_image(image: object, what: str = "image", *, min_side: int = 1) -> np.ndarray:
    """The one check of an RGB image given to salcurate's functions: ``(H, W, 3)`` uint8, H, W >= min_side."""
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            and min(image.shape[:2]) >= min_side):
        raise InputError(f"expected the {what} as an (H, W, 3) uint8 RGB array (H, W >= {min_side}), got "
                         f"{describe_array(image)}; decode it with salcurate.imageio.decode_image, or convert it "
                         "with numpy (rgb[..., :3].astype(np.uint8))")
    return image


def voc_palette() -> np.ndarray:
    """The PASCAL VOC colour map: ``(256, 3)`` uint8, index 255 is (224, 224, 192)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[index] = (r, g, b)
    return palette


_VOC_PALETTE_FLAT = voc_palette().reshape(-1).tolist()


_PILLOW_CHECK_LOCK = threading.Lock()
_pillow_check_off = 0  # how many callers are inside _own_size_check
_pillow_check_saved: int | None = None


@contextlib.contextmanager
def _own_size_check(max_pixels: int | None) -> Iterator[None]:
    """Within: Pillow's own size check (``Image.MAX_IMAGE_PIXELS``: a DecompressionBombWarning
    above it, an error above twice it, both from ``Image.open``) is off when the caller checks
    the size itself (``max_pixels`` not None); nothing changes otherwise.

    Counted across threads: the first caller in saves Pillow's limit, the last one out restores it.
    """
    global _pillow_check_off, _pillow_check_saved
    if max_pixels is None:
        yield
        return
    with _PILLOW_CHECK_LOCK:
        if _pillow_check_off == 0:
            _pillow_check_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _pillow_check_off += 1
    try:
        yield
    finally:
        with _PILLOW_CHECK_LOCK:
            _pillow_check_off -= 1
            if _pillow_check_off == 0:
                Image.MAX_IMAGE_PIXELS = _pillow_check_saved


def check_pixels(size: tuple[int, int], max_pixels: int | None, name: str, what: str = "image") -> None:
    """Refuse an image of ``size`` ``(width, height)`` above ``max_pixels`` (None or 0: no limit)."""
    width, height = size
    if max_pixels and width * height > max_pixels:
        raise InputError(f"{name}: {what} is {width} x {height} = {width * height:,} pixels, above max_pixels "
                         f"({max_pixels:,}); shrink it, or raise max_pixels (0 = no limit)", param="max_pixels")


def _open(source: Path | bytes, what: str, name: str | None = None, *, max_pixels: int | None = None) -> Image.Image:
    """Open and decode ``source``; with ``max_pixels`` (0: no limit) its size is checked from the
    header before decoding, instead of by Pillow."""
    if name is None:
        name = "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    try:
        with _own_size_check(max_pixels):
            image = Image.open(io.BytesIO(source) if not isinstance(source, Path) else source)
        check_pixels(image.size, max_pixels, name, what)
        image.load()
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{name}: {what} file not found; check the path") from None
    except Exception as exc:  # PIL raises many types for undecodable files
        raise InputError(
            f"{name}: expected a readable {what} image, but it does not decode "
            f"({type(exc).__name__}: {exc}); replace or remove the file"
        ) from None
    return image


def read_label_png(source: Path | bytes, *, max_pixels: int | None = None) -> np.ndarray:
    """Read a label map: ``(H, W)`` uint8 class indices from a palette or 8-bit grey PNG.

    ``max_pixels``: refuse a map larger than that (0: no limit), checked from the header before
    decoding; None leaves the check to Pillow (a warning, or an error for very large files).
    """
    image = _open(source, "label map", max_pixels=max_pixels)
    if image.mode not in ("P", "L"):
        raise InputError(
            f"{source}: expected a palette or 8-bit grey PNG label map, got mode {image.mode}; "
            "save the mask with one class index per pixel (0 = background, 255 = ignore)"
        )
    return np.asarray(image, dtype=np.uint8)


def read_grey_png(source: Path | bytes, what: str = "saliency map", *, name: str | None = None,
                  max_pixels: int | None = None) -> np.ndarray:
    """Read an 8-bit grey map: ``(H, W)`` uint8 (RGB input is converted to luminance); ``max_pixels``
    as in :func:`read_label_png`."""
    image = _open(source, what, name, max_pixels=max_pixels)
    if image.mode in ("I;16", "I", "F"):
        raise InputError(f"{name or source}: expected an 8-bit {what}, got mode {image.mode}; "
                         "save it as 8-bit grey PNG")
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8)


def probe_image(data: bytes, name: str, *, max_pixels: int | None = None) -> tuple[int, int, str]:
    """Check that encoded image bytes decode fully; returns ``(height, width, format)``.

    JPEGs are decoded in draft mode (DCT scaling), which still reads every entropy-coded
    byte, so truncated or corrupt files are caught at a fraction of a full decode's cost.
    ``max_pixels``: refuse an image larger than that (0: no limit), checked from the header
    before decoding; None leaves the check to Pillow.
    """
    try:
        with _own_size_check(max_pixels):
            image = Image.open(io.BytesIO(data))
        width, height = image.size
        check_pixels((width, height), max_pixels, name)
        fmt = image.format or "unknown"
        if fmt == "JPEG":
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        image.load()
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{name}: expected a readable image, but it does not decode ({type(exc).__name__}: {exc}); "
            "replace or remove the file"
        ) from None
    return height, width, fmt


@functools.lru_cache(maxsize=1)
def _torchvision_decoder() -> Callable[[bytes], np.ndarray] | None:
    try:
        import torch
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_image as tv_decode
    except ImportError:  # torchvision is deprecating its decoders; Pillow takes over then
        return None

    def decode(data: bytes) -> np.ndarray:
        tensor = tv_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return tensor.permute(1, 2, 0).contiguous().numpy()

    return decode


def decode_image(data: bytes, *, backend: str = "auto") -> np.ndarray:
    """Decode encoded image bytes to ``(H, W, 3)`` uint8 RGB.

    ``backend="auto"`` decodes JPEG and PNG with torchvision's decoder when it has one (the
    same libjpeg-turbo and libpng as Pillow, same pixels, about 3x faster for a 500x375 JPEG
    because Pillow's RGB-to-array repacking is skipped) and everything else with Pillow;
    ``"pillow"`` always uses Pillow.
    """
    if backend == "auto" and (data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n"):
        decoder = _torchvision_decoder()
        if decoder is not None:
            return decoder(data)
    image = Image.open(io.BytesIO(data))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def decode_grey_half(data: bytes) -> np.ndarray:
    """Decode encoded image bytes to a grey image at half resolution: ``(H // 2, W // 2)`` float32.

    JPEGs are decoded straight to luma at 1/2 scale by libjpeg's DCT scaling (Pillow's draft
    mode), about 5x cheaper than a full RGB decode; other formats are decoded fully, turned
    grey (ITU-R 601 luma, as JPEG's Y) and averaged over 2x2 blocks.  Images smaller than
    8 pixels on a side are returned grey at full size.
    """
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if width < 8 or height < 8:
        return np.asarray(image.convert("L"), dtype=np.float32)
    if image.format == "JPEG":
        image.draft("L", (width // 2, height // 2))
        grey = np.asarray(image.convert("L"), dtype=np.float32)
        if (height // 2 <= grey.shape[0] <= (height + 1) // 2) and (width // 2 <= grey.shape[1] <= (width + 1) // 2):
            return np.ascontiguousarray(grey[: height // 2, : width // 2])
        image = Image.open(io.BytesIO(data))  # the decoder did not halve it: decode in full
    return half_resolution(np.asarray(image.convert("L"), dtype=np.float32))


def half_resolution(grey: np.ndarray) -> np.ndarray:
    """2x2 block mean: ``(H, W)`` float → ``(H // 2, W // 2)`` float32."""
    he, we = grey.shape[0] - grey.shape[0] % 2, grey.shape[1] - grey.shape[1] % 2
    g = grey.astype(np.float32, copy=False)
    half = g[0:he:2, 0:we:2] + g[1:he:2, 0:we:2] + g[0:he:2, 1:we:2] + g[1:he:2, 1:we:2]
    half *= 0.25
    return half


def grey_png_bytes(source: Path | bytes, values: np.ndarray | None = None) -> bytes:
    """The bytes of an 8-bit grey PNG holding ``values``: the source file itself when it already
    is one (bit-exact, no re-encoding), else ``values`` encoded losslessly."""
    data = source.read_bytes() if isinstance(source, Path) else bytes(source)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        with _own_size_check(0), Image.open(io.BytesIO(data)) as image:  # the header only
            if image.mode == "L":
                return data
    if values is None:
        values = read_grey_png(data)
    return encode_grey_png(values)


def encode_grey_png(values: np.ndarray) -> bytes:
    """Encode ``(H, W)`` uint8 as 8-bit grey PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(values, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_label_png(labels: np.ndarray, *, palette: bool = True) -> bytes:
    """Encode ``(H, W)`` uint8 class indices as PNG bytes (VOC palette by default)."""
    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8))
    if palette:
        image.putpalette(_VOC_PALETTE_FLAT)  # an "L" image becomes "P" with its indices kept
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_label_png(path: Path, labels: np.ndarray, *, palette: bool = True) -> None:
    """Write ``(H, W)`` uint8 class indices to ``path`` as PNG (VOC palette by default)."""
    Path(path).write_bytes(encode_label_png(labels, palette=palette))


def write_grey_png(path: Path, values: np.ndarray) -> None:
    """Write ``(H, W)`` uint8 values as an 8-bit grey PNG."""
    Path(path).write_bytes(encode_grey_png(values))
