"""`python -m services.wallet`: serve until SIGTERM; with `migrate`: apply migrations, exit."""

from services.runtime.entry import main
from services.wallet.bootstrap import MIGRATIONS, build
from services.wallet.settings import WalletSettings

if __name__ == "__main__":
    main("wallet", WalletSettings, MIGRATIONS, build)
