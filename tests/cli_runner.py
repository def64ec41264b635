"""Run `med-r1` commands as real processes, quickly: a fork server for the table of user errors.

Each command runs in its own process with its own working directory, environment, stdout and stderr files and exit
status, exactly as `med-r1 ARGS` does (`sys.exit(main())`, an uncaught exception printing its traceback and exiting
1). What is shared is only the start-up: the server imports torch, transformers, TRL and med-r1 once (15-30 s on a
small CPU machine) and forks a child per command, so a table of ~80 commands costs seconds each, not half a minute.
Nothing runs in the server itself before a fork, so every child starts as fresh as a new interpreter would, except
for environment variables read at import time (the Hugging Face offline switches): commands that need other values
run in a new interpreter instead (`fresh`).

Protocol: one JSON request per line on stdin ({"argv", "cwd", "env", "stdout", "stderr", "timeout", "preload"}),
one JSON reply per line on stdout ({"rc"}). `preload` names a Python file executed in the child before the command
(fault injection at the library boundary, e.g. a disk that is full).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback


def child(request: dict) -> None:
    """The forked child: become the command, run it, exit with its status (never returns)."""
    code = 1
    try:
        os.chdir(request["cwd"])
        for key, value in request.get("env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # not the server's request stream
        os.close(null)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdout = sys.__stdout__  # the server pointed it at stderr, to keep its reply stream clean
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.argv = ["med-r1", *request["argv"]]
        if request.get("preload"):
            exec(compile(open(request["preload"]).read(), request["preload"], "exec"), {"__name__": "preload"})
        from med_r1.cli import main

        code = main(request["argv"])
    except SystemExit as exc:  # argparse: usage errors and --help
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)


def serve() -> None:
    # What every command imports anyway; importing it here, once, is the whole point of the server.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from trl import GRPOConfig, GRPOTrainer  # noqa: F401

    import med_r1.callbacks  # noqa: F401
    import med_r1.cli  # noqa: F401
    import med_r1.eval.compare  # noqa: F401
    import med_r1.eval.run  # noqa: F401
    import med_r1.matrix  # noqa: F401
    import med_r1.train  # noqa: F401
    import med_r1.trainer  # noqa: F401

    reply = sys.stdout
    sys.stdout = sys.stderr  # nothing but replies on the protocol stream
    print(json.dumps({"ready": True}), file=reply, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(request)
        deadline = time.monotonic() + request.get("timeout", 600)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.05)
        rc = os.waitstatus_to_exitcode(status)
        print(json.dumps({"rc": rc}), file=reply, flush=True)


if __name__ == "__main__":
    serve()
