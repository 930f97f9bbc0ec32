"""The plans service's part of the GraphQL schema: types, queries and mutations."""
