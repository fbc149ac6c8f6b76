"""`python -m services.identity`: serve until SIGTERM; with `migrate`: apply migrations, exit."""

from services.identity.bootstrap import MIGRATIONS, build
from services.identity.settings import IdentitySettings
from services.runtime.entry import main

if __name__ == "__main__":
    main("identity", IdentitySettings, MIGRATIONS, build)
