"""notify's lists page with the runtime's opaque tokens."""

from __future__ import annotations

import pytest
from mamoru.common.v1 import common_pb2

from services.notify.api import convert
from services.runtime import paging
from services.runtime.errors import InvalidArgument


def test_the_next_page_starts_after_the_last_row_of_this_one() -> None:
    token = convert.next_token([90, 80, 70], 2)

    assert convert.page_of(common_pb2.PageRequest(page_size=2, page_token=token)) == (80, 2)
    assert convert.next_token([90, 80], 2) == ""


@pytest.mark.parametrize("token", ["80", "%%%", paging.encode("eighty"), paging.encode("1", "2")])
def test_a_token_not_made_by_a_notify_list_is_refused_naming_the_field(token: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        convert.page_of(common_pb2.PageRequest(page_token=token))

    assert [field for field, _ in refused.value.violations] == ["page.page_token"]
