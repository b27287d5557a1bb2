"""The HTTP edge: app factory, routes, request parsing, problem details."""
