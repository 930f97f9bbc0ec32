"""The pure domain of care plans, teams, patients, huddles and consent: decide and evolve."""
