"""Function-style services (AWS Lambda handlers) that replace parts of the monolith."""
