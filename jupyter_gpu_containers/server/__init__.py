"""Inside jupyter_server: the extension app, the kernel manager, the kernel websocket,
sessions and the stock routes, recovery after a restart, the idle-GPU reclaimer, and a
user's server behind a kernel service (gateway_user.py)."""
