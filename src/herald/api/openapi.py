"""The OpenAPI document Herald serves, and its docs page, which works offline.

Every route that needs a key declares the HTTP bearer scheme (auth.py), so `/docs` has an
Authorize button and generated clients send the key. The webhook Herald POSTs to receivers is
declared under ``webhooks`` (OpenAPI 3.1). `/docs` is Swagger UI from files shipped in the
package (swagger-ui-dist 5.35.0, Apache-2.0, with its licence and notice): no CDN, so it works
on a machine without internet.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from herald.api.schemas import WebhookPayload

SWAGGER_UI = Path(__file__).parent / "static" / "swagger-ui"
_ASSETS = "/docs/assets"


def install(app: FastAPI) -> None:
    """Declare the webhook, and serve /docs from the packaged assets."""
    app.webhooks.post("notification", summary="A notification Herald delivers to a webhook")(
        _webhook
    )
    app.mount(_ASSETS, StaticFiles(directory=SWAGGER_UI), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=request.scope.get("root_path", "") + str(app.openapi_url),
            title=f"{app.title} API",
            swagger_js_url=f"{_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{_ASSETS}/favicon-32x32.png",
        )


async def _webhook(payload: WebhookPayload) -> None:
    """The JSON body Herald POSTs to a webhook URL, signed in `Herald-Signature`
    (`t=<unix>,v1=<hex>`: HMAC-SHA256 of `"<t>." + body` under the receiver's secret). Answer
    2xx; 408, 425, 429 and 5xx are retried with backoff (honouring `Retry-After`), any other
    answer is final, and redirects are not followed."""
