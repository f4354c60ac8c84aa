"""The site's WebSocket framework: one base consumer (``consumer.py``) and its close codes
(``codes.py``, mirrored for pages by ``static/js/close-codes.js``)."""
