"""The web console at ``/ui``: see, search and repair workflows in a browser.

It is a client of the REST API and nothing else (``client``): a worker serves it beside its
API and reaches that API in-process, ``daggerflow ui --url`` serves it against a remote
worker. Pages are rendered on the server with Jinja2 (``render``), updated in place by htmx,
and kept live by Server-Sent Events that re-render a page's parts when they change
(``live``). ``session`` holds the login (the API token in an HttpOnly cookie) and the CSRF
check; ``views`` has one module per part of the console. No file is fetched from anywhere at
run time: htmx is vendored under ``static/vendor`` with its licence and pinned hash.
"""
