"""A compact, versioned binary form of accumulator states (``to_state`` trees), exact both ways.

Every accumulator's ``to_state`` is a tree of dicts, lists, strings, ints, floats, booleans and
``None``: what JSON holds. ``pack_state`` writes the same tree in fewer bytes and ``unpack_state``
reads back exactly what ``orjson.loads(orjson.dumps(state))`` would give (tuples come back as
lists), so a state restored from either form rebuilds the same accumulator and yields the same
metrics, to the last bit. What makes it small are the arrays, which dominate window states
(score histograms, sketch buckets, calibration sums):

- a list of two or more ints is one array in one of three layouts: *sparse* when it is mostly
  zeros (a dense histogram, a sketch's buckets: the gaps between non-zero positions, then the
  non-zero values), else *delta* when it never decreases (the indexes of a sparse histogram:
  the steps are small), else *plain* (the minimum, then each value's excess over it, so counts
  of at least one become mostly zeros). Each stream of non-negative values is written at the
  narrowest width (1, 2, 4 or 8 bytes), or as a Rice code where that is shorter even after
  deflate (histogram gaps take ~4-5 bits, not 8);
- a list of two or more floats is float64 bytes, or float32 when every value survives the trip
  through float32 bit for bit (never an approximation);
- a float with an integral value (a timestamp in whole seconds, ``0.0``) is a varint.

The result is meant to be deflated by the caller (the arrays' small values compress well).
Restoring executes nothing: the decoder reads tags and lengths and builds plain data, and refuses
anything it does not know (an unknown format version, a truncated or malformed input) with a
``ValueError``.

Examples
--------
>>> import orjson
>>> state = {"offset": 12, "counts": [0] * 300 + [1, 0, 0, 3, 0, 0, 0, 0, 2], "mean": 0.25, "t": 1700000040.0}
>>> packed = pack_state(state)
>>> unpack_state(packed) == state, len(packed), len(orjson.dumps(state))
(True, 57, 671)
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import numpy as np

__all__ = ["FORMAT_VERSION", "pack_state", "unpack_state"]

#: The first byte of every packed state; a reader refuses versions it does not know.
FORMAT_VERSION = 1

# Tags (one byte before each value).
_NONE, _FALSE, _TRUE, _INT, _FLOAT, _FLOAT_INT, _STR, _LIST, _DICT = range(9)
_INTS_PLAIN, _INTS_DELTA, _INTS_SPARSE, _FLOATS8, _FLOATS4 = range(9, 14)
_WIDTHS = (np.dtype("<u1"), np.dtype("<u2"), np.dtype("<u4"), np.dtype("<u8"))
_MAX_DEPTH = 64  # deeper than any accumulator state: a hostile input cannot exhaust the stack
_F64 = struct.Struct("<d")


def pack_state(state: Any) -> bytes:
    """``state`` (JSON-like data) in the packed form, led by :data:`FORMAT_VERSION`."""
    out = bytearray([FORMAT_VERSION])
    _pack(state, out)
    return bytes(out)


def unpack_state(data: bytes) -> Any:
    """The data ``pack_state`` packed; ``ValueError`` if ``data`` is not a packed state we can read."""
    if not data:
        raise ValueError("packed state: empty input")
    if data[0] != FORMAT_VERSION:
        raise ValueError(f"packed state: format version {data[0]} is not one this Driftline reads "
                         f"(it reads {FORMAT_VERSION}); was it written by a newer version?")
    try:
        value, pos = _unpack(memoryview(data), 1, 0)
    except (IndexError, struct.error, UnicodeDecodeError, OverflowError) as e:
        raise ValueError(f"packed state: malformed ({e})") from None
    if pos != len(data):
        raise ValueError(f"packed state: {len(data) - pos} trailing bytes")
    return value


# ---- writing ------------------------------------------------------------------------------------
def _varint(n: int, out: bytearray) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zigzag(n: int) -> int:
    return 2 * n if n >= 0 else -2 * n - 1


def _pack(v: Any, out: bytearray) -> None:
    t = type(v)
    if v is None:
        out.append(_NONE)
    elif t is bool:
        out.append(_TRUE if v else _FALSE)
    elif t is int:
        out.append(_INT)
        _varint(_zigzag(v), out)
    elif t is float:
        if v.is_integer() and abs(v) < 2**53 and math.copysign(1.0, v) * (v or 1.0) > 0:  # not -0.0
            out.append(_FLOAT_INT)  # exact: an integral float below 2**53 is that integer
            _varint(_zigzag(int(v)), out)
        else:
            out.append(_FLOAT)
            out += _F64.pack(v)
    elif t is str:
        raw = v.encode("utf-8")
        out.append(_STR)
        _varint(len(raw), out)
        out += raw
    elif t is dict:
        out.append(_DICT)
        _varint(len(v), out)
        for k, item in v.items():
            if type(k) is not str:
                raise TypeError(f"pack_state: dict keys must be str, got {type(k).__name__}")
            raw = k.encode("utf-8")
            _varint(len(raw), out)
            out += raw
            _pack(item, out)
    elif t is list or t is tuple:
        if len(v) < 2 or not _pack_array(v, out):
            out.append(_LIST)
            _varint(len(v), out)
            for item in v:
                _pack(item, out)
    else:
        raise TypeError(f"pack_state: cannot pack a {t.__name__} (states are JSON-like data)")


def _pack_array(v: list[Any] | tuple[Any, ...], out: bytearray) -> bool:
    """Write ``v`` as an int or float array if it is one; False if it is a mixed list."""
    kinds = set(map(type, v))  # in C: a dense histogram is thousands of values
    if kinds == {int}:
        try:
            a = np.asarray(v, dtype=np.int64)
        except OverflowError:  # beyond int64: one value at a time
            return False
        _pack_ints(a, out)
        return True
    if kinds == {float}:
        wide = np.asarray(v, dtype="<f8")
        with np.errstate(over="ignore"):  # a value float32 cannot hold stays float64
            narrow = wide.astype("<f4")
        exact = np.array_equal(narrow.astype(np.float64).view(np.uint64), wide.view(np.uint64))  # bit for bit
        out.append(_FLOATS4 if exact else _FLOATS8)
        _varint(len(v), out)
        out += narrow.tobytes() if exact else wide.tobytes()
        return True
    return False


def _pack_ints(a: np.ndarray, out: bytearray) -> None:
    nonzero = np.flatnonzero(a)
    diffs = np.diff(a)
    if 2 * nonzero.size < a.size:  # mostly zeros: gaps between the non-zero positions, then their values
        out.append(_INTS_SPARSE)
        _varint(a.size, out)
        _varint(nonzero.size, out)
        if nonzero.size:
            _uints(np.diff(nonzero, prepend=-1) - 1, out)
            _based(a[nonzero], out)
    elif int(diffs.min()) >= 0:  # sorted (the bins of a sparse histogram): small steps
        out.append(_INTS_DELTA)
        _varint(a.size, out)
        _varint(_zigzag(int(a[0])), out)
        _uints(diffs, out)
    else:
        out.append(_INTS_PLAIN)
        _varint(a.size, out)
        _based(a, out)


def _based(a: np.ndarray, out: bytearray) -> None:
    """Values as their minimum and the (non-negative) excess over it: counts of at least one
    become mostly zeros. Wrapping uint64 arithmetic keeps it exact over all of int64."""
    low = int(a.min())
    _varint(_zigzag(low), out)
    _uints(a.astype(np.uint64) - np.uint64(low & 0xFFFFFFFFFFFFFFFF), out)


def _zz(a: np.ndarray) -> np.ndarray:
    """Zigzag int64 -> uint64 (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...), exact over all of int64."""
    return (a.astype(np.uint64) << np.uint64(1)) ^ (a >> 63).astype(np.uint64)


def _uints(a: np.ndarray, out: bytearray) -> None:
    """``a``'s non-negative values, their count known to the reader: a width code 0-3 and the
    values at 1, 2, 4 or 8 bytes each, or code 4 and a Rice code when that is shorter (small,
    geometric-looking values such as the gaps of a sparse histogram take ~4-5 bits, not 8)."""
    a = a.astype(np.uint64, copy=False)
    top = int(a.max()) if a.size else 0
    code = 0 if top < 2**8 else 1 if top < 2**16 else 2 if top < 2**32 else 3
    fixed = a.astype(_WIDTHS[code]).tobytes()
    k, size = _rice_size(a, top)
    # The caller deflates the whole state: Rice only where it beats the fixed width deflated too.
    if size < len(fixed) and size < len(zlib.compress(fixed, 6)) - 6:
        out.append(4)
        out += _rice(a, k)
        return
    out.append(code)
    out += fixed


def _rice_size(a: np.ndarray, top: int) -> tuple[int, int]:
    """The Rice parameter for ``a`` and the code's size in bytes (huge when Rice does not fit)."""
    if a.size < 32:  # too short to matter: not worth the time
        return 0, 1 << 62
    mean = float(a.mean())
    k = int(np.log2(mean * 0.69)) if mean >= 2 else 0
    if top >> k > 4096:  # an outlier would take kilobytes of unary
        return k, 1 << 62
    unary_bits = int((a >> np.uint64(k)).sum()) + a.size
    return k, (unary_bits + 7) // 8 + (a.size * k + 7) // 8 + 3


def _rice(a: np.ndarray, k: int) -> bytes:
    """Rice code of ``a``: ``k`` low bits stored plainly, the rest in unary. Two bit streams,
    so that both directions are vectorised: the unary parts (``q`` ones and a zero per value),
    then the ``k``-bit remainders; the first is led by its length."""
    q = (a >> np.uint64(k)).astype(np.int64)
    ends = np.cumsum(q + 1) - 1
    bits = np.ones(int(ends[-1]) + 1, dtype=np.uint8)
    bits[ends] = 0
    unary = np.packbits(bits).tobytes()
    head = bytearray([k])
    _varint(len(unary), head)
    if not k:
        return bytes(head) + unary
    shifts = np.arange(k - 1, -1, -1, dtype=np.uint64)
    rem = ((a[:, None] >> shifts) & np.uint64(1)).astype(np.uint8).ravel()
    return bytes(head) + unary + np.packbits(rem).tobytes()


# ---- reading ------------------------------------------------------------------------------------
def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7
        if shift > 70:
            raise ValueError("packed state: varint too long")


def _unzigzag(z: int) -> int:
    return z >> 1 if not z & 1 else -((z + 1) >> 1)


def _read_uints(buf: memoryview, pos: int, n: int) -> tuple[np.ndarray, int]:
    code = buf[pos]
    if code == 4:
        return _read_rice(buf, pos + 1, n)
    if code > 3:
        raise ValueError(f"packed state: width code {code}")
    end = pos + 1 + n * _WIDTHS[code].itemsize
    if end > len(buf):
        raise IndexError("truncated array")
    return np.frombuffer(buf[pos + 1:end], dtype=_WIDTHS[code]).astype(np.uint64), end


def _read_rice(buf: memoryview, pos: int, n: int) -> tuple[np.ndarray, int]:
    k = buf[pos]
    if k > 63:
        raise ValueError(f"packed state: Rice parameter {k}")
    size, pos = _read_varint(buf, pos + 1)
    rem_size = (n * k + 7) // 8
    if pos + size + rem_size > len(buf):
        raise IndexError("truncated Rice code")
    bits = np.unpackbits(np.frombuffer(buf[pos:pos + size], dtype=np.uint8))
    ends = np.flatnonzero(bits == 0)[:n]
    if ends.size < n:
        raise ValueError("packed state: Rice code ends early")
    values = (np.diff(ends, prepend=-1) - 1).astype(np.uint64) << np.uint64(k)
    pos += size
    if k:
        rem = np.unpackbits(np.frombuffer(buf[pos:pos + rem_size], dtype=np.uint8))[:n * k].reshape(n, k)
        values |= rem.astype(np.uint64) @ (np.uint64(1) << np.arange(k - 1, -1, -1, dtype=np.uint64))
    return values, pos + rem_size


def _unzz(z: np.ndarray) -> np.ndarray:
    return ((z >> np.uint64(1)) ^ (np.uint64(0) - (z & np.uint64(1)))).astype(np.int64)


def _unpack(buf: memoryview, pos: int, depth: int) -> tuple[Any, int]:
    if depth > _MAX_DEPTH:
        raise ValueError("packed state: nested too deep")
    tag = buf[pos]
    pos += 1
    if tag == _NONE:
        return None, pos
    if tag in (_FALSE, _TRUE):
        return tag == _TRUE, pos
    if tag in (_INT, _FLOAT_INT):
        z, pos = _read_varint(buf, pos)
        return (_unzigzag(z) if tag == _INT else float(_unzigzag(z))), pos
    if tag == _FLOAT:
        return _F64.unpack_from(buf, pos)[0], pos + 8
    if tag == _STR:
        n, pos = _read_varint(buf, pos)
        return _text(buf, pos, n), pos + n
    if tag == _DICT:
        n, pos = _read_varint(buf, pos)
        d: dict[str, Any] = {}
        for _ in range(n):
            k, pos = _read_varint(buf, pos)
            key = _text(buf, pos, k)
            d[key], pos = _unpack(buf, pos + k, depth + 1)
        return d, pos
    if tag == _LIST:
        n, pos = _read_varint(buf, pos)
        items = []
        for _ in range(n):
            item, pos = _unpack(buf, pos, depth + 1)
            items.append(item)
        return items, pos
    if tag in (_FLOATS8, _FLOATS4):
        n, pos = _read_varint(buf, pos)
        dtype = np.dtype("<f8") if tag == _FLOATS8 else np.dtype("<f4")
        end = pos + n * dtype.itemsize
        if end > len(buf):
            raise IndexError("truncated array")
        return np.frombuffer(buf[pos:end], dtype=dtype).astype(np.float64).tolist(), end
    if tag in (_INTS_PLAIN, _INTS_DELTA, _INTS_SPARSE):
        return _unpack_ints(tag, buf, pos)
    raise ValueError(f"packed state: unknown tag {tag} at byte {pos - 1}")


def _unpack_ints(tag: int, buf: memoryview, pos: int) -> tuple[list[int], int]:
    n, pos = _read_varint(buf, pos)
    if tag == _INTS_PLAIN:
        return _read_based(buf, pos, n)
    if tag == _INTS_DELTA:
        first, pos = _read_varint(buf, pos)
        steps, pos = _read_uints(buf, pos, n - 1)
        a = np.empty(n, dtype=np.int64)
        a[0] = _unzigzag(first)
        a[1:] = steps.astype(np.int64)
        return np.cumsum(a).tolist(), pos
    nnz, pos = _read_varint(buf, pos)
    a = np.zeros(n, dtype=np.int64)
    if nnz:
        gaps, pos = _read_uints(buf, pos, nnz)
        values, pos = _read_based(buf, pos, nnz)
        at = np.cumsum(gaps.astype(np.int64) + 1) - 1
        if at[-1] >= n:
            raise ValueError("packed state: sparse position out of range")
        a[at] = values
    return a.tolist(), pos


def _read_based(buf: memoryview, pos: int, n: int) -> tuple[list[int], int]:
    low, pos = _read_varint(buf, pos)
    excess, pos = _read_uints(buf, pos, n)
    return (excess + np.uint64(_unzigzag(low) & 0xFFFFFFFFFFFFFFFF)).astype(np.int64).tolist(), pos


def _text(buf: memoryview, pos: int, n: int) -> str:
    if pos + n > len(buf):
        raise IndexError("truncated string")
    return bytes(buf[pos:pos + n]).decode("utf-8")
