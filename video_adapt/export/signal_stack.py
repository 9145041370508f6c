"""The calling thread's alternate signal stack, kept across calls into a library that replaces it.

OpenVINO's CPU plugin installs an alternate signal stack of its own on the thread that compiles a model, and puts
back the stack it found when that model is destroyed. Two models destroyed in the order they were compiled (not the
reverse) leave the thread's alternate stack pointing at memory the plugin has freed; the next signal handled on that
stack (SIGCHLD from any finished child process, which torch's DataLoader and Python handle on the alternate stack)
then kills the process with SIGSEGV. `keep_signal_stack` restores the stack the thread had before the call, so no
order of compiling and destroying can leave it dangling.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from contextlib import contextmanager
from typing import Iterator

SS_DISABLE = 2  # the one flag sigaltstack accepts besides 0 (Linux and macOS alike)


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _sigaltstack():
    """libc's sigaltstack, or None where there is none (Windows)."""
    if os.name != "posix":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).sigaltstack
    except (OSError, AttributeError):
        return None


_SIGALTSTACK = _sigaltstack()


def current_signal_stack() -> tuple[int, int, int] | None:
    """(address, size, flags) of the calling thread's alternate signal stack, or None where there is no sigaltstack."""
    if _SIGALTSTACK is None:
        return None
    stack = _Stack()
    _SIGALTSTACK(None, ctypes.byref(stack))
    return stack.ss_sp or 0, stack.ss_size, stack.ss_flags


@contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Run the body, then give the calling thread back the alternate signal stack it had before."""
    if _SIGALTSTACK is None:
        yield
        return
    saved = _Stack()
    _SIGALTSTACK(None, ctypes.byref(saved))
    saved.ss_flags &= SS_DISABLE  # SS_ONSTACK is a state, not a flag sigaltstack takes
    try:
        yield
    finally:
        _SIGALTSTACK(ctypes.byref(saved), None)
