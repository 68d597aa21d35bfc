"""Keeping mediapipe's native INFO and WARNING lines off the terminal (`-v` lets them through).

mediapipe 0.10.21 logs from C++ through absl, and as nothing calls `absl::InitializeLog()`, absl
writes every line, whatever its severity, straight to file descriptor 2. No setting reaches that
logger from outside the wheel: it reads no environment variable (GLOG_minloglevel and
TF_CPP_MIN_LOG_LEVEL change nothing) and the wheel exports no absl function to call. So the
process's descriptor 2 becomes a pipe into a small filter process that drops those lines and
passes everything else on (native errors, a crash's last words), and Python's own `sys.stderr`
writes to the terminal directly, as before. A process rather than a thread, so that what a
crashing process wrote last still gets out.

Run as a script, this file is that filter: standard input to standard error.
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys

# absl's INFO and WARNING lines (severity, date: 0000 before InitializeLog, time, thread,
# file:line), TensorFlow Lite's notice, and absl's own notice about InitializeLog.
NATIVE_LINE = re.compile(
    rb"[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] "
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
)
# Every dropped line starts with one of these.
_NATIVE_STARTS = (b"I", b"W")


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def copy_without_native_lines(source: int, target: int) -> None:
    """Copy `source` to `target` until its end, without the lines `NATIVE_LINE` matches."""
    pending = b""
    while chunk := os.read(source, 1 << 16):
        *lines, pending = (pending + chunk).split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not NATIVE_LINE.match(line))
        # Native code may write a line in pieces (TensorFlow Lite does): a piece that may still
        # become a dropped line waits for the rest; anything else passes at once.
        if not pending.startswith(_NATIVE_STARTS):
            kept, pending = kept + pending, b""
        _write_all(target, kept)
    if not NATIVE_LINE.match(pending):
        _write_all(target, pending)


def hide_native_logs() -> None:
    """Route descriptor 2 through the filter for the rest of the process.

    Only where `sys.stderr` still is the process's own: a caller that replaced it (pytest
    capturing output) owns descriptor 2 too, and it is left alone.
    """
    if sys.stderr is None or sys.stderr is not sys.__stderr__:
        return
    sys.stderr.flush()
    # The standard library is all the filter needs (-I -S: it starts in milliseconds). It runs in a
    # session of its own: Ctrl-C reaches the whole process group, and the filter must outlive the
    # process's last words; it ends with its input, when the process ends.
    native_filter = subprocess.Popen([sys.executable, "-I", "-S", __file__], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, start_new_session=True)
    terminal = os.dup(2)
    os.dup2(native_filter.stdin.fileno(), 2)
    native_filter.stdin.close()
    sys.stderr = open(terminal, "w", encoding=sys.stderr.encoding, errors=sys.stderr.errors, buffering=1,
                      closefd=False)
    atexit.register(_restore, terminal, native_filter)


def _restore(terminal: int, native_filter: subprocess.Popen) -> None:
    """Descriptor 2 back to the terminal, which ends the filter's input; wait for it to pass on
    what it holds, so that nothing appears after the process has ended."""
    os.dup2(terminal, 2)
    try:
        native_filter.wait(timeout=5)
    except subprocess.TimeoutExpired:  # a child process still holds the pipe: the filter ends with it
        pass


if __name__ == "__main__":
    try:
        copy_without_native_lines(sys.stdin.fileno(), sys.stderr.fileno())
    except OSError:  # the terminal is gone
        pass
