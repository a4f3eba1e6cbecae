"""A Python fork server for the test suite: the oracle scripts' imports paid once, not per test.

Every interop test runs a Python script against the real open_clip / timm / transformers, and a
fresh interpreter spends ~6 s of CPU importing them before the script does anything (2 cores, a
suite of hundreds of such runs). This server imports them once; each script then runs in a fork of
it: a fresh process with the modules already loaded, the caller's argv, working directory,
environment and stdin/stdout/stderr, its exit code returned to the caller. The script's code and
the libraries' code are the same as in a fresh interpreter; no state passes between two runs (each
is a fork of the same pristine server, which computes nothing itself).

The caller side is tests/pyserver/sitecustomize.py (PYTHONPATH and CLIPPER_PY_SERVER set by ctest
on the tests); without a server, or for anything it does not hand over, Python runs as usual.

usage: fork_server.py start SOCKET [LOG]   start a server (replacing a running one) and wait
                                           until it serves
       fork_server.py stop SOCKET          stop it (scripts already running finish)
       fork_server.py serve SOCKET         the server itself (start runs it in the background)
"""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

# What the oracle scripts import (tests/**/*.py); anything else is imported by the script itself.
PRELOAD = ("torch", "numpy", "safetensors.torch", "safetensors.numpy", "PIL.Image", "open_clip",
           "timm", "transformers", "tokenizers", "sentencepiece", "webdataset")
IDLE_EXIT_S = 1800  # a server whose ctest run was killed goes away by itself
MAX_HEADER = 16 << 20


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("caller went away")
        data += chunk
    return data


def send_msg(conn, obj):
    data = json.dumps(obj).encode()
    conn.sendall(struct.pack("!I", len(data)) + data)


def recv_msg(conn):
    (n,) = struct.unpack("!I", recv_exact(conn, 4))
    if n > MAX_HEADER:
        raise ConnectionError(f"header of {n} bytes")
    return json.loads(recv_exact(conn, n))


def exit_code_of(e):
    """The exit status a fresh interpreter gives for SystemExit(e.code)."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xFF
    print(e.code, file=sys.stderr)
    return 1


def std_stream(fd, like, unbuffered):
    """sys.stdin/stdout/stderr on fd as a fresh interpreter makes them (PYTHONUNBUFFERED too)."""
    import io
    if fd == 0:
        return io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)),
                                encoding=like.encoding, errors=like.errors)
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(raw if unbuffered else io.BufferedWriter(raw), encoding=like.encoding,
                            errors=like.errors, write_through=unbuffered,
                            line_buffering=not unbuffered and (fd == 2 or os.isatty(fd)))


def print_script_traceback(e):
    """The traceback a fresh interpreter prints: the script's frames, not this file's or runpy's."""
    import traceback
    tb = e.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename in (__file__, runpy_file())):
        tb = tb.tb_next
    traceback.print_exception(type(e), e, tb)


def runpy_file():
    import runpy
    return runpy.__file__


def run_request(req):
    """In the forked child: become the caller's interpreter and run its script or -c code."""
    import runpy
    import threading
    import types

    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    unbuffered = bool(req["env"].get("PYTHONUNBUFFERED"))
    sys.stdin = std_stream(0, sys.stdin, unbuffered)
    sys.stdout = std_stream(1, sys.stdout, unbuffered)
    sys.stderr = std_stream(2, sys.stderr, unbuffered)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    args = req["argv"]  # as after the interpreter's path: SCRIPT ARGS... or -c CODE ARGS...
    try:
        if args[0] == "-c":
            sys.argv = ["-c"] + args[2:]
            sys.path[0] = ""
            main = types.ModuleType("__main__")
            main.__dict__["__builtins__"] = __builtins__
            sys.modules["__main__"] = main
            exec(compile(args[1], "<string>", "exec"), main.__dict__)
        else:
            script = os.path.abspath(args[0])
            sys.argv = list(args)
            sys.path[0] = os.path.dirname(script)
            runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as e:
        code = exit_code_of(e)
    except KeyboardInterrupt as e:
        print_script_traceback(e)
        code = 130
    except BaseException as e:
        print_script_traceback(e)
        code = 1
    threading._shutdown()  # as the interpreter does at exit: wait for non-daemon threads
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            code = code or 120
    return code


def serve_one(conn):
    """In the forked child: read the request, run it, report its pid then its exit code."""
    req = recv_msg(conn)
    msg, fds, _, _ = socket.recv_fds(conn, 16, 3)
    if len(fds) != 3:
        raise ConnectionError("expected stdin, stdout and stderr")
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    send_msg(conn, {"pid": os.getpid()})
    code = run_request(req)
    try:
        send_msg(conn, {"exit": code})
    except OSError:
        pass
    return code


def serve(path):
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError as e:
            print(f"[pyserver] not preloaded: {name}: {e}", flush=True)
    # A fork copies one thread: a lock another Python thread held would stay held. (numpy's
    # OpenBLAS starts an idle native thread at import; its own fork handler stops and restarts it.)
    import threading
    if threading.active_count() != 1:
        print(f"[pyserver] Python threads after the imports: {threading.enumerate()}: not serving",
              flush=True)
        return 1
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the children are reaped by the kernel
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    listener.settimeout(IDLE_EXIT_S)
    print(f"[pyserver] serving on {path} (pid {os.getpid()})", flush=True)
    served = 0
    while True:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            print("[pyserver] idle: exiting", flush=True)
            break
        conn.settimeout(10)
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except OSError:
            conn.close()
            continue
        conn.settimeout(None)
        if first == b"P":  # ping
            conn.sendall(b"ok")
            conn.close()
            continue
        if first == b"Q":  # stop
            conn.sendall(b"bye")
            conn.close()
            break
        served += 1
        pid = os.fork()
        if pid == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = 1
            try:
                code = serve_one(conn)
            except BaseException as e:  # the caller gets EOF and reports it
                print(f"[pyserver] request failed: {e!r}", file=sys.__stderr__, flush=True)
            os._exit(code)
        conn.close()
    print(f"[pyserver] served {served} scripts", flush=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return 0


def knock(path, what, timeout=5.0):
    """Sends a one-byte command; the reply, or None when nothing serves at path."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(what)
        return s.recv(16)
    except OSError:
        return None
    finally:
        s.close()


def start(path, log):
    if knock(path, b"Q") is not None:
        time.sleep(0.2)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", path],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if knock(path, b"P") == b"ok":
            print(f"python fork server up on {path}")
            return 0
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    print(f"python fork server did not start (see {log}); tests run Python as usual")
    return 0  # not a failure: every test still runs, in a fresh interpreter


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("start", "stop", "serve"):
        print(__doc__, file=sys.stderr)
        return 2
    path = sys.argv[2]
    if sys.argv[1] == "serve":
        return serve(path)
    if sys.argv[1] == "start":
        return start(path, sys.argv[3] if len(sys.argv) > 3 else path + ".log")
    print("python fork server", "stopped" if knock(path, b"Q") is not None else "was not running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
