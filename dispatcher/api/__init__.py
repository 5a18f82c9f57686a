"""The HTTP API: Cloudflare Workflows-compatible routes plus tenantflow's operator API.

    app = create_app(platform)                 # a Starlette (ASGI) app over an open Platform
    uvicorn.run(app, host="127.0.0.1", port=8787)

See ``_cloudflare.py`` (``/client/v4/accounts/{account_id}/workflows/...``), ``_operator.py``
(``/tenantflow/v1/...``, ``/healthz``, ``/metrics``), ``_errors.py`` (the v4 error envelope and its
stable codes) and ``_openapi.py`` (the document served at ``/openapi.json``).
"""

from ._app import create_app, create_serving_app
from ._errors import ApiError, ErrorCode
from ._http import ApiConfig
from ._openapi import document as openapi_document

__all__ = ["ApiConfig", "ApiError", "ErrorCode", "create_app", "create_serving_app", "openapi_document"]
