"""The measures catalogue over the API: what a front end offers when a clinician adds
monitoring, a goal target or a reading."""

from __future__ import annotations

import httpx
import pytest

from tests.graphql import GraphQLErrors, gql
from tests.integration.api import token

MEASURES = "query { measures { code name units } }"


async def test_a_signed_in_caller_gets_the_catalogue_with_loinc_codes_and_ucum_units(
    api: httpx.AsyncClient,
) -> None:
    found = (await gql(api, MEASURES, token=token("nurse-1", "Nia Nurse")))["measures"]
    by_code = {m["code"]: m for m in found}
    assert len(found) == 8
    assert by_code["2339-0"]["units"] == ["mg/dL", "mmol/L"]
    assert by_code["44261-6"]["name"].startswith("Patient Health Questionnaire 9")


async def test_the_catalogue_is_refused_without_a_token(api: httpx.AsyncClient) -> None:
    with pytest.raises(GraphQLErrors) as refused:
        await gql(api, MEASURES)
    assert refused.value.codes == ["UNAUTHENTICATED"]
