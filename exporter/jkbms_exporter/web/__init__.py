"""HTTP front: the server, TLS and basic auth (web configuration) and the landing page."""
