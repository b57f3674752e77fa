"""The networks of the practical, one module each (stages/lib/models/<name>.py), so that an edit
to one reruns only the stages of that network. A model module defines

    build(num_classes)  a plain torch.nn.Module with `embed(x)` (the representation the t-SNE
                        pictures show) and `head` (the last layer): forward(x) = head(embed(x))
    EMBEDDING           what embed(x) returns, in words (the t-SNE pictures' titles)

and nothing else the pipeline needs: params.yaml's `models` names which ones train, on what.
For a CPU, inference.prepare swaps in faster versions of some layers
(stages/lib/core/cpu_layers.py): the same layers and parameters, other kernels."""
import importlib
import re
from pathlib import Path

from ..core.common import StageError

FOLDER = Path(__file__).parent
NAME = re.compile(r"[a-z][a-z0-9_]*")


def source(name):
    """stages/lib/models/<name>.py, relative to the project root (a stage's code dependency)."""
    return f"stages/lib/models/{name}.py"


def module(name):
    """The module of model `name`; a name with no module (a typo in params.yaml, a model file of
    another project) is one clear line, not an import of anything else."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or name == "__init__" \
            or not (FOLDER / f"{name}.py").is_file():
        known = sorted(p.stem for p in FOLDER.glob("*.py") if p.stem != "__init__")
        raise StageError(f"no model named {name!r}: the models are the modules of "
                         f"stages/lib/models/ ({', '.join(known)})")
    return importlib.import_module(f"{__name__}.{name}")


def build(name, num_classes):
    return module(name).build(num_classes)


def count_parameters(model):
    """(trainable parameters, trainable parameters that are not biases)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = sum(p.numel() for _, p in params)
    no_bias = sum(p.numel() for n, p in params if not n.endswith("bias"))
    return total, no_bias


def largest_layer(model):
    """(description, parameter count) of the layer with the most trainable parameters."""
    sizes = [(sum(p.numel() for p in m.parameters(recurse=False) if p.requires_grad), name, m)
             for name, m in model.named_modules()]
    count, name, module = max(sizes, key=lambda s: s[0])
    return f"{name}: {module}", count
