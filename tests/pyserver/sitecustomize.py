"""Hands a test's `python SCRIPT.py ARGS` or `python -c CODE ARGS` to the fork server
(tests/pyserver/fork_server.py) when ctest runs one: the script runs in a fork of an interpreter
that has already imported torch, open_clip, timm and transformers, with this process's argv,
working directory, environment and stdin/stdout/stderr; this process exits with its exit code and
forwards SIGTERM/SIGINT/SIGHUP to it. Anything else (interpreter options, a module run with -m, a
torchrun worker, no server) runs here as usual."""
import os
import sys


def _handed_over_args():
    args = list(getattr(sys, "orig_argv", [])[1:])
    if not args or "CLIPPER_PY_SERVER" not in os.environ or "TORCHELASTIC_RUN_ID" in os.environ:
        return None
    if args[0] == "-c" and len(args) >= 2:
        return args
    if args[0].endswith(".py") and os.path.isfile(args[0]):
        return args
    return None


def _run_in_server(args):
    import json
    import signal
    import socket
    import struct

    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(os.environ["CLIPPER_PY_SERVER"])
    except OSError:
        conn.close()
        return None  # no server: run here
    req = json.dumps({"argv": args, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    conn.sendall(struct.pack("!I", len(req)) + req)
    socket.send_fds(conn, [b"f"], [0, 1, 2])
    reader = conn.makefile("rb")

    def read_msg():
        head = reader.read(4)
        if len(head) < 4:
            return None
        (n,) = struct.unpack("!I", head)
        return json.loads(reader.read(n))

    started = read_msg()
    if started is None:
        print("python fork server: the script's process went away before it started",
              file=sys.stderr)
        return 1

    def forward(signum, _frame):
        try:
            os.kill(started["pid"], signum)
        except OSError:
            pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, forward)
    done = read_msg()
    if done is None:
        print(f"python fork server: the script's process {started['pid']} died without an exit "
              "status (killed by a signal?)", file=sys.stderr)
        return 1
    return done["exit"]


def _main():
    args = _handed_over_args()
    if args is None:
        return
    code = _run_in_server(args)
    if code is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _chain():
    """Runs the sitecustomize this one shadows (e.g. a distribution's), as Python would have."""
    import importlib.machinery
    import importlib.util
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_main()
_chain()
