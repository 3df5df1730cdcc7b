"""The operator console: a page served by the hub, its JSON routes and its live event feed.

- ``sessions.py``  the cookie sessions (sans-IO store: the caller passes ``now``);
- ``events.py``    the live feed's bus: bounded subscriptions, filtered by who watches;
- ``overview.py``  what the console shows, gathered from the hub's existing parts;
- ``static.py``    the page, its assets and its catalogue, with the console's security headers;
- ``routes.py``    mounts the routes on ``HttpApi`` and runs the periodic status task.

The page itself (``static/``) is plain files; the WebSocket ``/v1/events`` is the HTTP/1.1
door's (``daemon/doors/http.py``), fed by ``events.py``.
"""
