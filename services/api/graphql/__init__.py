"""The GraphQL schema the API serves: one module per concept, the access gate, the context."""
