"""What the new services share: event parsing, responses, sessions and storage.

Plain Python and the standard library only: this code runs unchanged on AWS Lambda behind an
HTTP API (payload format 2.0), and never imports the gateway.
"""
