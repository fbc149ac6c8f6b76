"""`python -m services.notify`: serve until SIGTERM; with `migrate`: apply migrations, exit."""

from services.notify.bootstrap import MIGRATIONS, build
from services.notify.settings import NotifySettings
from services.runtime.entry import main

if __name__ == "__main__":
    main("notify", NotifySettings, MIGRATIONS, build)
