"""`python -m services.web`: run the people's web pages until SIGTERM."""

from services.runtime.server import main
from services.web.bootstrap import MIGRATIONS, build
from services.web.settings import WebSettings

if __name__ == "__main__":
    main("web", WebSettings, MIGRATIONS, build)
