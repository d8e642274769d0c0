"""The gallery: ``protolens web``, an HTTP process beside the API (docs/gallery.md).

It renders pages on the server from the public gRPC API, called with each viewer's
own API key (``session.py``), so it sees exactly what that viewer's tenant may see,
scales and fails apart from the API, and never reads Redis. Parts:

- ``app.py``      the Starlette app: routes, security headers, the API client
- ``views.py``    pages and htmx fragments
- ``render.py``   templates, the request's viewer, API errors -> pages, checked form posts
- ``signin.py``   the sign-in form and sign-out
- ``api.py``      what the pages read: a viewer's calls, grids, search, the PNG cache
- ``compare.py``  a check's report JSON -> the side-by-side view of two versions
- ``plot.py``     the per-layer path-similarity plot as inline SVG
- ``session.py``  the sealed session cookie, CSRF tokens
- ``main.py``     ``protolens web``: uvicorn serving the app
"""
