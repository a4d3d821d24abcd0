"""``python -m legacy_monolith.export``: the monolith's seed data as JSON.

This is the data export a migration starts from: the new services load it into their own
storage (`new_services/common/seed.json`), so both sides begin with identical data.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from legacy_monolith import data


def export() -> dict[str, Any]:
    return {
        "users": [
            {
                "id": user.id,
                "username": user.username,
                "name": user.name,
                "email": user.email,
                "password_hash": user.password_hash,
            }
            for user in data.seed_users().values()
        ],
        "products": list(data.seed_products().values()),
        "reviews": {str(pid): reviews for pid, reviews in data.seed_reviews().items()},
        "images": {
            str(pid): base64.b64encode(data.product_image(pid)).decode("ascii")
            for pid in data.seed_products()
        },
    }


def main() -> None:
    print(json.dumps(export(), indent=1, sort_keys=False))


if __name__ == "__main__":
    main()
