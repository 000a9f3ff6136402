"""Entry point of a pod process.

    python -s -m _pypods_runtime --out-fd N --pod-dir DIR --pods-dir DIR --max-message-size N
                                    --max-memory N

Started by the client with the protocol on stdin/stdout and, as ``--out-fd``, the
write end of the pipe that becomes the pod's stdout. Imports nothing but the stdlib
until the protocol is safe on private descriptors.
"""

import sys


def _parse(argv: list) -> dict:
    options = {}
    names = ("--out-fd", "--pod-dir", "--pods-dir", "--max-message-size", "--max-memory")
    it = iter(argv)
    for arg in it:
        if arg not in names:
            raise SystemExit(f"pypods pod runtime: unexpected argument {arg!r}")
        options[arg[2:].replace("-", "_")] = next(it, None)
    missing = [n for n in names if options.get(n[2:].replace("-", "_")) is None]
    if missing:
        raise SystemExit(f"pypods pod runtime: missing {', '.join(missing)}")
    return options


def main() -> int:
    options = _parse(sys.argv[1:])
    from .stdio import take_over_stdio

    read_fd, write_fd = take_over_stdio(int(options["out_fd"]))
    try:
        from .server import run
    except ImportError as exc:
        sys.stderr.write(f"pypods pod runtime: cannot start: {exc}\n")
        return 3
    run(
        read_fd,
        write_fd,
        pod_dir=options["pod_dir"],
        pods_dir=options["pods_dir"],
        max_message_size=int(options["max_message_size"]),
        max_memory=int(options["max_memory"]),
    )


if __name__ == "__main__":
    sys.exit(main())
