# cython: language_level=3, boundscheck=False, wraparound=False
"""codec.scan compiled: the same spans, the same errors, a few nanoseconds a message instead of a few
hundred. Optional: ``make`` builds it when Cython and a C compiler are at hand (scripts/build_scanner.py),
and codec.py falls back to the pure-Python scanner otherwise or when PGWARDEN_PURE_SCANNER=1."""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer


def scan(object buf, Py_ssize_t start, object end, Py_ssize_t max_message_size, object bad_length):
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t n, pos, last, stop, e
    cdef unsigned long length
    cdef list spans = []
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        p = <const unsigned char*> view.buf
        n = view.len
        e = n if end is None else <Py_ssize_t> end
        if e > n or start < 0:
            raise ValueError("scan: the range lies outside the buffer")
        pos = start
        last = e - 5
        while pos <= last:
            length = ((<unsigned long> p[pos + 1]) << 24) | ((<unsigned long> p[pos + 2]) << 16) \
                | ((<unsigned long> p[pos + 3]) << 8) | (<unsigned long> p[pos + 4])
            if length < 4 or length > <unsigned long> max_message_size:
                bad_length(length, max_message_size)
            stop = pos + 1 + <Py_ssize_t> length
            if stop > e:
                break
            spans.append((p[pos], pos, stop))
            pos = stop
    finally:
        PyBuffer_Release(&view)
    return spans, pos - start
