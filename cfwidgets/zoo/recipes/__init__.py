"""Recipe modules (one per family of models); importing one registers its recipes.

This package shares its name with :func:`cfwidgets.zoo.recipes` (the function listing the
registered recipes): once a submodule is imported, Python binds ``cfwidgets.zoo.recipes``
to this package, so the package itself is made callable and returns the same listing.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self):
        from ..core import recipes

        return recipes()


sys.modules[__name__].__class__ = _CallablePackage
