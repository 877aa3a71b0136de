"""Worker processes that die with their parent, and SIGTERM handled like Ctrl-C.

Every process pool of the package comes from :func:`process_map`.  Its workers

* stay in the parent's process group, so a signal sent to the job's group (Galaxy, Slurm,
  ``docker stop``) reaches them too;
* ask the kernel for ``SIGTERM`` when their parent dies (``prctl(PR_SET_PDEATHSIG)`` on Linux),
  exit at once if the parent died before they could ask, and run a watchdog thread that ends
  them a grace period after the parent is gone (elsewhere than Linux, and when the SIGTERM's
  exception is swallowed), so a ``kill -9`` of the parent never leaves workers writing files
  or blocked on a pipe nobody writes to;
* handle ``SIGTERM`` like the parent does (:class:`Terminated`): the task unwinds, its
  temporary files are removed (:func:`ifu_extract.fitsout.atomic_path`), the worker exits;
* ignore ``SIGINT`` (a Ctrl-C reaches the whole foreground group: the parent decides).

When the parent stops early (an error, Ctrl-C, SIGTERM), :func:`process_map` terminates its
workers (SIGTERM, then SIGKILL after a grace period) before the exception goes on.

:func:`install_sigterm_handler` turns ``SIGTERM`` in the main process into :class:`Terminated`,
a ``KeyboardInterrupt``, so that it unwinds exactly like Ctrl-C; the CLI exits with 143.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

__all__ = ["Terminated", "even_blocks", "install_sigterm_handler", "process_map", "signals_deferred",
           "worker_init"]

#: prctl option asking for a signal when the parent thread exits (linux/prctl.h).
PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (unwinds like Ctrl-C; exit status 128 + 15)."""

    exit_code = 128 + signal.SIGTERM


#: Depth of :func:`signals_deferred` sections, and whether a SIGTERM came during one.
_DEFER = {"depth": 0, "pending": False}


@contextlib.contextmanager
def signals_deferred():
    """A section that SIGTERM does not interrupt: :class:`Terminated` is raised when it ends.

    For the few statements that create a resource and hand it to the code that cleans it up
    (a temporary file between its creation and the ``try`` that removes it).
    """
    _DEFER["depth"] += 1
    try:
        yield
    finally:
        _DEFER["depth"] -= 1
    if _DEFER["depth"] == 0 and _DEFER["pending"]:
        _DEFER["pending"] = False
        raise Terminated()


def _on_sigterm(signum, frame):
    # One is enough: a second SIGTERM must not interrupt the cleanup the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _DEFER["depth"]:
        _DEFER["pending"] = True
        return
    raise Terminated()


def install_sigterm_handler() -> None:
    """Make SIGTERM raise :class:`Terminated` in this (main) process."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def _set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send *sig* to this process when its parent dies; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return False


#: Seconds a terminated worker gets to remove its temporary files before it is killed.
GRACE_SECONDS = 5.0


def _watch_parent(parent_pid: int) -> None:
    """Worker thread: once the parent is gone, SIGTERM this worker, and end it after a grace.

    The death signal normally does the first part; the second is the guarantee: a SIGTERM whose
    exception is swallowed (raised inside a finalizer, say) must not leave the worker waiting
    forever on a queue nobody writes to.
    """
    import time

    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_SECONDS)
    os._exit(Terminated.exit_code)


def worker_init(parent_pid: int) -> None:
    """Initializer of every worker process (see the module docstring).

    Parameters
    ----------
    parent_pid : int
        PID of the process that started the pool.  If the worker's parent is already another
        process (the parent died before the death signal was set), the worker exits at once.
    """
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm_in_worker)
    _set_parent_death_signal(signal.SIGTERM)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(Terminated.exit_code)


#: True while a worker runs a task (a SIGTERM then unwinds the task before the worker exits).
_IN_TASK = False


def _on_sigterm_in_worker(signum, frame):
    if _IN_TASK:
        _on_sigterm(signum, frame)
        return
    os._exit(Terminated.exit_code)     # idle: nothing to clean up, no traceback


def _guarded(func, item):
    """Run one task in a worker; on SIGTERM, unwind it (cleanup runs) and leave the process."""
    global _IN_TASK
    try:
        _IN_TASK = True
        return func(item)
    except Terminated:
        os._exit(Terminated.exit_code)
    finally:
        _IN_TASK = False


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate every worker of *pool* (SIGTERM, SIGKILL after a grace period) and reap them."""
    import time

    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        try:
            p.terminate()
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + GRACE_SECONDS
    for p in procs:
        try:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)
        except (OSError, ValueError, AssertionError):
            pass
    pool.shutdown(wait=False)


@contextlib.contextmanager
def process_map(func, items, threads: int):
    """``map(func, items)`` on *threads* worker processes, as a context::

        with process_map(work, blocks, threads) as results:
            for out in results:
                ...

    The results come in order, each as soon as it and those before it are done.  Workers are
    forked (they share the parent's read-only state, such as large images set before the call)
    and die with the parent.  Whatever ends the ``with`` block early -- an error in a task or
    in the loop, Ctrl-C, SIGTERM -- the workers are terminated before the exception goes on.

    Parameters
    ----------
    func : callable
        A module-level function (it is run in the workers).
    items : sequence
        One task per item.
    threads : int
        Number of worker processes (``<= 1``, or a single item, runs in this process).
    """
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        yield map(func, items)
        return
    import multiprocessing as mp

    ctx = mp.get_context("fork") if os.name == "posix" else None
    pool = ProcessPoolExecutor(max_workers=threads, mp_context=ctx, initializer=worker_init,
                               initargs=(os.getpid(),))
    try:
        # Futures rather than pool.map: map cancels its futures when interrupted, and the pool's
        # manager thread then fails on them ("InvalidStateError") when the workers are killed.
        futures = [pool.submit(_guarded, func, item) for item in items]
        yield (fut.result() for fut in futures)
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def even_blocks(seq, n: int) -> list:
    """*seq* cut into at most *n* contiguous blocks of near-equal size (order kept, none empty).

    How the pools' callers share out their objects: contiguous blocks keep each worker's reads
    local, and more blocks than workers keep a progress bar moving.
    """
    k, r = divmod(len(seq), n)
    out, start = [], 0
    for i in range(n):
        stop = start + k + (1 if i < r else 0)
        if stop > start:
            out.append(seq[start:stop])
        start = stop
    return out
