"""The code the notebooks put on the page is the package's, from the line it starts at."""
import inspect

import pytest

from cnx2lite.layers.grn import GRN, global_response_norm
from cnx2lite.masking import random_mask
from cnx2lite.notebook.source import show_source


def test_whole_function_with_its_file() -> None:
    shown = show_source(random_mask).data
    header, body = shown.split("\n", 1)
    assert header == "# cnx2lite/masking.py"
    assert body == inspect.getsource(random_mask)


def test_a_method_is_dedented_and_a_step_is_cut_at_its_markers() -> None:
    method = show_source(GRN.forward).data.split("\n", 1)[1]
    assert method.startswith("def forward(")
    step = show_source(global_response_norm, start="positions = positions", stop="return").data.splitlines()
    assert step == ["# cnx2lite/layers/grn.py", "positions = positions or AllPositions()",
                    "nx = grn_normalize(grn_aggregate(x, aggregation, positions), normalization, eps)"]


def test_a_marker_the_code_lost_is_named() -> None:
    with pytest.raises(ValueError, match="global_response_norm has no line with 'no such line'"):
        show_source(global_response_norm, start="no such line")
