"""`python -m services.console`: run the operators' console until SIGTERM.

`python -m services.console hash-password NAME` reads a password from standard
input and prints the ``NAME:HASH`` entry for ``CONSOLE_OPERATORS``.
"""

import sys

from services.console.bootstrap import MIGRATIONS, build
from services.console.settings import ConsoleSettings
from services.runtime.server import main

if __name__ == "__main__":
    if sys.argv[1:2] == ["hash-password"]:
        from services.console.domain.operators import hash_entry

        raise SystemExit(hash_entry(sys.argv[2:], sys.stdin, sys.stdout))
    main("console", ConsoleSettings, MIGRATIONS, build)
