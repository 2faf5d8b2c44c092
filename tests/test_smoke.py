"""The short tour of the README, end to end: create a list, upload codes, claim one."""

from __future__ import annotations

from support import Client, assert_balanced, create_list, get_list, upload


async def test_a_list_hands_out_an_uploaded_code(client: Client) -> None:
    created = await create_list(client)
    status, reply = await upload(client, created["id"], "code\nPM500FF\nPM500FG\n")
    assert status == 201
    assert reply["accepted"] == 2

    response = await client.post(f"/v1/lists/{created['id']}/claims", json={"user_id": "u-42"})
    assert response.status == 201
    claim = (await response.json())["claim"]
    assert claim["code"] == "PM500FF"

    listing = await get_list(client, created["id"])
    assert listing["codes"] == {"uploaded": 2, "available": 1, "distributed": 1, "withdrawn": 0}
    assert_balanced(listing)
