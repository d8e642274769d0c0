"""Class resolution on a small named model: indices, names, synonyms, suggestions."""

from __future__ import annotations

import pytest
from protolens_server.errors import InvalidArgument, UnknownClass
from protolens_server.models import resolve_class
from protolens_server.models.sidecar import parse_class_names


class Named:
    def __init__(self, data) -> None:
        parsed = parse_class_names(data, "test")
        self.class_names, self.class_aliases = parsed.names, parsed.aliases


MODEL = Named(
    {
        "0": ["n1", "tabby, tabby cat"],
        "1": "Golden Retriever",
        "2": ["n3", "crane"],
        "3": ["n4", "crane"],
        "4": "sports car",
    }
)


def test_indices_and_names() -> None:
    assert resolve_class(MODEL, 1) == 1
    assert resolve_class(MODEL, " 4 ") == 4
    assert resolve_class(MODEL, "GOLDEN retriever") == 1
    assert resolve_class(MODEL, "sports_car") == 4
    assert resolve_class(MODEL, "tabby cat") == 0  # a part of "tabby, tabby cat"
    assert resolve_class(MODEL, "n3") == 2  # a TorchServe id


def test_out_of_range_index() -> None:
    with pytest.raises(UnknownClass, match=r"out of range: the model has 5 classes \(0\.\.4\)"):
        resolve_class(MODEL, 5)


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownClass, match=r"did you mean 'Golden Retriever' \(1\)") as info:
        resolve_class(MODEL, "golden retreiver")
    assert info.value.field == "target"


def test_ambiguous_name_lists_the_classes() -> None:
    with pytest.raises(UnknownClass, match=r"ambiguous.*2 \(crane\), 3 \(crane\)"):
        resolve_class(MODEL, "crane")


@pytest.mark.parametrize("bad", [{"0": "a", "2": "b"}, {"x": "a"}, [""], 7, [["a", 1]]])
def test_bad_class_name_files(bad) -> None:
    with pytest.raises(InvalidArgument):
        parse_class_names(bad, "index_to_name.json")
