"""`python -m services.risk`: run the risk service until SIGTERM."""

from services.risk.bootstrap import MIGRATIONS, build
from services.risk.settings import RiskSettings
from services.runtime.server import main

if __name__ == "__main__":
    main("risk", RiskSettings, MIGRATIONS, build)
