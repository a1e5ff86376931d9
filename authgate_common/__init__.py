"""What both services must do identically: read a bearer token, open a request's span.

The services never import each other; both import this. Only code whose behaviour must
not drift between them belongs here.
"""
