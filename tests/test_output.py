"""What pods print reaches the client's sys.stdout/sys.stderr and never the protocol."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pypods import RemoteError

from .conftest import wait_until


def test_print_reaches_sys_stdout_and_stderr_before_the_call_returns(toolbox, capsys):
    assert toolbox.shout("hello") == 5
    captured = capsys.readouterr()  # read right after the call: nothing may be late
    assert captured.out == "stdout: hello\n"
    assert captured.err == "stderr: hello\n"


def test_fd_level_writes_do_not_corrupt_the_protocol(toolbox, capsys):
    assert toolbox.write_fd1("raw bytes on fd 1\n") is True
    assert capsys.readouterr().out == "raw bytes on fd 1\n"
    assert toolbox.add(1, 2) == 3


def test_c_printf_without_newline_arrives_with_the_call(toolbox, capsys):
    assert toolbox.c_printf("from C, no newline") is True
    assert capsys.readouterr().out == "from C, no newline"
    assert toolbox.add(1, 2) == 3


def test_input_in_pod_code_sees_eof_not_the_protocol(toolbox):
    with pytest.raises(EOFError):
        toolbox.read_input()
    assert toolbox.add(2, 2) == 4


def test_lots_of_output_does_not_deadlock(toolbox, capsys):
    assert toolbox.print_lots(20_000) == 20_000  # 2 MB: far more than a pipe holds
    out = capsys.readouterr().out
    assert out.count("\n") == 20_000 and len(out) == 20_000 * 100


def test_output_between_calls_is_forwarded(toolbox, capsys):
    toolbox.print_later("printed later", 0.2)
    assert wait_until(lambda: "printed later" in capsys.readouterr().out, timeout=5)


def test_output_of_the_pods_subprocesses_is_forwarded(toolbox, capsys):
    assert toolbox.run_child_echo("from a child process") is True
    assert capsys.readouterr().out == "from a child process\n"


def test_unicode_output_is_decoded(toolbox, capsys):
    toolbox.shout("ünïcødé ✓ 🐍")
    assert "ünïcødé ✓ 🐍" in capsys.readouterr().out


def test_output_reaches_a_redirected_sys_stdout(_toolbox_built):
    script = textwrap.dedent(
        f"""
        import io, contextlib
        from pypods import PodLoader
        with PodLoader("toolbox", pods_dir={str(_toolbox_built)!r}) as pod:
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                pod.shout("captured")
            print("redirected:", repr(buffer.getvalue()))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "redirected: 'stdout: captured\\n'" in result.stdout
    assert result.stdout.count("stdout: captured") == 1


def test_remote_errors_do_not_lose_earlier_output(toolbox, capsys):
    toolbox.shout("before")
    with pytest.raises(RemoteError):
        toolbox.raise_value_error()
    assert "stdout: before" in capsys.readouterr().out
