"""`python -m services.gateway`: run the partner gateway until SIGTERM."""

from services.gateway.bootstrap import MIGRATIONS, build
from services.gateway.settings import GatewaySettings
from services.runtime.server import main

if __name__ == "__main__":
    main("gateway", GatewaySettings, MIGRATIONS, build)
