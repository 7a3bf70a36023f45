"""The HTTP front: the server (``server``: accepting, the reaper, routing), the connection
(``connection``: I/O, parsing, limits, waiting, responses; ``request`` and ``response`` for
the request and the one head builder), and the handlers a request is routed to: ``forward``
(a job for the workers), ``sse`` and ``websocket`` (the pub/sub relay's clients) and
``static`` (files). Handlers use only the connection's public interface."""
