"""`python -m services.notify`: run the notify service until SIGTERM."""

from services.notify.bootstrap import MIGRATIONS, build
from services.notify.settings import NotifySettings
from services.runtime.server import main

if __name__ == "__main__":
    main("notify", NotifySettings, MIGRATIONS, build)
