"""The minimal launcher: ``python -I -S bench/launch.py RESULT COMMAND...``.

Runs COMMAND as its only child (``posix_spawn``: no copy of this process's pages) and writes the
child's own ``getrusage`` figures (peak RSS, user and system CPU) from ``wait4`` to RESULT as JSON.
Linux keeps ``ru_maxrss`` across exec: a process started by a large parent (``python -m bench``)
reports at least the parent's peak. This launcher inherits that too (its own figure, written beside
the child's, shows it), but its child only inherits the launcher's own small memory: from a parent
holding 500 MiB, a child running ``pass`` reports 9.5 MiB through this launcher.
"""

import json
import os
import resource
import sys


def main() -> int:
    result, command = sys.argv[1], sys.argv[2:]
    pid = os.posix_spawn(command[0], command, os.environ)
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w") as out:
        json.dump(
            {
                "exit": code,
                "child_maxrss_kib": usage.ru_maxrss,
                "child_cpu": usage.ru_utime + usage.ru_stime,
                "launcher_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            },
            out,
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
