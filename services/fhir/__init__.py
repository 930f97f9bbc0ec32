"""`carecoord export fhir`: one patient's record as a FHIR R4B Bundle, audited like any read."""
