"""One router per resource: faces, verification, galleries, identities, operations."""
