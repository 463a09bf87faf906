"""The torch -> flax mapping is strict: every mismatch is one clear error listing the keys."""

import numpy as np
import pytest
import torch

from simpool_jax import convert
from simpool_jax.convert.torch_env import import_timm
from simpool_jax.model import build_model

timm = import_timm()


def _pair():
    ref = timm.create_model("resnet18", pretrained=False, num_classes=5)
    model = build_model(dict(backbone="resnet18", pooling="gap", head="linear", num_classes=5))
    return ref.state_dict(), model


def test_complete_state_dict_converts_with_torch_layouts():
    state_dict, model = _pair()
    variables = convert.variables_from_torch(model, state_dict)
    conv = state_dict["layer2.0.conv2.weight"].numpy()
    np.testing.assert_array_equal(variables["params"]["backbone"]["layer2_0"]["conv2"]["kernel"],
                                  conv.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"], state_dict["fc.weight"].numpy().T)
    np.testing.assert_array_equal(variables["batch_stats"]["backbone"]["bn1"]["var"],
                                  state_dict["bn1.running_var"].numpy())


def test_missing_unused_and_misshaped_keys_are_listed():
    state_dict, model = _pair()
    state_dict = dict(state_dict)
    del state_dict["layer3.1.bn2.running_mean"]
    state_dict["layer9.extra.weight"] = torch.zeros(3)
    state_dict["fc.weight"] = torch.zeros(6, 512)
    with pytest.raises(convert.CheckpointMismatchError) as err:
        convert.variables_from_torch(model, state_dict)
    message = str(err.value)
    assert "missing in checkpoint (1): layer3.1.bn2.running_mean" in message
    assert "unused checkpoint keys (1): layer9.extra.weight" in message
    assert "fc.weight: checkpoint (512, 6) -> model (512, 5)" in message


def test_ignore_pattern_allows_deliberate_leftovers():
    state_dict, model = _pair()
    state_dict = dict(state_dict, **{"layer1.0.bn1.aux_bn.0.weight": torch.zeros(64)})
    with pytest.raises(convert.CheckpointMismatchError, match="aux_bn"):
        convert.variables_from_torch(model, state_dict)
    convert.variables_from_torch(model, state_dict, ignore=r"\.aux_bn\.")
