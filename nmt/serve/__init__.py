"""`nmt serve`: the ASGI app (LibreTranslate's, OpenNMT-py's and a native API), its
batcher, metrics, OpenAPI document and the page at /."""
