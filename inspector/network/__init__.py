"""The daemon's ZeroMQ sockets: every server socket lives in a `sockets.SocketThread` (bind, CURVE, and the
ready/error handshake with its starter); the result publisher, the external-trigger input, the backfill
endpoint (server and client) and the CURVE keys."""
