"""One running pod process: starting it, calling it, noticing when it dies, stopping it.

The hot path is one caller thread doing two system calls: it writes the request and
reads its own reply from the pipe. There is no reader thread to hand replies over
(that would cost a thread switch per call) and no polling: a *watcher* thread sits in
``waitpid`` at no cost per call, and when the pod dies it marks the process dead and
writes one byte into the reply pipe, waking a caller blocked on it. That works even
when a child the pod forked still holds the pod's end of the pipe, where waiting for
EOF would hang.

Calls from several threads are serialised by a lock. Every request carries an id, and
a reply is only accepted for the id it answers.
"""

from __future__ import annotations

import atexit
import io
import itertools
import math
import os
import select
import signal
import subprocess
import threading
import time
import weakref
from typing import Any, Callable, Mapping, NoReturn, Sequence

from .errors import (
    NoSuchFunctionError,
    PodCrashedError,
    PodError,
    PodProtocolError,
    PodStartError,
    PodTimeoutError,
    make_remote_error,
)
from .memory import MemoryWatch
from .output import OutputPump
from .progress import logger
from .runtime import codec, messages
from .runtime.framing import READ_SIZE, FrameError, FrameReader, read_attachments, write_all
from .runtime.pickling import cloudpickle_available
from .runtime.protocol import (
    ERROR_KIND,
    ERROR_MESSAGE,
    ERROR_MRO,
    ERROR_TRACEBACK,
    ERROR_TYPE,
    FIELD_ATTACHMENTS,
    KIND_NO_SUCH_FUNCTION,
    KIND_RAISED,
    KIND_START_FAILED,
    MAX_FRAME_SIZE,
    OP_DESCRIBE,
    OP_FORGET_CANCEL,
    OP_SHUTDOWN,
    PROTOCOL_VERSION,
    STATUS_DONE,
    STATUS_ERROR,
)

#: How long ``close`` waits for a pod to exit after asking it to shut down.
SHUTDOWN_TIMEOUT = 5.0

#: How long a pod that is being stopped gets between SIGTERM and SIGKILL.
STOP_GRACE = 1.0

#: At interpreter exit, how long all pods together get to end before they are killed.
EXIT_GRACE = 2.0

#: How long to wait for a SIGKILLed pod to be reaped before giving up on it (a process
#: stuck in the kernel cannot be waited for forever; the watcher reaps it later).
KILL_WAIT = 10.0

#: How long to wait for the last of a dead pod's stderr (for the crash report).
STDERR_GRACE = 0.5

#: Default for how long a call interrupted by Ctrl-C may take to stop before its pod
#: is restarted (``PodLoader(cancel_grace=...)``).
CANCEL_GRACE = 2.0

#: Pipe buffer size asked for on Linux: fewer wake-ups for large messages.
PIPE_SIZE = 1 << 20

_F_SETPIPE_SZ = 1031  # Linux; fcntl.F_SETPIPE_SZ exists only from Python 3.10
_MAX_POLL_MS = 2**31 - 1  # poll() takes a C int of milliseconds


class NotSent(Exception):
    """Internal: the request was not sent, because the process had already ended."""


class _Pipes:
    """The four pipes between the client and a pod.

    Our ends are file objects (closed when collected), the pod's ends plain
    descriptors that are closed here once the pod has been started with them.
    """

    def __init__(self) -> None:
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        self.stdout_r, self.stdout_w = os.pipe()
        self.stderr_r, self.stderr_w = os.pipe()
        self.request_r = request_r
        self.requests = io.FileIO(request_w, "wb")
        self.replies = io.FileIO(reply_r, "rb")
        self.bell = io.FileIO(reply_w, "wb")  # also the pod's stdout: see Popen

    def close_theirs(self) -> None:
        self._close_fds("request_r", "stdout_w", "stderr_w")

    def close_ours(self) -> None:
        for pipe in (self.requests, self.replies, self.bell):
            pipe.close()
        self._close_fds("stdout_r", "stderr_r")
        with _fork_guard:
            _pipes_in_setup.discard(self)

    def _close_fds(self, *names: str) -> None:
        """Close these descriptors once: each is marked closed (-1) before closing, so
        a forked child never closes a number the parent has since reused."""
        for name in names:
            fd = getattr(self, name)
            setattr(self, name, -1)
            _close_quietly(fd)


_live_processes: weakref.WeakSet[PodProcess] = weakref.WeakSet()

#: Pipes made for a pod that has no PodProcess yet, and the lock a fork waits for
#: while they are being made or handed over: a forked child closes every pod pipe it
#: inherits, those of pods still starting included (else a pod would never see
#: end-of-file while the child lives).
_pipes_in_setup: set[_Pipes] = set()
_fork_guard = threading.Lock()

#: True once the interpreter is exiting (set by _close_all).
_exiting = False


class PodProcess:
    """A pod process and the protocol conversation with it.

    Create with ``PodProcess.start``. Once the process has died (or was stopped), the
    object stays dead: ``alive`` is False and its owner starts a new one.
    """

    # Slots keep every attribute on the call path a fast fixed-offset access (past 30
    # attributes, CPython 3.11 gives an instance a plain dict, and each access slows).
    __slots__ = (
        "__weakref__", "_awaiting", "_bell", "_cleaner", "_dead", "_exited", "_ids",
        "_in_flight", "_in_reply", "_lock", "_options", "_pickle", "_poller", "_proc",
        "_pump", "_reader", "_reaped", "_replied", "_replies", "_requests", "_rfd",
        "_settled", "_stopping_reason", "_unreported", "_wake_lock", "_wfd",
        "_write_poller", "cancel_grace", "description", "max_message_size", "pid", "pod",
        "returncode",
    )  # fmt: skip

    def __init__(
        self,
        pod: str,
        proc: subprocess.Popen,
        pipes: _Pipes,
        watcher: _Watcher,
        *,
        pickle: bool = False,
        max_message_size: int = MAX_FRAME_SIZE,
        cancel_grace: float = CANCEL_GRACE,
    ) -> None:
        self.pod = pod
        self.max_message_size = max_message_size
        self.cancel_grace = cancel_grace
        # A call interrupted by Ctrl-C whose reply is still to come: (id, function,
        # deadline). Whoever takes the call lock next reads that reply first.
        self._awaiting: tuple[int, str | None, float] | None = None
        self._in_reply = False  # a reply's frame is in, its attachments may not be
        self._replied = False  # the reply to the current request has been read whole
        self._pickle = pickle
        self._options = codec.DEFAULT_OPTIONS  # until the pod has said what it has
        self.pid = proc.pid
        self.description: dict[str, Any] = {}
        self.returncode: int | None = None
        self._proc: subprocess.Popen | None = proc
        # Our ends of the pipes are file objects: should this object ever be dropped
        # without being stopped, collecting it closes them, and the pod, seeing
        # end-of-file, exits. The int descriptors are for the hot path.
        self._requests = pipes.requests
        self._replies = pipes.replies
        self._bell = pipes.bell  # our copy of the pod's reply end: the watcher's doorbell
        self._wfd = self._requests.fileno()
        self._rfd = self._replies.fileno()
        self._wake_lock = threading.Lock()
        self._reader = FrameReader(max_frame_size=min(max_message_size, MAX_FRAME_SIZE))
        self._poller: select.poll | None = None  # for calls with a timeout, made on first use
        self._pump = OutputPump(pipes.stdout_r, pipes.stderr_r, name=pod)
        pipes.stdout_r = pipes.stderr_r = -1  # the pump's now: it closes them at end-of-file
        self._ids = itertools.count(1)
        self._lock = threading.RLock()  # an RLock for _is_owned(): see _exchange
        self._exited = False  # set by the watcher the moment the process is gone
        self._reaped = watcher.reaped  # set by the watcher once it has reaped the pod
        self._dead = False  # set once this object has been stopped and cleaned up
        self._stopping_reason: str | None = None
        self._cleaner: threading.Thread | None = None
        self._in_flight = False  # a request went out; neither its reply nor a cancel yet
        self._settled = threading.Event()  # no cancelled call is being settled
        self._settled.set()
        self._unreported: PodCrashedError | None = None  # a crash while settling a cancel
        for fd in (self._wfd, self._rfd):
            _enlarge_pipe(fd)
        with _fork_guard:  # handed over: from now on, forks see this process's pipes
            _live_processes.add(self)
            _pipes_in_setup.discard(pipes)
        # A pod that stops reading must not block a caller past its timeout: writes
        # that find the pipe full wait in poll(), against the call's deadline.
        os.set_blocking(self._wfd, False)
        self._write_poller: select.poll | None = None
        watcher.attach(self)

    # -- starting ------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        pod: str,
        *,
        python: str,
        runtime_module: str,
        pod_dir: str,
        pods_dir: str,
        env: Mapping[str, str],
        pickle: bool = False,
        max_message_size: int = MAX_FRAME_SIZE,
        max_memory: int | None = None,
        cancel_grace: float = CANCEL_GRACE,
        start_timeout: float | None = None,
    ) -> PodProcess:
        """Start a pod process and ask it what it serves.

        Raises:
            PodStartError: the process could not be started, pod.py failed to import,
                the process died before answering, or it did not answer within
                ``start_timeout`` seconds (it is then stopped).
        """
        with _fork_guard:
            pipes = _Pipes()
            _pipes_in_setup.add(pipes)
        try:
            proc = subprocess.Popen(
                [python, "-s", "-m", runtime_module, "--out-fd", str(pipes.stdout_w),
                 "--pod-dir", pod_dir, "--pods-dir", pods_dir,
                 "--max-message-size", str(max_message_size),
                 "--max-memory", str(max_memory or 0)],
                stdin=pipes.request_r,
                stdout=pipes.bell.fileno(),
                stderr=pipes.stderr_w,
                pass_fds=(pipes.stdout_w,),
                start_new_session=True,  # Ctrl-C in a terminal goes to the client only
                env=dict(env),
            )  # fmt: skip
        except BaseException as exc:
            pipes.close_ours()  # a child that did start sees end-of-file and exits
            if isinstance(exc, OSError):
                raise PodStartError(f"pod {pod!r} could not be started: {exc}", pod=pod) from exc
            raise
        finally:
            pipes.close_theirs()
        try:
            watcher = _Watcher(proc)  # at once: whatever happens next, the pod is reaped
            process = cls(
                pod,
                proc,
                pipes,
                watcher,
                pickle=pickle,
                max_message_size=max_message_size,
                cancel_grace=cancel_grace,
            )
        except BaseException:  # a Ctrl-C, a thread that could not start
            pipes.close_ours()  # the pod sees end-of-file and exits
            raise
        if max_memory is not None:
            MemoryWatch(proc.pid, max_memory, watcher.reaped, process._kill_for_memory)
        try:
            process.description = process._describe(start_timeout)
        except PodTimeoutError:
            tail = process._pump.stderr_tail()
            raise PodStartError(
                f"pod {pod!r} did not start within start_timeout={start_timeout:g}s: "
                "importing pod.py took longer, so the pod was stopped. Find what pod.py "
                "waits for, or allow more time with PodLoader(..., start_timeout=...)."
                + _tail_text(tail),
                pod=pod,
                stderr_tail=tail,
            ) from None
        except PodCrashedError as exc:
            why = _exit_text(exc.returncode)
            if process._stopping_reason is not None:  # the memory watch stopped it
                why = f"{process._stopping_reason}; {why}"
            raise PodStartError(
                f"pod {pod!r} died while starting ({why})." + _tail_text(exc.stderr_tail),
                pod=pod,
                returncode=exc.returncode,
                stderr_tail=exc.stderr_tail,
            ) from None
        except BaseException:
            process._stop("start failed", wait=False)
            raise
        return process

    def _describe(self, timeout: float | None = None) -> dict[str, Any]:
        request_id = next(self._ids)
        cloudpickle = self._pickle and cloudpickle_available()
        data = messages.request(
            OP_DESCRIBE,
            request_id,
            protocol=PROTOCOL_VERSION,
            pickle=self._pickle,
            cloudpickle=cloudpickle,
        )
        reply, _ = self._exchange(data, request_id, None, timeout)
        if reply.get("status") not in (STATUS_DONE, STATUS_ERROR):
            self._fail_protocol(f"a reply with the unknown status {reply.get('status')!r}")
        if reply.get("status") == STATUS_ERROR:
            error = _error_fields(reply)
            self._stop("start failed", grace=STOP_GRACE)
            if error[ERROR_KIND] == KIND_START_FAILED:
                raise PodStartError(
                    f"pod {self.pod!r} failed to start: importing pod.py raised "
                    f"{error[ERROR_TYPE]}: {error[ERROR_MESSAGE]}"
                    + _traceback_text(error[ERROR_TRACEBACK]),
                    pod=self.pod,
                    remote_type=error[ERROR_TYPE],
                    remote_traceback=error[ERROR_TRACEBACK],
                )
            raise PodStartError(
                f"pod {self.pod!r} refused to start: {error[ERROR_MESSAGE]}", pod=self.pod
            )
        description = self._decode_value(reply)
        if (
            type(description) is not dict
            or description.get("protocol") != PROTOCOL_VERSION
            or type(description.get("functions")) is not list
        ):
            self._fail_protocol("the describe reply is malformed")
        self._options = codec.CodecOptions(
            pickle=self._pickle, cloudpickle=cloudpickle and description.get("cloudpickle") is True
        )
        return description

    # -- calling ---------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """False once the process has died or been stopped."""
        return not (self._dead or self._exited)

    @property
    def finished(self) -> bool:
        """True once this process is stopped for good and its end was reported.

        A process that died unnoticed is not finished yet: the next call reports the
        death (``PodCrashedError``), so module state is never lost silently; only
        then is a new process started.
        """
        return self._dead and self._unreported is None

    def _raise_unreported(self) -> None:
        """Raise the crash nobody has heard of yet, once (then ``finished`` is True).

        Raises:
            PodCrashedError: the pod died by itself while a cancelled call settled.
        """
        crash, self._unreported = self._unreported, None
        if crash is not None:
            raise crash

    def invoke(
        self, function: str, args: Sequence[Any], kwargs: Mapping[str, Any], timeout: float | None
    ) -> Any:
        """Call ``function`` in the pod and return its result.

        Raises:
            TypeError: an argument cannot cross (nothing was sent; the pod is unaffected).
            RemoteError: the function raised.
            NoSuchFunctionError: the pod serves no such function.
            PodCrashedError: the process died before or during the call.
            PodTimeoutError: no reply within ``timeout`` seconds; the pod was stopped.
        """
        request_id = next(self._ids)
        parts = messages.invoke_request(
            request_id, function, args, kwargs, self._options, self.max_message_size
        )
        reply, attachments = self._exchange(parts, request_id, function, timeout)
        del parts
        status = reply.get("status")
        if status == STATUS_DONE:
            value = reply.get("value")
            if type(value) in codec.DECODES_TO_ITSELF:  # the common case: skip the codec
                return value
            return self._decode_value(reply, function, attachments)
        if status != STATUS_ERROR:
            self._fail_protocol(f"a reply with the unknown status {status!r}")
        raise self._error(_error_fields(reply), function)

    def _exchange(
        self, parts: messages.Parts, request_id: int, function: str | None, timeout: float | None
    ) -> tuple[dict[str, Any], list]:
        """Send one request and return its reply and attachments, holding the call lock.

        Raises:
            NotSent: this process was already stopped and its end reported, so the
                request was not sent; the owner may start a new process and retry.
        """
        lock = self._lock
        sent = False
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            if deadline is None:
                lock.acquire()
            elif not self._acquire_before(deadline, timeout):
                waited_for = (
                    "other calls to finish"
                    if self._settled.is_set()
                    else "a cancelled call to stop"
                )
                raise PodTimeoutError.not_started(
                    self.pod, function or "describe", timeout, waited_for
                )
            if self._awaiting is not None:
                self._wait_for_settling(function, deadline, timeout)
            if self._unreported is not None:
                self._raise_unreported()
            if self._in_flight:  # an earlier call was interrupted before it could settle
                self._stop("interrupted", wait=False)
            if self._dead:
                raise NotSent
            if self._exited:
                self._fail_crashed(function, during=False)
            self._replied = False
            self._in_flight = True
            try:
                if len(parts) == 1:
                    data = parts[0]
                    try:
                        written = os.write(self._wfd, data)
                    except BlockingIOError:
                        written = 0
                    if written < len(data):
                        self._send([memoryview(data)[written:]], function, deadline, timeout)
                else:
                    self._send(parts, function, deadline, timeout)
            except BrokenPipeError:
                self._fail_crashed(function, during=False)
            sent = True
            reply = self._receive(request_id, function, deadline, timeout)
            if self._pump.has_output():  # what the call printed is out before it returns
                self._pump.drain()
            return reply
        except (PodError, NotSent, codec.NestingError):
            raise
        except BaseException as exc:
            # Interrupted mid-conversation (Ctrl-C). A call that was sent whole and
            # whose reply has not begun is cancelled: the pod is asked to interrupt
            # it, and its reply is read (and dropped) before the next call. Anywhere
            # else the stream may be cut mid-message, so the pod is stopped.
            if lock._is_owned() and not self._replied:  # type: ignore[attr-defined]
                if sent and isinstance(exc, KeyboardInterrupt) and self._can_cancel():
                    self._cancel(request_id, function)
                else:
                    self._stop("interrupted", wait=False)
            raise
        finally:
            # An RLock knows its owner: a signal that lands just as the lock is taken
            # (after acquire() returned, before anything else ran) cannot leave it held.
            if lock._is_owned():  # type: ignore[attr-defined]
                lock.release()

    def _wait_for_settling(
        self, function: str | None, deadline: float | None, timeout: float | None
    ) -> None:
        """Called holding the call lock while a cancelled call is unsettled: settle it
        here, or, for a call with a deadline, let the background thread do it and wait
        no later than the deadline (the call lock is let go meanwhile)."""
        if deadline is None:
            self._finish_cancelled()
            return
        self._lock.release()
        settled = self._settled.wait(max(0.0, deadline - time.monotonic()))
        if not settled or not self._acquire_before(deadline, timeout):
            raise PodTimeoutError.not_started(
                self.pod, function or "describe", timeout, "a cancelled call to stop"
            )
        if self._awaiting is not None:  # a cancel that came meanwhile
            self._finish_cancelled()

    def _acquire_before(self, deadline: float, timeout: float | None) -> bool:
        """Take the call lock if that is possible before ``deadline`` with time to spare."""
        if not self._lock.acquire(timeout=min(timeout or 0.0, threading.TIMEOUT_MAX)):
            return False
        if time.monotonic() >= deadline:
            self._lock.release()  # no time left to run the call: do not start it
            return False
        return True

    def _can_cancel(self) -> bool:
        return (
            not self._dead and not self._exited and not self._in_reply and not self._reader.pending
        )

    def _cancel(self, request_id: int, function: str | None) -> None:
        """Ask the pod to interrupt the running call; finish in the background.

        The caller raises KeyboardInterrupt at once. The pod runtime turns SIGINT into
        KeyboardInterrupt inside the call; if the call has not ended within
        ``cancel_grace`` seconds, the pod is stopped (the next call starts afresh).
        See ``_finish_cancelled``.
        """
        self._awaiting = (request_id, function, time.monotonic() + self.cancel_grace)
        self._settled.clear()
        self._in_flight = False  # settling takes it over
        logger.debug("pod %r: cancelling the call to %s()", self.pod, function)
        try:
            os.kill(self.pid, signal.SIGINT)
        except OSError:
            pass
        try:
            threading.Thread(
                target=self._finish_cancelled_soon, name=f"pypods-cancel-{self.pod}", daemon=True
            ).start()
        except RuntimeError:  # no new threads (interpreter exit): the next caller settles
            self._settled.set()

    def _finish_cancelled_soon(self) -> None:
        try:
            with self._lock:
                if self._awaiting is not None:
                    self._finish_cancelled()
        finally:
            self._settled.set()

    def _finish_cancelled(self) -> None:
        """Bring the conversation back in step after a cancel; stop the pod if late.

        A ``forget_cancel`` request goes after the cancelled one, and replies are read
        until its own: the cancelled call's reply comes first, unless it had been read
        already when the cancel went out. The pod handles ``forget_cancel`` only once
        the cancelled call has ended, so a SIGINT that came too late for that call is
        dropped before the next request is even sent. All within ``cancel_grace``.
        Anything that interrupts this leaves the stream unknown: the pod is stopped.
        """
        assert self._awaiting is not None
        cancelled, function, deadline = self._awaiting
        self._awaiting = None
        self._in_flight = False
        if self._dead:
            return
        try:
            forget = next(self._ids)
            forgetting = messages.request(OP_FORGET_CANCEL, forget)
            self._send(forgetting, function, deadline, self.cancel_grace)
            self._receive(forget, function, deadline, self.cancel_grace, dropping=cancelled)
        except PodTimeoutError:
            logger.debug("pod %r: %s() did not stop within the grace period", self.pod, function)
        except PodCrashedError as exc:
            self._unreported = exc  # the pod died by itself: the next call says so
        except (PodError, codec.NestingError):
            pass  # the pod broke the protocol meanwhile: it is stopped already
        except BrokenPipeError:
            pass  # the pod died just now: the next call reports it
        except BaseException:
            self._stop("interrupted", wait=False)
            raise
        if self._pump.has_output():
            self._pump.drain()

    def _kill_for_memory(self, reason: str) -> None:
        """Called by the memory watch: kill the pod, saying why to its caller."""
        logger.warning("pod %r (pid %d): killed: %s", self.pod, self.pid, reason)
        self._stopping_reason = reason
        _signal_group(self.pid, signal.SIGKILL)

    def _send(
        self,
        parts: messages.Parts,
        function: str | None,
        deadline: float | None,
        timeout: float | None,
    ) -> None:
        """Write every byte of ``parts``, waiting for room in the pipe until ``deadline``.

        Raises:
            PodTimeoutError: the pod did not take the bytes in time (it is stopped,
                since the stream is cut mid-message).
            BrokenPipeError: the pod is gone.
        """
        wfd = self._wfd

        def write(views: list) -> int:
            while True:
                try:
                    return os.writev(wfd, views)
                except BlockingIOError:
                    self._wait_writable(function, deadline, timeout)

        write_all(write, parts)

    def _wait_writable(
        self, function: str | None, deadline: float | None, timeout: float | None
    ) -> None:
        poller = self._write_poller  # used under the call lock only
        if poller is None:
            poller = self._write_poller = select.poll()
            poller.register(self._wfd, select.POLLOUT)
        if deadline is None:
            poller.poll()
        else:
            self._poll_until(poller, function, deadline, timeout)

    def _receive(
        self,
        request_id: int,
        function: str | None,
        deadline: float | None,
        timeout: float | None,
        dropping: int | None = None,
    ) -> tuple[dict[str, Any], list]:
        """Read the reply to ``request_id`` (and its attachments), after dropping the
        reply to ``dropping`` should that come first."""
        reader = self._reader
        try:
            frame = reader.next_frame()
            while frame is None:
                if self._exited:
                    self._fail_crashed(function, during=True)
                if deadline is not None:
                    self._wait_readable(function, deadline, timeout)
                view = reader.writable()
                if view is None:
                    data = os.read(self._rfd, READ_SIZE)
                    if not data:
                        self._fail_crashed(function, during=True)
                    frame = reader.take(data)
                else:
                    count = os.readv(self._rfd, [view])
                    if not count:
                        self._fail_crashed(function, during=True)
                    reader.wrote(count)
                    frame = reader.next_frame()
            self._in_reply = True  # from here on, a Ctrl-C cannot be a cancel
            too_deep = None
            try:
                reply = messages.unpack(frame)
            except codec.NestingError as exc:
                # Valid, but too deep to decode from this caller's stack: read past its
                # attachments all the same, so that only this reply is lost.
                reply, too_deep = messages.unpack_header(frame), exc
            except BaseException:
                # Interrupted (Ctrl-C) while decoding: with no attachments to follow,
                # the message is in whole and the stream in step; the pod can stay.
                if not _has_attachments(frame):
                    self._replied = True
                    self._in_flight = False
                    self._in_reply = False
                raise
            attachments: list = []
            if FIELD_ATTACHMENTS in reply:
                sizes, immutable = messages.attachment_sizes(reply, self.max_message_size)
                read_into = self._attachment_reader(function, deadline, timeout)
                attachments = read_attachments(reader, sizes, read_into, immutable)
        except (FrameError, messages.ProtocolError) as exc:
            if self._exited:  # the watcher's doorbell byte landed inside a cut-off frame
                self._fail_crashed(function, during=True)
            self._fail_protocol(str(exc))
        self._replied = True  # set before _in_reply is cleared: never neither
        self._in_flight = False
        self._in_reply = False
        if reply["id"] != request_id:
            if reply["id"] == dropping:
                return self._receive(request_id, function, deadline, timeout)
            self._fail_protocol(f"reply for request {reply['id']} while waiting for {request_id}")
        if too_deep is not None:
            raise codec.NestingError(
                f"the reply to {function}() could not be received: {too_deep}"
            ) from None
        return reply, attachments

    def _attachment_reader(
        self, function: str | None, deadline: float | None, timeout: float | None
    ) -> Callable[[memoryview], int]:
        """``read_into`` for attachments: wakes on a dead pod, honours the deadline."""

        def read_into(view: memoryview) -> int:
            if self._exited:
                self._fail_crashed(function, during=True)
            if deadline is not None:
                self._wait_readable(function, deadline, timeout)
            count = os.readv(self._rfd, [view])
            if not count:
                self._fail_crashed(function, during=True)
            return count

        return read_into

    def _wait_readable(self, function: str | None, deadline: float, timeout: float | None) -> None:
        poller = self._poller  # used under the call lock only
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self._rfd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self._poll_until(poller, function, deadline, timeout)

    def _poll_until(
        self, poller: select.poll, function: str | None, deadline: float, timeout: float | None
    ) -> None:
        """Wait until ``poller`` reports its descriptor ready; at ``deadline``, fail
        the call with a timeout (which stops the pod)."""
        remaining = deadline - time.monotonic()
        while remaining > 0:
            if poller.poll(min(math.ceil(remaining * 1000), _MAX_POLL_MS)):
                return
            remaining = deadline - time.monotonic()
        self._fail_timeout(function, timeout)

    # -- results and errors -------------------------------------------------------------

    def _decode_value(
        self, reply: dict[str, Any], function: str | None = None, attachments: Sequence = ()
    ) -> Any:
        try:
            return codec.decode(reply.get("value"), options=self._options, attachments=attachments)
        except codec.NestingError as exc:
            raise codec.NestingError(
                f"the result of {function}() could not be received: {exc}"
            ) from None
        except codec.DecodeError as exc:
            # The frame was whole, so the stream is in step: refuse this value only.
            raise PodProtocolError(
                f"the result of {function}() in pod {self.pod!r} cannot be received here: {exc}"
            ) from None

    def _error(self, error: dict[str, Any], function: str | None) -> PodError:
        kind = error[ERROR_KIND]
        if kind == KIND_RAISED:
            return make_remote_error(
                message=error[ERROR_MESSAGE],
                remote_type=error[ERROR_TYPE],
                mro=error[ERROR_MRO],
                traceback=error[ERROR_TRACEBACK],
                pod=self.pod,
                function=function,
            )
        if kind == KIND_NO_SUCH_FUNCTION:
            served = [f.get("name", "?") for f in self.description.get("functions", [])]
            return NoSuchFunctionError(self.pod, function or "", served)
        return PodProtocolError(
            f"pod {self.pod!r} rejected the request for {function}(): {error[ERROR_MESSAGE]}"
        )

    def _fail_crashed(self, function: str | None, *, during: bool) -> NoReturn:
        reason = self._stopping_reason
        returncode = self._stop("crashed", grace=STOP_GRACE)
        tail = self._pump.stderr_tail()
        if reason is not None:
            what = f"was stopped ({reason})"
        elif during and function:
            what = f"crashed during a call to {function}()"
        elif function:
            what = f"had exited before the call to {function}() (between calls)"
        else:
            what = "exited"
        next_call = (
            ""
            if reason is not None and reason.startswith("unloaded")
            else "\nThe next call starts a fresh pod process (its module state is lost)."
        )
        raise PodCrashedError(
            f"pod {self.pod!r} {what}: {_exit_text(returncode)}." + _tail_text(tail) + next_call,
            pod=self.pod,
            returncode=returncode,
            stderr_tail=tail,
        )

    def _fail_timeout(self, function: str | None, timeout: float | None) -> NoReturn:
        self._stop("timed out")
        raise PodTimeoutError(
            f"call to {function or 'describe'}() in pod {self.pod!r} did not finish within "
            f"{timeout:g}s. The pod was stopped, since its state is unknown; the next call "
            "starts a fresh pod process.",
            pod=self.pod,
            function=function or "describe",
            timeout=timeout or 0.0,
        )

    def _fail_protocol(self, problem: str) -> NoReturn:
        self._stop("protocol error")
        raise PodProtocolError(
            f"pod {self.pod!r} broke the protocol ({problem}); it was stopped and the next "
            "call starts a fresh pod process."
        )

    # -- stopping ----------------------------------------------------------------------

    def close(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Stop the pod: a clean shutdown if it is idle, else terminate it.

        A call running in another thread fails with ``PodCrashedError``; this method
        does not wait for it: a helper thread sees the pod gone and cleaned up.
        """
        if self._dead:
            return
        if not self._lock.acquire(blocking=False):
            self._stopping_reason = "unloaded during the call"
            threading.Thread(
                target=self._stop_busy, name=f"pypods-stop-{self.pod}", daemon=True
            ).start()
            return
        try:
            if self._awaiting is not None:
                self._finish_cancelled()
            if not self._dead:
                if not self._exited and not self._in_flight:  # else: out of step, stop it
                    request_id = next(self._ids)
                    deadline = time.monotonic() + timeout
                    try:
                        shutdown = messages.request(OP_SHUTDOWN, request_id)
                        self._send(shutdown, None, deadline, timeout)
                        self._receive(request_id, None, deadline, timeout)
                    except (PodError, OSError):
                        pass
                self._stop("unloaded", grace=timeout)
        finally:
            self._lock.release()

    def close_soon(self) -> None:
        """``close()`` in a helper thread: for finalizers, which must not block."""
        threading.Thread(target=self.close, name=f"pypods-close-{self.pod}", daemon=True).start()

    def _stop_busy(self) -> None:
        """Stop a pod whose call lock another thread holds, and clean up after it."""
        if not self._exited:
            _signal_group(self.pid, signal.SIGTERM)
        if not self._reaped.wait(STOP_GRACE) and not self._exited:
            _signal_group(self.pid, signal.SIGKILL)
        with self._lock:  # the caller lets go once it sees the pod gone (or its reply)
            self._stop("unloaded")

    def _stop(self, reason: str, *, grace: float = 0.0, wait: bool = True) -> int | None:
        """Make sure the process is gone, reap it, release everything. Idempotent.

        The work runs in a helper thread, so that nothing (a second Ctrl-C, say) can
        cut it short and leave a pod running or its pipes open.

        Args:
            reason: why, for the debug log: "unloaded", "crashed", "timed out"...
            grace: seconds the process may take to exit by itself before it is
                signalled. A process that is gone or going (after a shutdown request,
                or after it broke off) gets time to finish and report its true exit
                status; one that is stuck is stopped at once.
            wait: wait for the cleanup to finish (else return at once: Ctrl-C).
        """
        if not self._dead and self._cleaner is None:
            cleaner = threading.Thread(
                target=self._clean_up, args=(reason, grace), name=f"pypods-stop-{self.pod}",
                daemon=True,
            )  # fmt: skip
            cleaner.start()  # first: from here on, nothing can skip the cleanup
            self._cleaner = cleaner  # only once started: join() needs a started thread
            self._dead = True
        if wait and self._cleaner is not None:
            self._cleaner.join()
        return self.returncode

    def _clean_up(self, reason: str, grace: float) -> None:
        self._dead = True
        proc = self._proc
        logger.debug("pod %r (pid %d): stopping (%s)", self.pod, self.pid, reason)
        try:
            self._requests.close()  # end-of-file also tells a healthy pod to exit
            if proc is not None and not self._reaped.wait(grace):
                _signal_group(proc.pid, signal.SIGTERM)
                if not self._reaped.wait(STOP_GRACE):
                    _signal_group(proc.pid, signal.SIGKILL)
                    self._reaped.wait(KILL_WAIT)
        finally:
            # Signalling before the watcher has reaped the pod is safe: its group id
            # stays reserved until then.
            if proc is not None and not self._reaped.is_set():
                _signal_group(proc.pid, signal.SIGKILL)
            self.returncode = proc.returncode if proc is not None else None
            self._replies.close()  # first: a watcher blocked on a full pipe lets go
            with self._wake_lock:
                self._bell.close()
            self._pump.finish(STDERR_GRACE)
            _live_processes.discard(self)  # last: until here, exit-time cleanup covers it

    def _begin_exit(self) -> None:
        """At interpreter exit: make the pod end, quickly, without waking any caller.

        An idle pod gets end-of-file on its stdin and exits cleanly (its atexit
        handlers run); a busy one is terminated. The exit-time sweep waits for all of
        them together, then kills what is left.
        """
        if self._reaped.is_set() or self._proc is None:
            return
        if self._lock.acquire(blocking=False):
            try:
                self._requests.close()
            finally:
                self._lock.release()
        else:
            _signal_group(self.pid, signal.SIGTERM)

    def _abandon_after_fork(self) -> None:
        """In a forked child: drop the parent's pipes without touching the pod."""
        self._dead = True
        self._proc = None
        self._lock = threading.RLock()
        self._wake_lock = threading.Lock()
        for pipe in (self._requests, self._replies, self._bell):
            try:
                pipe.close()
            except OSError:
                pass
        self._pump.abandon()

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"dead ({_exit_text(self.returncode)})"
        return f"<PodProcess {self.pod!r} pid={self.pid} {state}>"


class _Watcher:
    """A thread per pod that waits for it to end, reaps it, and wakes a waiting caller.

    It is the only thing that reaps the pod, and it starts the moment the pod does.
    It holds only a weak reference to its ``PodProcess``, so that an abandoned one can
    be collected (which closes its pipes and ends the pod). It first waits without
    reaping (``WNOWAIT``): while the pod is a zombie its process group id cannot be
    reused, so children the pod left behind are stopped with no risk of signalling an
    unrelated group.
    """

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.reaped = threading.Event()
        self._process: weakref.ref[PodProcess] | None = None
        self._attached = threading.Event()
        threading.Thread(target=self._run, name=f"pypods-watch-{proc.pid}", daemon=True).start()

    def attach(self, process: PodProcess) -> None:
        self._process = weakref.ref(process)
        self._attached.set()

    def _run(self) -> None:
        proc = self.proc
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            reaped_first = False
        except (AttributeError, OSError):  # no waitid on this platform
            reaped_first = True
        if not reaped_first:
            _signal_group(proc.pid, signal.SIGTERM)
        proc.wait()
        if reaped_first:
            _signal_group(proc.pid, signal.SIGTERM)  # a tiny window: best effort
        self._attached.wait(1.0)  # the PodProcess is being built right now, if at all
        process = self._process() if self._process is not None else None
        if process is not None:
            process.returncode = proc.returncode
            process._exited = True
        self.reaped.set()  # before the doorbell, whose write may block on a full pipe
        if process is None or _exiting:
            return  # at exit, a caller woken now would only print a traceback
        with process._wake_lock:
            if not process._bell.closed:
                try:
                    os.write(process._bell.fileno(), b"\0")
                except OSError:
                    pass


def _close_all() -> None:
    """At interpreter exit: end every pod still running, together and quietly.

    Idle pods exit cleanly on end-of-file, busy ones are terminated; all get one
    shared grace period, then whatever is left is killed. Nothing is waited for one
    pod after another, and no caller is woken to print a traceback.
    """
    global _exiting
    _exiting = True
    processes = list(_live_processes)
    for process in processes:
        process._begin_exit()
    deadline = time.monotonic() + EXIT_GRACE
    for process in processes:
        if process._proc is None:
            continue
        if not process._reaped.wait(max(0.0, deadline - time.monotonic())):
            _signal_group(process.pid, signal.SIGKILL)


atexit.register(_close_all)


def _after_fork_in_child() -> None:
    global _fork_guard
    _fork_guard = threading.Lock()  # held by the parent's forking thread
    for process in list(_live_processes):
        process._abandon_after_fork()
    _live_processes.clear()
    for pipes in list(_pipes_in_setup):
        pipes.close_theirs()
        pipes.close_ours()
    _pipes_in_setup.clear()


def _before_fork() -> None:
    _fork_guard.acquire()


def _after_fork_in_parent() -> None:
    _fork_guard.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


def _close_quietly(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def _enlarge_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, OSError):
        pass  # not Linux, or above the system's limit: the default size works too


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _error_fields(reply: dict[str, Any]) -> dict[str, Any]:
    error = reply.get("error")
    error = error if type(error) is dict else {}
    mro = error.get(ERROR_MRO)
    return {
        ERROR_KIND: str(error.get(ERROR_KIND, "")),
        ERROR_TYPE: str(error.get(ERROR_TYPE, "Exception")),
        ERROR_MRO: [str(n) for n in mro] if type(mro) is list else [],
        ERROR_MESSAGE: str(error.get(ERROR_MESSAGE, "")),
        ERROR_TRACEBACK: str(error.get(ERROR_TRACEBACK, "")),
    }


def _has_attachments(frame: Any) -> bool:
    """Whether a valid frame announces attachments (True when that is unknown)."""
    try:
        return FIELD_ATTACHMENTS in messages.unpack_header(frame)
    except messages.ProtocolError:
        return True


def _exit_text(returncode: int | None) -> str:
    if returncode is None:
        return "exit status unknown"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit code {returncode}"


def _tail_text(lines: Sequence[str]) -> str:
    if not lines:
        return " It wrote nothing to stderr."
    body = "\n".join(f"    {line}" for line in lines)
    return f"\nLast lines on the pod's stderr:\n{body}"


def _traceback_text(traceback: str) -> str:
    return f"\n\nTraceback in the pod:\n{traceback.rstrip()}" if traceback else ""
