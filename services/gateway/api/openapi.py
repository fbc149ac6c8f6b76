"""The partner API's OpenAPI document without a running gateway.

python -m services.gateway.api.openapi            print it
python -m services.gateway.api.openapi --check    validate it as OpenAPI 3.1 (make lint)
"""

from __future__ import annotations

import json
import sys
from typing import Any, cast

from services.gateway.api.app import create_app

ISSUER = "http://127.0.0.1:8088"


def document(issuer: str = ISSUER) -> dict[str, Any]:
    # Only the routes matter for the document; nothing is called.
    unused = cast(Any, None)
    app = create_app(
        issuer=issuer, guard=unused, tokens=unused, payments=unused, webhooks=unused, ready=unused
    )
    return app.openapi()


def main(argv: list[str]) -> None:
    spec = document()
    if argv == ["--check"]:
        # A lint tool, not a runtime dependency: the image leaves it out.
        from openapi_spec_validator import validate

        validate(spec)
        print(f"openapi: {len(spec['paths'])} paths, valid OpenAPI {spec['openapi']}")
        return
    print(json.dumps(spec, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1:])
