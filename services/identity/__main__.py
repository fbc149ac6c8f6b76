"""`python -m services.identity`: run the identity service until SIGTERM."""

from services.identity.bootstrap import MIGRATIONS, build
from services.identity.settings import IdentitySettings
from services.runtime.server import main

if __name__ == "__main__":
    main("identity", IdentitySettings, MIGRATIONS, build)
