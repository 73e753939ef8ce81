"""Local control API: HTTP + JSON over a Unix socket, with a server-sent event stream."""
