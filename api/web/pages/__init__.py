"""What each page shows, one module per page (the dashboard's model cards in their own):
gathered from the library (and ``api.web.queries``) into plain dataclasses the templates
render. No decisions are made here; the library makes them."""
