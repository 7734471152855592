"""The package's concepts, each a subpackage or a set of modules, in the order imports may run: a concept imports only
those before it.

docs/architecture.md draws this; tests/test_architecture.py holds the code to it. A module not listed is refused
by the test, so a new module is placed here (and in the doc) when it is written.
"""

CONCEPTS = {
    "maths": ("_version", "_validate", "_moved", "maths"),
    "nn": ("nn",),
    "likelihoods": ("likelihoods",),
    "store": ("store",),
    "vae": ("vae",),
    "oracle": ("oracle",),
    "backends": ("backends",),
    "front": ("objectives",),
    "training": ("training",),
    "evaluation": ("evaluation",),
    "checks": ("checks", "verify", "head", "testing"),
    "pictures": ("pictures",),
    "explain": ("explain",),
    "sweep": ("sweeps",),
    "cli": ("cli",),
    "package": ("",),  # npvae/__init__.py: the public names
}


def concept(module: str) -> str:
    """npvae.backends.numba_cpu -> "backends"; KeyError for a module in no concept."""
    first = module.split(".")[1] if "." in module else ""
    for name, members in CONCEPTS.items():
        if first in members:
            return name
    raise KeyError(f"{module} is in no concept of tests/architecture_groups.py")
