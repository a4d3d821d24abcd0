"""The next version of the catalog service, in development: shadowed before it takes traffic.

It answers like the current catalog function except in one field: categories are returned as
display names ("Books") rather than the monolith's keys ("books"). The shipped table shadows
the catalog route to it, so the demo shows a real mismatch and its diff (docs/shadow.md).
"""

from __future__ import annotations

import json
from typing import Any

from new_services.catalog.handler import handler as current


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response: dict[str, Any] = current(event, context)
    if "json" not in response.get("headers", {}).get("content-type", ""):
        return response
    payload = json.loads(response["body"])
    for product in payload.get("items", [payload]):
        if isinstance(product, dict) and isinstance(product.get("category"), str):
            product["category"] = product["category"].title()
    return {**response, "body": json.dumps(payload, ensure_ascii=False, separators=(",", ":"))}
