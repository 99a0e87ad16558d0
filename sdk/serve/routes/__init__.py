"""One router per resource: faces, verification, galleries, identities, operations.

Endpoints that every photo passes through (detect, embed, verify, identify, search) return
a ``JSONResponse`` of plain JSON types themselves: FastAPI would otherwise walk each value
of the answer with its ``jsonable_encoder`` (about 100 calls for one identify answer; 0.2 ms
of the service's cost per request, measured in-process without inference).
"""
