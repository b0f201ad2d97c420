"""A pydicom decoding plugin for JPEG 2000 (lossless and lossy) through imagecodecs' OpenJPEG.

Why not pydicom's default (pylibjpeg-openjpeg): it holds the GIL while it decodes, about 30 ms per
512² CT slice, so a node loading a JPEG 2000 series into RAM decoded one slice at a time whatever
`render.load_threads` said, and every viewer's request waited behind each slice. imagecodecs runs
the same OpenJPEG library with the GIL released, so the loader's threads decode slices side by side
(20 slices: 744 ms on one thread, 356 ms on two, against 757 and 732 ms with pylibjpeg-openjpeg).

Only the codec call differs: pydicom still reads the codestream's precision and signedness and
corrects the sign, unused bits and colour space as it does for its own plugins, and this plugin
reports the same facts as pydicom's pylibjpeg plugin (YBR_ICT/YBR_RCT come out as RGB; the sample
size follows the codestream's precision). `tests/render/test_jpeg2000.py` compares both on every
JPEG 2000 file at hand.
"""

from __future__ import annotations

import imagecodecs
import numpy as np
from pydicom.pixels import get_decoder
from pydicom.pixels.common import PhotometricInterpretation
from pydicom.pixels.decoders import JPEG2000Decoder, JPEG2000LosslessDecoder
from pydicom.pixels.decoders.base import DecodeRunner

#: the label the plugin is registered under (`decoding_plugin=` of pydicom's pixel functions)
PLUGIN = "sivr-imagecodecs"
SYNTAXES = (str(JPEG2000LosslessDecoder.UID), str(JPEG2000Decoder.UID))
# OpenJPEG threads per frame in this process (`use_threads`). One in the node: its loader decodes
# frames side by side already (`render.load_threads`), and OpenJPEG's own threads each take stack
# and buffers.
_threads = 1
DECODER_DEPENDENCIES = dict.fromkeys(SYNTAXES, ("imagecodecs",))  # what pydicom names when it is missing


def is_available(uid: str) -> bool:
    """pydicom asks each plugin whether it can decode a syntax."""
    return uid in SYNTAXES and bool(imagecodecs.JPEG2K.available)


def _decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """One frame's codestream decoded, as pydicom's plugins return it (samples interleaved).

    The frame's array is allocated before the codec runs, from the header's dimensions and the
    codestream's precision and signedness: a decompression bomb is refused there with numpy's
    "Unable to allocate" (the size named), not by the codec failing somewhere inside.
    """
    precision = runner.get_option("j2k_precision", runner.bits_stored)
    signed = runner.get_option("j2k_is_signed", runner.pixel_representation)
    itemsize = 1 if precision <= 8 else 2 if precision <= 16 else 4
    samples = runner.samples_per_pixel
    shape = (runner.rows, runner.columns, *((samples,) if samples > 1 else ()))
    out = np.empty(shape, np.dtype(f"{'i' if signed else 'u'}{itemsize}"))
    frame = imagecodecs.jpeg2k_decode(src, out=out, numthreads=_threads)
    if runner.photometric_interpretation in (PhotometricInterpretation.YBR_ICT, PhotometricInterpretation.YBR_RCT):
        runner.set_option("photometric_interpretation", PhotometricInterpretation.RGB)
    runner.set_option("bits_allocated", itemsize * 8)
    return frame.tobytes()


def use_threads(count: int) -> None:
    """Decode each frame on `count` OpenJPEG threads in this process from now on: a decode worker
    checks a file's frames one after another, so a modality sending one image at a time over one
    association would otherwise keep one core busy while the others wait (`decode.codec_threads`)."""
    global _threads
    _threads = count


def register() -> None:
    """Offer the plugin to pydicom's JPEG 2000 decoders (once per process)."""
    for decoder in (JPEG2000LosslessDecoder, JPEG2000Decoder):
        try:
            decoder.add_plugin(PLUGIN, (__name__, "_decode_frame"))
        except ValueError:  # this process registered it already
            continue


def plugin_for(syntax: str) -> str:
    """The `decoding_plugin` to ask pydicom for: this one for JPEG 2000 where imagecodecs has
    OpenJPEG, else "" (pydicom's own choice)."""
    if syntax in SYNTAXES and PLUGIN in get_decoder(syntax).available_plugins:
        return PLUGIN
    return ""


register()
