"""``python -m new_services.reviews --port 8082``: run the reviews service alone."""

from __future__ import annotations

import argparse

import uvicorn

from new_services.reviews.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m new_services.reviews", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
