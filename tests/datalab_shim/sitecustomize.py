"""Pre-import shim of the Data Lab client test (on PYTHONPATH of the client's interpreter only).

Importing ``dl.specClient`` GETs ``https://datalab.noirlab.edu/spec/contexts`` (its default
service).  In the test's network namespace only loopback exists, so this shim sends requests
for that URL prefix to the service under test instead (``IFX_DATALAB_REWRITE`` =
``public-prefix=loopback-prefix``).  The client itself is not edited: it calls
``pycurl_requests.get`` (imported as ``requests``), looked up at call time.
"""

import os

_rule = os.environ.get("IFX_DATALAB_REWRITE", "")
if "=" in _rule:
    _public, _local = _rule.split("=", 1)
    try:
        import pycurl_requests as _transport
    except ImportError:  # the client falls back to requests
        import requests as _transport
    _get = _transport.get

    def get(url, *args, **kwargs):
        if isinstance(url, str) and url.startswith(_public):
            url = _local + url[len(_public):]
        return _get(url, *args, **kwargs)

    _transport.get = get
