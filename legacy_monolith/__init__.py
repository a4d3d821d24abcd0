"""The stub legacy monolith used by the demo and the tests (see legacy_monolith.app)."""
