"""The pod's main loop: import pod.py once, then answer requests until the client goes.

Calls run one at a time on the main thread (some libraries insist on it), so pod.py's
module state lives across calls exactly as in an ordinary program.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import platform
import signal
import sys
import threading
import time
import types
from typing import Any, Callable, NoReturn

from . import codec, messages
from .describe import ServedNamesError, describe_function, served_functions
from .framing import READ_SIZE, FrameError, FrameReader, read_attachments, write_all
from .pickling import cloudpickle_available
from .protocol import (
    FIELD_ARGS,
    FIELD_ATTACHMENTS,
    FIELD_KWARGS,
    FIELD_PLAIN_ARGS,
    KIND_BAD_REQUEST,
    KIND_NO_SUCH_FUNCTION,
    KIND_RAISED,
    KIND_START_FAILED,
    MAX_FRAME_SIZE,
    OP_DESCRIBE,
    OP_FORGET_CANCEL,
    OP_INVOKE,
    OP_SHUTDOWN,
    PROTOCOL_VERSION,
)

#: How often the pod checks that the client that started it is still alive. A pod busy
#: in a long call does not read its stdin, so it would not see the EOF a dead client
#: leaves behind; this check bounds how long such a pod can outlive its client.
PARENT_CHECK_INTERVAL = 0.5

#: The module name pod.py is imported under. The pod folder is first on sys.path, so
#: ``import pod`` from a helper module finds this same module rather than a second copy.
POD_MODULE_NAME = "pod"

_ARGS_TYPES = (list, tuple)


class PodServer:
    """Serves the functions of one pod.py over a pair of file descriptors."""

    def __init__(
        self,
        read_fd: int,
        write_fd: int,
        *,
        pod_file: str,
        flush_output: Callable[[], None],
        max_message_size: int = MAX_FRAME_SIZE,
    ) -> None:
        self._read_fd = read_fd
        self._write_fd = write_fd
        self._max_message_size = max_message_size
        self._reader = FrameReader(max_frame_size=min(max_message_size, MAX_FRAME_SIZE))
        self._options = codec.DEFAULT_OPTIONS
        self._running = False  # a pod function is running: signals may interrupt it
        self._cancel_pending = False  # a SIGINT came before the function could start
        self._attachments: list = []  # those of the message being handled
        self._pod_file = pod_file
        self._flush_output = flush_output
        self._functions: dict[str, Callable[..., Any]] = {}
        self._start_error: dict[str, Any] | None = None

    # -- start-up ----------------------------------------------------------------------

    def load(self) -> None:
        """Import pod.py; remember a failure so that ``describe`` can report it."""
        try:
            module = _import_pod(self._pod_file)
            self._functions = served_functions(module)
        except ServedNamesError as exc:
            exc.__traceback__ = None
            self._start_error = messages.exception_error(exc, kind=KIND_START_FAILED)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt at import too
            _trim_traceback(exc, self._pod_file)
            self._start_error = messages.exception_error(exc, kind=KIND_START_FAILED)

    # -- the loop ----------------------------------------------------------------------

    def serve(self) -> int:
        """Answer requests until the client closes the pipe or asks for shutdown.

        Returns the process exit status.
        """
        receive = self._receive
        while True:
            try:
                message = receive()
            except (FrameError, messages.ProtocolError, codec.DecodeError, EOFError) as exc:
                _report(f"the client sent a corrupt message ({exc}); exiting")
                return 2
            if message is None:
                return 0  # the client closed the connection: it is gone or done
            op = message.get("op")
            if op == OP_INVOKE:
                try:
                    self._invoke(message)
                except KeyboardInterrupt as exc:  # landed just as the function returned
                    error = messages.exception_error(exc)
                    self._reply(messages.error_reply(message["id"], error))
                if self._attachments:  # not used (the request was refused): let go
                    self._attachments = []
            elif op == OP_FORGET_CANCEL:
                self._cancel_pending = False
                self._reply(messages.done_reply(message["id"], None))
            elif op == OP_DESCRIBE:
                if not self._describe(message):
                    return 1
            elif op == OP_SHUTDOWN:
                self._reply(messages.done_reply(message["id"], None))
                return 0
            else:
                error = messages.plain_error(
                    KIND_BAD_REQUEST, "ValueError", f"unknown request op {op!r}"
                )
                self._reply(messages.error_reply(message["id"], error))

    def _describe(self, message: dict[str, Any]) -> bool:
        request_id = message["id"]
        if self._start_error is not None:
            self._reply(messages.error_reply(request_id, self._start_error))
            return False
        if message.get("protocol") != PROTOCOL_VERSION:
            error = messages.plain_error(
                KIND_BAD_REQUEST,
                "RuntimeError",
                f"protocol mismatch: the client speaks {message.get('protocol')!r}, "
                f"this pod runtime speaks {PROTOCOL_VERSION}",
            )
            self._reply(messages.error_reply(request_id, error))
            return False
        cloudpickle = cloudpickle_available()
        self._options = codec.CodecOptions(
            pickle=message.get("pickle") is True,
            cloudpickle=cloudpickle and message.get("cloudpickle") is True,
        )
        description = {
            "protocol": PROTOCOL_VERSION,
            "python": platform.python_version(),
            "pid": os.getpid(),
            "cloudpickle": cloudpickle,
            "functions": [describe_function(n, f) for n, f in self._functions.items()],
        }
        self._reply(messages.done_reply(request_id, description, root="description"))
        return True

    def _invoke(self, message: dict[str, Any]) -> None:
        request_id = message["id"]
        name = message.get("fn")
        function = self._functions.get(name) if type(name) is str else None
        if function is None:
            error = messages.plain_error(
                KIND_NO_SUCH_FUNCTION, "AttributeError", f"the pod serves no function {name!r}"
            )
            self._reply(messages.error_reply(request_id, error))
            return
        args = message.get(FIELD_PLAIN_ARGS)
        kwargs = None
        try:
            if type(args) is not list:  # not the tiny call's plain arguments: decode
                if args is not None:
                    raise codec.DecodeError("plain arguments must be a list")
                args = message.get(FIELD_ARGS)
                kwargs = message.get(FIELD_KWARGS)
                if args is not None or kwargs is not None:
                    decoding = codec.Decoding(self._options, self._attachments)
                    self._attachments = []
                    args = decoding.value(args) if args is not None else ()
                    if kwargs is not None:
                        kwargs = decoding.value(kwargs)
                else:
                    args = ()
                if type(args) not in _ARGS_TYPES or (
                    kwargs is not None and type(kwargs) is not dict
                ):
                    raise codec.DecodeError("args must be a list and kwargs a dict")
        except RecursionError:
            self._refuse_arguments(request_id, name, "they are nested too deeply to rebuild here")
            return
        except codec.DecodeError as exc:
            self._refuse_arguments(request_id, name, str(exc))
            return
        except MemoryError:
            self._refuse_arguments(request_id, name, "there is not enough memory here")
            return
        except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
            error = messages.plain_error(KIND_BAD_REQUEST, "ValueError", f"malformed value: {exc}")
            self._reply(messages.error_reply(request_id, error))
            return
        self._running = True
        try:
            if self._cancel_pending:  # the cancel came before the function could start
                self._cancel_pending = False
                raise KeyboardInterrupt(_CANCELLED)
            result = function(*args, **kwargs) if kwargs else function(*args)
        except SystemExit:
            self._flush_output()
            raise  # pod code asked the pod to end; the client sees the exit
        except BaseException as exc:
            _drop_first_frame(exc)
            self._running = False
            self._reply(messages.error_reply(request_id, messages.exception_error(exc)))
            return
        finally:
            self._running = False
        try:
            reply = messages.done_reply(
                request_id, result, options=self._options, limit=self._max_message_size
            )
        except Exception as exc:  # TypeError/ValueError from the codec, or from bson
            error = messages.plain_error(
                KIND_RAISED,
                _error_type_name(exc),
                f"{name}() returned a value that cannot cross back to the client: {exc}",
            )
            reply = messages.error_reply(request_id, error)
        self._reply(reply)

    def _refuse_arguments(self, request_id: int, name: Any, problem: str) -> None:
        """Answer a request whose arguments arrived whole but cannot be rebuilt here."""
        error = messages.plain_error(
            KIND_RAISED, "TypeError", f"the arguments of {name}() could not be received: {problem}"
        )
        self._reply(messages.error_reply(request_id, error))

    # -- signals from the client ------------------------------------------------------

    def install_signal_handlers(self, max_memory: int) -> None:
        """SIGINT cancels the running call (the client's Ctrl-C); SIGUSR1 makes it
        fail with MemoryError (the client saw the pod over ``max_memory``).

        A SIGINT that comes while no function runs is kept for the next one to start:
        the client sends it only after the whole request, which the pod may not have
        read yet. If it was meant for a call that had already ended, the client says
        so with ``forget_cancel`` before its next request. SIGUSR1 between calls is
        ignored: the memory watch checks again."""

        def cancel(signum: int, frame: object) -> None:
            if self._running:
                raise KeyboardInterrupt(_CANCELLED)
            self._cancel_pending = True

        def give_up_memory(signum: int, frame: object) -> None:
            if self._running:
                raise MemoryError(
                    f"the pod went over its memory limit (max_memory={max_memory} bytes; "
                    f"resident memory {_resident_memory()} bytes)"
                )

        signal.signal(signal.SIGINT, cancel)
        if hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, give_up_memory)

    # -- I/O -----------------------------------------------------------------------------

    def _receive(self) -> dict[str, Any] | None:
        """The next message (None at end-of-file); its attachments go to
        ``self._attachments``, for the decoding of that message only."""
        reader = self._reader
        frame = reader.next_frame()
        while frame is None:
            view = reader.writable()
            if view is None:
                data = os.read(self._read_fd, READ_SIZE)
                if not data:
                    return None
                frame = reader.take(data)
            else:
                count = os.readv(self._read_fd, [view])
                if not count:
                    return None
                reader.wrote(count)
                frame = reader.next_frame()
        message = messages.unpack(frame)
        if FIELD_ATTACHMENTS in message:
            sizes, immutable = messages.attachment_sizes(message, self._max_message_size)
            read_fd = self._read_fd
            self._attachments = read_attachments(
                reader, sizes, lambda view: os.readv(read_fd, [view]), immutable
            )
        return message

    def _reply(self, parts: messages.Parts) -> None:
        self._flush_output()
        if len(parts) == 1:
            data = parts[0]
            written = os.write(self._write_fd, data)
            if written < len(data):
                write_all(lambda views: os.write(self._write_fd, views[0]), [data[written:]])
        else:
            write_fd = self._write_fd
            write_all(lambda views: os.writev(write_fd, views), parts)


_CANCELLED = "the call was cancelled by the client (Ctrl-C)"


def _import_pod(pod_file: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(POD_MODULE_NAME, pod_file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {pod_file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[POD_MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(POD_MODULE_NAME, None)
        raise
    return module


def _trim_traceback(exc: BaseException, pod_file: str) -> None:
    """Start the traceback at pod.py's own frame, hiding importlib's machinery."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != pod_file:
        tb = tb.tb_next
    exc.__traceback__ = tb  # None for a SyntaxError: its message locates the error


def _drop_first_frame(exc: BaseException) -> None:
    """Hide the server's own frame (the one that called the pod function)."""
    if exc.__traceback__ is not None:
        exc.__traceback__ = exc.__traceback__.tb_next


def _report(text: str) -> None:
    try:
        sys.stderr.write(f"pypods pod runtime: {text}\n")
        sys.stderr.flush()
    except Exception:
        pass


def watch_parent(interval: float = PARENT_CHECK_INTERVAL) -> None:
    """Exit the pod as soon as the process that started it is gone."""
    parent = os.getppid()
    if parent <= 1:
        return  # started by init itself: nothing to watch

    def run() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                _end_process_group()
                os._exit(1)

    threading.Thread(target=run, name="pypods-parent-watch", daemon=True).start()


def setup_import_path(pod_dir: str, pods_dir: str) -> None:
    """Make pod-folder modules importable, and nothing of the client's.

    ``python -m`` put the working directory (the client's) first on sys.path; it is
    removed. The pod folder goes first, so ``import module_test`` finds the pod's own
    module; the folder holding the pods folder goes last, so ``import
    pods.<name>.module`` works as in the original PyPods yet can never shadow a package
    installed in the pod's venv.
    """
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    sys.path.insert(0, pod_dir)
    parent = os.path.dirname(os.path.abspath(pods_dir))
    if parent not in sys.path:
        sys.path.append(parent)


def run(
    read_fd: int,
    write_fd: int,
    *,
    pod_dir: str,
    pods_dir: str,
    max_message_size: int,
    max_memory: int = 0,
) -> NoReturn:
    """Run a pod whose protocol is already on private descriptors, then end the process."""
    from .stdio import output_flusher

    watch_parent()
    setup_import_path(pod_dir, pods_dir)
    flush = output_flusher()
    server = PodServer(
        read_fd,
        write_fd,
        pod_file=os.path.join(pod_dir, "pod.py"),
        flush_output=flush,
        max_message_size=max_message_size,
    )
    server.install_signal_handlers(max_memory)
    server.load()
    try:
        status = server.serve()
    except SystemExit as exc:  # pod code called sys.exit()
        status = _exit_status(exc.code)
    except BaseException:  # a signal handler's exception, a bug: still end properly
        import traceback

        traceback.print_exc()
        status = 1
    exit_now(status, flush)


def exit_now(status: int, flush: Callable[[], None]) -> NoReturn:
    """End the pod: run atexit handlers, flush, exit, without waiting for pod threads.

    A normal interpreter exit first waits for every non-daemon thread, before it even
    runs atexit handlers: one forgotten thread in pod code would keep the pod alive
    until the client kills it, and its atexit handlers would never run.
    """
    try:
        run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
        if run_exit_functions is not None:
            run_exit_functions()
        flush()
    finally:
        _end_process_group()
        os._exit(status)


def _end_process_group() -> None:
    """Stop the processes pod code started in the pod's group: nothing outlives a pod."""
    try:
        # The pod is in its group too: ignore the signal here, so that the exit status
        # stays the one asked for. Only the main thread may do that; from another,
        # the pod dies of the SIGTERM instead, which ends it just the same.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ValueError:
        pass
    try:
        os.killpg(0, signal.SIGTERM)
    except OSError:
        pass


def _exit_status(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives, printing a message as Python does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    _report_raw(str(code))
    return 1


def _report_raw(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except Exception:
        pass


def _resident_memory() -> int | str:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return "unknown"


def _error_type_name(exc: Exception) -> str:
    """The builtin a result's encoding failure is reported as."""
    if isinstance(exc, messages.MessageTooLarge):
        return "ValueError"
    return type(exc).__name__ if type(exc) in (ValueError, RecursionError) else "TypeError"
