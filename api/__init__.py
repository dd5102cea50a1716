"""The matdx web service (FastAPI): tokens, records, campaigns, artifacts, OPTIMADE.

Build the application with :func:`matdx.api.app.create_app`; ``matdx serve`` runs it under
uvicorn. Every route reads the store through the store's one access filter
(:mod:`matdx.store.access`) with the identity the request's token proves.
"""
