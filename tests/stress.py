"""`make test-stress`: the test suite with two busy-loop processes beside it, as on a loaded machine.

The busy loops take a core each for the whole run and are killed when it ends, however it ends
(pass, fail, Ctrl-C). Extra arguments go to pytest.
"""

from __future__ import annotations

import subprocess
import sys

BUSY = "while True: pass"


def main(argv: list[str]) -> int:
    """Run pytest with ``argv`` beside two busy loops; returns pytest's exit status."""
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(2)]
    try:
        return subprocess.call([sys.executable, "-m", "pytest", "-q", *argv])
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
