"""`carecoord bench`: every hot path measured beside the raw limit of the parts under it."""
