"""The upstream HTTP/1.1 client under ``relays/upstream.py``: ``request`` (URLs and the request
head), ``connection`` (the asyncio protocol parsing one response at a time), ``pool``
(keep-alive connections under one limit)."""
