"""`python -m services.risk`: serve until SIGTERM; with `migrate`: apply migrations, exit."""

from services.risk.bootstrap import MIGRATIONS, build
from services.risk.settings import RiskSettings
from services.runtime.entry import main

if __name__ == "__main__":
    main("risk", RiskSettings, MIGRATIONS, build)
