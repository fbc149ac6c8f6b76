"""`python -m services.wallet`: run the wallet service until SIGTERM."""

from services.runtime.server import main
from services.wallet.bootstrap import MIGRATIONS, build
from services.wallet.settings import WalletSettings

if __name__ == "__main__":
    main("wallet", WalletSettings, MIGRATIONS, build)
