"""Child process of tests/test_hostile_mutation.py: runs several nydusfs verbs on one input.

Usage: hostile_driver.py CEILING JSON. JSON is a list of argument lists. nydusfs is imported
once, then each verb runs in a forked child (stdout to /dev/null, stderr captured) under the
address-space ceiling set here; prints one JSON line: [[exit status, stderr], ...].
"""

from __future__ import annotations

import json
import os
import resource
import sys


def run_one(argv: list[str]) -> tuple[int, str]:
    from nydusfs.cli import main

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one verb, its exit status is the verb's
        try:
            os.close(r)
            os.dup2(w, 2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
        except BaseException:  # noqa: BLE001 - any escape is what the test looks for
            import traceback

            traceback.print_exc()
            code = 70
        finally:
            sys.stderr.flush()
            sys.stdout.flush()
        os._exit(code)
    os.close(w)
    chunks = []
    while True:
        data = os.read(r, 65536)
        if not data:
            break
        if sum(map(len, chunks)) < 1 << 20:
            chunks.append(data)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code, b"".join(chunks).decode("utf-8", "replace")


def main() -> None:
    ceiling = int(sys.argv[1])
    cases = json.loads(sys.argv[2])
    for verb in ("check", "create", "dump", "merge"):
        __import__(f"nydusfs.cli.{verb}")

    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    print(json.dumps([run_one(argv) for argv in cases]))


if __name__ == "__main__":
    main()
