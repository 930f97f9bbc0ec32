"""`carecoord demo`: a fictional primary-care team seeded through the public GraphQL API."""

from services.demo.client import DemoError
from services.demo.model import Demo, Member
from services.demo.seed import seed

__all__ = ["Demo", "DemoError", "Member", "seed"]
