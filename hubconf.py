"""torch.hub entry points: one per registered cnnzoo model, generated from the registry.

    model = torch.hub.load("path/to/cnnzoo", "resnet56", source="local")
    model = torch.hub.load("path/to/cnnzoo", "se_resnet50", source="local", num_classes=10)

Keyword arguments go to ``cnnzoo.create_model(name, **kwargs)`` unchanged: any model option,
``num_classes``, ``in_chans``. ``torch.hub.list(path, source="local")`` lists every model and
``torch.hub.help(path, "resnet56", source="local")`` prints its description.
"""

import cnnzoo as _cnnzoo

dependencies = ["torch", "torchvision"]


def _entrypoint(name: str):
    def entrypoint(**kwargs):
        return _cnnzoo.create_model(name, **kwargs)

    meta = _cnnzoo.get_model_meta(name)
    alias = f" (``{meta.alias_of}`` with {meta.defaults})" if meta.alias_of else ""
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = (f"``cnnzoo.create_model({name!r}, **kwargs)``{alias}: {meta.family} family, "
                          f"input {meta.input_size}, {meta.num_classes} classes by default. {meta.paper}")
    return entrypoint


for _name in _cnnzoo.list_models():
    globals()[_name] = _entrypoint(_name)
