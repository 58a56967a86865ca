"""Models added to the study: each module here registers its networks on import.

A new model is one file in this folder, e.g. ``resnet.py``::

    from torch import nn
    from cifarlab.models import register_model

    @register_model("resnet", "ResNet")
    class ResNet(nn.Module):
        def __init__(self, width: int = 64, num_classes: int = 10) -> None: ...

and a ``models: {resnet: {arch: {width: 64}, optimizer: adamw, ...}}`` entry in the config.
Keyword arguments (except ``num_classes``) are the config's ``arch`` keys.
"""
