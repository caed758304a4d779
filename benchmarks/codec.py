"""What the wire codec costs per message on the relay path: ``scan`` over 135-byte DataRows, against
baselines measured in the same run.

Run with ``.venv/bin/python benchmarks/codec.py`` (about 10 s; ``--rows N`` to change the stream size).

The stream is N DataRow messages of exactly 135 bytes each (type byte, length word, 3 columns), laid out
in one ``bytearray`` as a relay's receive buffer would hold them. Figures, in µs per message:

* ``struct.unpack_from`` hop: the bare header walk (unpack type and length, advance), nothing kept. The
  floor of any pure-Python scanner.
* ``bytes(memoryview slice)``: copying each message out of the buffer; what a framing reader that hands
  out payloads must at least pay.
* ``codec.scan``: the relay scanner (boundaries only, no copy), over the whole buffer at once and in
  64 KiB reads (a relay's ``recv_into`` size) with the unfinished tail carried over.
* ``FrameReader.feed`` in 64 KiB chunks: the decode-path framer (copies every payload).
* ``decode_backend`` on a DataRow (lazy: checks the column count, keeps the bytes) and ``DataRow.values``
  (decodes the columns), for messages the proxy must read, e.g. to mask them.
* ``pygwire`` (if importable; not a dependency): its decoder, which decodes every DataRow.

Method: ``time.perf_counter_ns``, one warm-up round then ROUNDS rounds interleaved across every figure,
median of the rounds, garbage collector off while timing. Machines here vary ±40 % between runs, so read
the ratios to the baselines rather than the absolute figures.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pgwarden.wire_proxy import codec
from pgwarden.wire_proxy import messages as m

ROUNDS = 7
CHUNK = 64 * 1024
_HDR = struct.Struct("!BI").unpack_from


def make_stream(rows: int) -> tuple[bytearray, bytes]:
    one = codec.encode(m.DataRow.from_values((b"1234", b"20261202", b"x" * 104)))
    assert len(one) == 135, len(one)
    return bytearray(one * rows), one


def bench_unpack_hop(buf: bytearray) -> int:
    pos, end, n = 0, len(buf), 0
    while pos <= end - 5:
        _kind, length = _HDR(buf, pos)
        pos += 1 + length
        n += 1
    return n


def bench_copy(buf: bytearray) -> int:
    view = memoryview(buf)
    pos, end, n = 0, len(buf), 0
    while pos < end:
        _ = bytes(view[pos : pos + 135])
        pos += 135
        n += 1
    view.release()
    return n


def bench_scan_whole(buf: bytearray) -> int:
    spans, consumed = codec.scan(buf)
    assert consumed == len(buf)
    return len(spans)


def bench_scan_chunks(buf: bytearray) -> int:
    pending = bytearray()
    n = 0
    view = memoryview(buf)
    for start in range(0, len(buf), CHUNK):
        pending += view[start : start + CHUNK]
        spans, consumed = codec.scan(pending)
        n += len(spans)
        del pending[:consumed]
    view.release()
    return n


def bench_frame_reader(buf: bytearray) -> int:
    r = codec.FrameReader()
    n = 0
    view = memoryview(buf)
    for start in range(0, len(buf), CHUNK):
        r.feed(view[start : start + CHUNK])
        for _ in r:
            n += 1
    view.release()
    return n


def make_decode_benches(one: bytes, rows: int) -> tuple[Callable[[bytearray], int], Callable[[bytearray], int]]:
    payload = one[5:]
    kind = one[0]
    decode = codec.decode_backend

    def lazy(_buf: bytearray) -> int:
        for _ in range(rows):
            decode(kind, payload)
        return rows

    row = m.DataRow(payload)

    def values(_buf: bytearray) -> int:
        for _ in range(rows):
            row.values()
        return rows

    return lazy, values


def make_pygwire_bench() -> Callable[[bytearray], int] | None:
    try:
        import pygwire
    except ImportError:
        return None

    def run(buf: bytearray) -> int:
        d = pygwire.BackendMessageDecoder()
        d.phase = pygwire.ConnectionPhase.READY
        n = 0
        view = memoryview(buf)
        for start in range(0, len(buf), CHUNK):
            d.feed(view[start : start + CHUNK])
            for _ in d:
                n += 1
        view.release()
        return n

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    buf, one = make_stream(args.rows)
    lazy, values = make_decode_benches(one, args.rows)
    benches: dict[str, Callable[[bytearray], int]] = {
        "struct.unpack_from hop (baseline)": bench_unpack_hop,
        "bytes(memoryview slice) copy (baseline)": bench_copy,
        "codec.scan, whole buffer": bench_scan_whole,
        "codec.scan, 64 KiB reads + carry-over": bench_scan_chunks,
        "FrameReader.feed, 64 KiB chunks": bench_frame_reader,
        "decode_backend(DataRow), lazy": lazy,
        "DataRow.values() (3 columns)": values,
    }
    pyg = make_pygwire_bench()
    if pyg is not None:
        benches["pygwire BackendMessageDecoder"] = pyg

    samples: dict[str, list[float]] = {name: [] for name in benches}
    for round_no in range(ROUNDS + 1):
        for name, fn in benches.items():
            gc.collect()
            gc.disable()
            t0 = time.perf_counter_ns()
            n = fn(buf)
            elapsed = time.perf_counter_ns() - t0
            gc.enable()
            assert n == args.rows, (name, n)
            if round_no:  # round 0 warms up
                samples[name].append(elapsed / n / 1000)

    med = {name: statistics.median(v) for name, v in samples.items()}
    hop = med["struct.unpack_from hop (baseline)"]
    copy = med["bytes(memoryview slice) copy (baseline)"]
    print(f"{args.rows} DataRows of 135 bytes ({len(buf) / 1e6:.1f} MB); median of {ROUNDS} rounds")
    print(f"{'':44} {'µs/msg':>8} {'x hop':>7} {'x copy':>7} {'MB/s':>8}")
    for name, us in med.items():
        print(f"{name:44} {us:8.3f} {us / hop:7.2f} {us / copy:7.2f} {135 / us:8.0f}")
    print()
    print(f"Python {platform.python_version()} ({platform.python_implementation()}), {platform.machine()}, "
          f"{platform.processor() or 'cpu unknown'}")


if __name__ == "__main__":
    main()
