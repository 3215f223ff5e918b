import pytest
import torch

from conslaw.errors import ConslawError
from conslaw.params import ParamSpace


def test_layout_and_names_follow_row_major_order():
    space = ParamSpace({"W1": (2, 3), "b1": (2,), "W2": (1, 2)})
    assert space.D == 6 + 2 + 2
    assert space.coordinate_names()[:7] == ["W1[0,0]", "W1[0,1]", "W1[0,2]", "W1[1,0]", "W1[1,1]", "W1[1,2]", "b1[0]"]
    assert space.index("W1", 1, 2) == 5
    assert space.index("W2", 0, 1) == 9
    assert space.coordinate_name(9) == "W2[0,1]"


def test_flatten_unflatten_round_trip_matches_torch_layout():
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).double()
    space = ParamSpace.from_module(module)
    theta = torch.nn.utils.parameters_to_vector(module.parameters())
    params = space.unflatten(theta)
    assert torch.equal(params["0.weight"], module[0].weight)
    assert torch.equal(space.flatten(dict(module.named_parameters())), theta)
    assert space.coordinate_name(space.index("2.bias", 1)) == "2.bias[1]"


@pytest.mark.parametrize("theta, message", [
    (torch.tensor([1.0, float("nan")]), "non-finite"),
    (torch.tensor([1.0, 2.0, 3.0]), "expected D = 2"),
])
def test_bad_theta_is_refused_with_the_fix(theta, message):
    space = ParamSpace({"u": (1,), "v": (1,)})
    with pytest.raises(ConslawError, match=message) as info:
        space.check_theta(theta)
    assert "fix:" in str(info.value)


def test_unknown_parameter_name_lists_the_known_ones():
    space = ParamSpace({"u": (2,)})
    with pytest.raises(ConslawError, match=r"\['u'\]"):
        space.slice("w")
