"""The bytes of FITS files: one card formatter, checksums, a streaming cube writer, sniffing.

The one home of FITS at the byte level (FITS standard 4.0):

- **Cards**: :func:`format_card` / :func:`card_image` format 80-byte cards directly (our cards
  are simple, and astropy's verification costs most of the time of a file of many small HDUs);
  :func:`primary_header_bytes`, :func:`image_hdu_bytes` and :func:`write_fast_fits` build whole
  files from them (the per-object Source files).
- **Checksums**: :func:`ones_sum`, :func:`fold32`, :func:`encode_checksum` and
  :func:`header_checksum` implement the ``CHECKSUM``/``DATASUM`` convention (appendix J) for
  writers that stream data and cannot let astropy sum an in-memory HDU.
- **Streaming cubes**: :class:`StreamingCubeWriter` writes a header-only PRIMARY and float32 cube
  extensions block by block into a file sized up front, summing the data as it goes, and writes
  ``DATASUM``/``CHECKSUM`` when closed (``contsub`` and ``deblend`` cubes).
- **Sniffing**: :func:`file_head` and :func:`file_kind` tell a FITS file from a compressed, TIFF
  or text file by its first bytes, for every reader that accepts more than one kind.

Output *files* (atomic renames, temporary names, provenance) are :mod:`ifu_extract.fitsout`.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from .errors import InputError
from .fitsout import ascii_safe, atomic_path, write_error

__all__ = [
    "FITS_MAGIC",
    "file_head",
    "file_kind",
    "is_fits",
    "is_tiff",
    "compression",
    "decompress_command",
    "format_card",
    "card_image",
    "header_cards",
    "primary_header_bytes",
    "image_hdu_bytes",
    "write_fast_fits",
    "fold32",
    "ones_sum",
    "encode_checksum",
    "header_checksum",
    "cube_extension_header",
    "StreamingCubeWriter",
    "pwrite_all",
]


# ----------------------------------------------------------------------------- sniffing
#: First bytes of every FITS file (``SIMPLE  =``, FITS standard 4.0 section 4.4.1.1).
FITS_MAGIC = b"SIMPLE  ="
#: Leading bytes of the compressed files astropy opens, and the command that decompresses them.
_COMPRESSED = {b"\x1f\x8b": ("gzip", "gunzip -k"), b"BZh": ("bzip2", "bunzip2 -k"),
               b"PK\x03\x04": ("zip", "unzip")}
#: TIFF and BigTIFF, both byte orders.
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def file_head(path, nbytes: int = 9) -> bytes:
    """The first *nbytes* of *path* (fewer for a shorter file); a one-line error if unreadable.

    Raises
    ------
    InputError
        The file cannot be read (permissions, a folder...).
    """
    try:
        with open(path, "rb") as fh:
            return fh.read(nbytes)
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})", "check its permissions") from None


def is_fits(head: bytes) -> bool:
    """Whether a file starting with *head* is an (uncompressed) FITS file."""
    return head.startswith(FITS_MAGIC)


def is_tiff(head: bytes) -> bool:
    """Whether a file starting with *head* is a TIFF (or BigTIFF) file."""
    return head[:4] in _TIFF_MAGIC


def compression(head: bytes) -> str | None:
    """The compression of a file starting with the bytes *head* (``"gzip"``...), or None."""
    for magic, (name, _) in _COMPRESSED.items():
        if head.startswith(magic):
            return name
    return None


def decompress_command(kind: str) -> str:
    """The command that decompresses a file of :func:`compression` *kind* (``"gunzip -k"``)."""
    return next(tool for name, tool in _COMPRESSED.values() if name == kind)


def file_kind(head: bytes) -> str:
    """The kind of a file from its first bytes: ``"fits"``, ``"tiff"``, a :func:`compression`
    name (``"gzip"``, ``"bzip2"``, ``"zip"``) or ``"other"`` (text, or unknown)."""
    if is_fits(head):
        return "fits"
    if is_tiff(head):
        return "tiff"
    return compression(head) or "other"


# ----------------------------------------------------------------------------- cards
# Per-object files hold ~30 small HDUs; building them as astropy HDUs costs ~100 ms per file,
# most of it in card verification.  These cards are ours and simple, so they are formatted
# directly (FITS standard 4.0, fixed format) and the result is read back by astropy and MPDAF
# in the tests.
_BITPIX = {np.dtype(">f4"): -32, np.dtype(">f8"): -64, np.dtype("u1"): 8, np.dtype(">i2"): 16,
           np.dtype(">i4"): 32, np.dtype(">i8"): 64}


def _format_value(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return f"{'T' if value else 'F':>20}"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):>20d}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not np.isfinite(v):
            return _format_value(str(v))  # FITS has no NaN literal
        text = repr(v).upper()
        if "." not in text and "E" not in text:
            text += ".0"
        if len(text) > 20:
            text = f"{v:.15G}"
            if "." not in text and "E" not in text:
                text += ".0"
        return f"{text:>20}"
    text = str(value).replace("'", "''")
    return f"'{text:<8}'".ljust(20)


def format_card(key: str, value=None, comment: str = "") -> bytes:
    """One 80-byte FITS card (``HISTORY``/``COMMENT`` take the text as *value*)."""
    key = key.upper()
    if key in ("HISTORY", "COMMENT", ""):
        card = f"{key:<8}  {str(value or '')}"
    else:
        card = f"{key:<8}= {_format_value(value)}"
        if comment:
            card += f" / {comment}"
    card = card.encode("ascii", "replace")[:80]
    return card.ljust(80)


@functools.lru_cache(maxsize=4096)
def _structural_card(key: str, value, comment: str = "") -> bytes:
    """:func:`format_card` for the few cards every extension repeats (ints and names only)."""
    return format_card(key, value, comment)


# Per-object files repeat most cards (BUNIT, EXTNAME, aperture radii...) file after file.
_format_card_cached = functools.lru_cache(maxsize=16384, typed=True)(format_card)


def _card_bytes(key: str, value=None, comment: str = "") -> bytes:
    """:func:`format_card`, from a cache when the value is hashable."""
    try:
        return _format_card_cached(key, value, comment)
    except TypeError:  # unhashable value
        return format_card(key, value, comment)


def card_image(key: str, value=None, comment: str = "") -> bytes:
    """The 80-byte card(s) of any keyword: :func:`format_card` when it fits, astropy otherwise.

    Long string values (``CONTINUE``), keywords longer than 8 characters (``HIERARCH``) and
    non-ASCII text go through :class:`astropy.io.fits.Card`, so that the result is always a
    valid card; comments too long for the card are cut, as astropy does.
    """
    if isinstance(value, str) and not (value.isascii() and value.isprintable()):
        value = ascii_safe(value)
    if len(key) <= 8 and key.upper() not in ("HISTORY", "COMMENT", "") and _fits_one_card(value):
        return _card_bytes(key, value, comment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        return fits.Card(key, value, comment).image.encode("ascii")


def _fits_one_card(value) -> bool:
    if isinstance(value, str):
        return value.isascii() and len(value.replace("'", "''")) <= 68
    return isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating))


def primary_header_bytes(cards) -> bytes:
    """A data-less primary header: ``SIMPLE BITPIX NAXIS``, *cards*, ``EXTEND``, ``END``, padded.

    Parameters
    ----------
    cards : iterable of (key, value, comment)
        ``HISTORY``/``COMMENT`` cards take their text as the value.
    """
    head = [format_card("SIMPLE", True, "conforms to FITS standard"),
            format_card("BITPIX", 8, "array data type"),
            format_card("NAXIS", 0, "number of array dimensions")]
    head += [format_card(k, v) if k.upper() in ("HISTORY", "COMMENT") else card_image(k, v, c)
             for k, v, c in cards]
    head += [format_card("EXTEND", True), b"END".ljust(80)]
    return _pad(b"".join(head), b" ")


def _pad(raw: bytes, fill: bytes) -> bytes:
    rem = len(raw) % 2880
    return raw if rem == 0 else raw + fill * (2880 - rem)


def image_hdu_bytes(name: str, array: np.ndarray, cards=()) -> bytes:
    """An IMAGE extension (header and data) as bytes.

    Parameters
    ----------
    name : str
        EXTNAME.
    array : numpy.ndarray
        float32, float64, uint8, int16, int32 or int64; written big-endian, numpy axis order
        (the last axis is NAXIS1).
    cards : iterable of (key, value, comment) or bytes
        Further header cards (WCS, BUNIT...); bytes are cards already formatted (80 bytes
        each, e.g. from :func:`card_image`), for cards shared by many extensions.
    """
    arr = np.ascontiguousarray(array)
    kind = arr.dtype
    if kind == np.bool_:
        arr = arr.astype(np.uint8)
    elif kind.kind == "f":
        arr = arr.astype(">f8" if kind.itemsize == 8 else ">f4", copy=False)
    elif kind.kind in "iu" and kind.itemsize > 1:
        arr = arr.astype(f">i{kind.itemsize}", copy=False)
    head = [_structural_card("XTENSION", "IMAGE", "Image extension"),
            _structural_card("BITPIX", _BITPIX[arr.dtype], "array data type"),
            _structural_card("NAXIS", arr.ndim, "number of array dimensions")]
    head += [_structural_card(f"NAXIS{i + 1}", int(n)) for i, n in enumerate(reversed(arr.shape))]
    head += [_structural_card("PCOUNT", 0), _structural_card("GCOUNT", 1),
             _card_bytes("EXTNAME", name, "extension name")]
    head += [c if isinstance(c, bytes) else _card_bytes(*c) for c in cards]
    head.append(b"END".ljust(80))
    return _pad(b"".join(head), b" ") + _pad(arr.tobytes(), b"\0")


def header_cards(header: fits.Header):
    """(key, value, comment) triples of an astropy header, for :func:`image_hdu_bytes`."""
    return [(c.keyword, c.value, c.comment) for c in header.cards]


def write_fast_fits(dest, primary: fits.Header, extensions) -> Path:
    """Write a primary header (no data) and pre-formatted extensions atomically.

    Parameters
    ----------
    dest : str or os.PathLike
    primary : astropy.io.fits.Header or bytes
        Cards of the primary HDU (SIMPLE/BITPIX/NAXIS/EXTEND are added), or the complete
        primary header already formatted (:func:`primary_header_bytes`).
    extensions : iterable of bytes
        From :func:`image_hdu_bytes`.
    """
    if isinstance(primary, (bytes, bytearray)):
        blob = bytes(primary)
    else:
        prim = fits.PrimaryHDU(header=primary)
        prim.header["EXTEND"] = True
        blob = prim.header.tostring().encode("ascii")
    with atomic_path(dest, suffix=".fits") as tmp:
        try:
            with open(tmp, "wb") as fh:
                fh.write(blob)
                for ext in extensions:
                    fh.write(ext)
        except OSError as exc:
            raise write_error(dest, exc, "cannot write", "check free space and permissions") from None
    return Path(dest)


# ----------------------------------------------------------------------------- checksums
# The FITS checksum convention (FITS standard 4.0, appendix J), for writers that stream data
# and cannot let astropy compute CHECKSUM/DATASUM over an in-memory HDU.
_CHECKSUM_EXCLUDE = (0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F, 0x40, 0x5B, 0x5C, 0x5D, 0x5E, 0x5F, 0x60)


def fold32(total: int) -> int:
    """Ones'-complement (end-around carry) reduction of a sum of 32-bit words."""
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def ones_sum(buf, sum32: int = 0) -> int:
    """32-bit ones'-complement sum of *buf* (a multiple of 4 bytes) added to *sum32*."""
    return fold32(int(sum32) + int(np.frombuffer(buf, dtype=">u4").sum(dtype=np.uint64)))


def encode_checksum(value: int) -> str:
    """The 16-character ASCII encoding of a 32-bit checksum (for the CHECKSUM card)."""
    asc = [0] * 16
    for i in range(4):
        byte = (value >> (24 - 8 * i)) & 0xFF
        quotient, remainder = byte // 4 + ord("0"), byte % 4
        ch = [quotient + remainder, quotient, quotient, quotient]
        again = True
        while again:
            again = False
            for bad in _CHECKSUM_EXCLUDE:
                for j in (0, 2):
                    if ch[j] == bad or ch[j + 1] == bad:
                        ch[j] += 1
                        ch[j + 1] -= 1
                        again = True
        for j in range(4):
            asc[4 * j + i] = ch[j]
    return bytes(asc[(i + 15) % 16] for i in range(16)).decode("ascii")


def header_checksum(header: bytes, datasum: int) -> str:
    """The ``CHECKSUM`` value of an HDU whose padded header is *header* (with its CHECKSUM card
    holding 16 zeros) and whose data sum is *datasum*: what makes the HDU sum to -0."""
    return encode_checksum(~ones_sum(header, datasum) & 0xFFFFFFFF)


# ----------------------------------------------------------------------------- streaming cubes
def pwrite_all(fd: int, buf, offset: int) -> None:
    """``os.pwrite`` until every byte of *buf* is written at *offset* of *fd*."""
    view = memoryview(buf).cast("B")
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def cube_extension_header(base: fits.Header, name: str, shape) -> fits.Header:
    """The header of a float32 cube extension *name* of *shape* ``(n_wave, ny, nx)``:
    the structural cards, then *base* (WCS, BUNIT... without structural cards)."""
    nw, ny, nx = shape
    hdr = fits.Header()
    hdr["XTENSION"] = ("IMAGE", "Image extension")
    hdr["BITPIX"] = (-32, "array data type")
    hdr["NAXIS"] = (3, "number of array dimensions")
    hdr["NAXIS1"] = nx
    hdr["NAXIS2"] = ny
    hdr["NAXIS3"] = nw
    hdr["PCOUNT"] = 0
    hdr["GCOUNT"] = 1
    hdr["EXTNAME"] = (name, "extension name")
    hdr.extend(base)
    return hdr


class StreamingCubeWriter:
    """A FITS file of a header-only PRIMARY and float32 cube extensions, filled block by block.

    The headers are written first and the data units reserved (a sparse file); each block is
    then written in place with ``pwrite`` (one call per block of whole planes, one per plane for
    a block of rows), so neither the cube nor the output is ever held in memory.  The data
    checksums are summed as blocks arrive (a ones'-complement sum of 32-bit words does not
    depend on their order, and every float32 is one word), and :meth:`close` writes ``DATASUM``
    and ``CHECKSUM`` into the headers.  Blocks may come from several threads.

    The writer writes to *path* as given: give it the temporary path of
    :func:`~ifu_extract.fitsout.atomic_path` so that a failure leaves no
    partial output.

    Parameters
    ----------
    path : str or os.PathLike
        File to create (replaced if present).
    primary : astropy.io.fits.Header
        Complete primary header (``SIMPLE BITPIX NAXIS=0 EXTEND`` first); modified in place:
        ``CHECKSUM``/``DATASUM`` cards are appended.
    extensions : dict
        ``{name: header}`` in file order, complete headers (:func:`cube_extension_header`);
        modified in place likewise.
    shape : (int, int, int)
        ``(n_wave, ny, nx)`` of every extension (numpy axis order; NAXIS1 is ``nx``).
    """

    def __init__(self, path, primary: fits.Header, extensions: dict, shape):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.names = list(extensions)
        self.headers = [primary, *extensions.values()]
        for hdr in self.headers:
            hdr["CHECKSUM"] = ("0" * 16, "HDU checksum")
            hdr["DATASUM"] = ("0", "data unit checksum")
        nbytes = 4 * math.prod(self.shape)
        padded = -(-nbytes // 2880) * 2880
        self._header_offsets, self._data_offsets = [], {}
        offset = 0
        with open(self.path, "wb") as fh:
            for i, hdr in enumerate(self.headers):
                text = hdr.tostring().encode("ascii")
                self._header_offsets.append(offset)
                fh.write(text)
                offset += len(text)
                if i:
                    self._data_offsets[self.names[i - 1]] = offset
                    offset += padded
                    fh.seek(offset)
            fh.truncate(offset)
        self._sums = dict.fromkeys(self.names, 0)
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_RDWR)

    def write(self, name: str, block: np.ndarray, *, z0: int = 0, y0: int = 0) -> None:
        """Store *block* ``(n_wave, rows, nx)`` at channels ``z0:`` and rows ``y0:`` of *name*.

        A native float32 C-contiguous *block* is byte-swapped in place (FITS is big-endian)
        rather than copied: it must not be used afterwards.
        """
        nw, ny, nx = self.shape
        if block.dtype == np.float32 and block.flags.c_contiguous and block.dtype.isnative:
            big = block.byteswap(inplace=True).view(block.dtype.newbyteorder(">"))
        else:
            big = np.ascontiguousarray(block, dtype=">f4")
        plane = 4 * ny * nx
        start = self._data_offsets[name] + z0 * plane + 4 * y0 * nx
        if big.shape[1] == ny:       # whole planes: one contiguous run of the data unit
            pwrite_all(self._fd, big, start)
        else:
            for z in range(big.shape[0]):
                pwrite_all(self._fd, big[z], start + z * plane)
        partial = int(big.view(">u4").sum(dtype=np.uint64))
        with self._lock:
            self._sums[name] += partial

    def close(self) -> None:
        """Write the checksums and close the file."""
        datasums = [0] + [fold32(total) for total in self._sums.values()]
        try:
            for hdr, offset, datasum in zip(self.headers, self._header_offsets, datasums):
                old_len = len(hdr.tostring())
                hdr["DATASUM"] = str(datasum)
                hdr["CHECKSUM"] = "0" * 16
                hdr["CHECKSUM"] = header_checksum(hdr.tostring().encode("ascii"), datasum)
                text = hdr.tostring().encode("ascii")
                if len(text) != old_len:  # pragma: no cover - fixed-width cards only
                    raise RuntimeError("header size changed while writing checksums")
                pwrite_all(self._fd, text, offset)
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Close the file descriptor without checksums (the caller deletes the file)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
